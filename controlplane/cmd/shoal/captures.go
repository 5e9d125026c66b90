package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
)

func newCapturesCmd(o *rootOptions) *cobra.Command {
	var toDataset, label string
	cmd := &cobra.Command{
		Use:   "captures MODEL [--to-dataset NAME [--label COLUMN]]",
		Short: "Count a model's captured predictions and labels, or make a dataset of the labelled ones",
		Long: `Without flags, show how many predictions the devices captured for the model
(deploy with --capture-share), how many have a label (sent to the agents'
POST /v1/feedback), and the rows by version.

With --to-dataset NAME, store the labelled rows as the next version of
dataset NAME: one column per input, named by the reference profile of the
newest version with rows (else f0, f1...), and the label.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			if toDataset != "" {
				v, err := c.CapturesToDataset(cmd.Context(), args[0], toDataset, label)
				if err != nil {
					return fmt.Errorf("dataset of the captures of model %s: %w", args[0], err)
				}
				if o.json {
					return printJSON(o.stdout, v)
				}
				fmt.Fprintf(o.stdout, "dataset %s version %d: %d rows, %d features, label %q (%s)\n",
					v.Name, v.Version, v.Rows, len(v.Features), v.Label, v.Task)
				return nil
			}
			n, err := c.Captures(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("captures of model %s: %w", args[0], err)
			}
			if o.json {
				return printJSON(o.stdout, n)
			}
			fmt.Fprintf(o.stdout, "model %s: %d captured rows, %d labelled\n", args[0], n.Rows, n.Labelled)
			if len(n.ByVersion) == 0 {
				return nil
			}
			versions := make([]string, 0, len(n.ByVersion))
			for v := range n.ByVersion {
				versions = append(versions, v)
			}
			sort.Strings(versions)
			rows := make([][]string, 0, len(versions))
			for _, v := range versions {
				rows = append(rows, []string{v, fmt.Sprint(n.ByVersion[v])})
			}
			return table(o.stdout, []string{"VERSION", "ROWS"}, rows)
		},
	}
	cmd.Flags().StringVar(&toDataset, "to-dataset", "", "store the labelled rows as the next version of this dataset")
	cmd.Flags().StringVar(&label, "label", "", `the dataset's label column (default "label"); with --to-dataset`)
	return cmd
}
