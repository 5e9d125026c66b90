package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/client"
)

func newDatasetCmd(o *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "dataset", Short: "Push, list and inspect the CSV datasets models are trained on"}
	cmd.AddCommand(newDatasetPushCmd(o), newDatasetListCmd(o), newDatasetShowCmd(o))
	return cmd
}

func newDatasetPushCmd(o *rootOptions) *cobra.Command {
	var name, label, task string
	cmd := &cobra.Command{
		Use:   "push --name NAME --label COLUMN [--task classification|regression] FILE.csv",
		Short: "Upload a CSV as the next version of a dataset; the control plane checks every row",
		Long: "Upload a CSV, with a header row, as the next version of a dataset. --label names the column to\n" +
			"predict; the other columns are the features. The task is inferred from the label column unless\n" +
			"--task says it. Pushing what the latest version already holds returns that version.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || label == "" {
				return fmt.Errorf("both --name and --label are needed (--label names the column to predict)")
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			body, closeFile, err := openUpload(args[0], "CSV file", o.stderr)
			if err != nil {
				return err
			}
			defer closeFile()
			v, err := c.PushDataset(cmd.Context(), name, label, task, body)
			if err != nil {
				return fmt.Errorf("push %s as dataset %s: %w", args[0], name, err)
			}
			if o.json {
				return printJSON(o.stdout, v)
			}
			fmt.Fprintf(o.stdout, "pushed dataset %s v%d  sha256:%s  %s\n", v.Name, v.Version, v.SHA256, humanBytes(v.Size))
			fmt.Fprintf(o.stdout, "  %d rows, %s, label %q: %s\n", v.Rows, featureCount(v.Features), v.Label, taskSummary(v))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "dataset name")
	cmd.Flags().StringVar(&label, "label", "", "the column to predict")
	cmd.Flags().StringVar(&task, "task", "", "classification or regression (default: inferred from the label column)")
	return cmd
}

func newDatasetListCmd(o *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List datasets and their latest versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			list, err := c.Datasets(cmd.Context())
			if err != nil {
				return err
			}
			if o.json {
				if list == nil {
					list = []client.DatasetSummary{}
				}
				return printJSON(o.stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(o.stdout, "no datasets yet: push one with `shoal dataset push --name N --label COLUMN FILE.csv`")
				return nil
			}
			rows := [][]string{}
			for _, d := range list {
				rows = append(rows, []string{d.Name, "v" + strconv.Itoa(d.Latest), strconv.Itoa(d.Versions), strconv.Itoa(d.Rows),
					strconv.Itoa(d.Features), d.Label, d.Task, humanBytes(d.Size), ago(d.UpdatedAt)})
			}
			return table(o.stdout, []string{"DATASET", "LATEST", "VERSIONS", "ROWS", "FEATURES", "LABEL", "TASK", "SIZE", "UPDATED"}, rows)
		},
	}
}

func newDatasetShowCmd(o *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME [VERSION]",
		Short: "Show a dataset's versions, or one version (a number, or latest) with its columns",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				versions, err := c.Dataset(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(o.stdout, versions)
				}
				rows := [][]string{}
				for _, v := range versions {
					rows = append(rows, []string{"v" + strconv.Itoa(v.Version), shortDigest(v.SHA256), strconv.Itoa(v.Rows),
						strconv.Itoa(len(v.Features)), v.Label, v.Task, orDash(countOrEmpty(len(v.Classes))), ago(v.CreatedAt)})
				}
				return table(o.stdout, []string{"VERSION", "SHA256", "ROWS", "FEATURES", "LABEL", "TASK", "CLASSES", "CREATED"}, rows)
			}
			version, err := parseDatasetVersion(args[1])
			if err != nil {
				return err
			}
			v, err := c.DatasetVersion(cmd.Context(), args[0], version)
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(o.stdout, v)
			}
			err = table(o.stdout, []string{"FIELD", "VALUE"}, [][]string{
				{"name", v.Name}, {"version", "v" + strconv.Itoa(v.Version)}, {"sha256", v.SHA256},
				{"size", fmt.Sprintf("%s (%d bytes)", humanBytes(v.Size), v.Size)},
				{"rows", strconv.Itoa(v.Rows)}, {"features", featureCount(v.Features)},
				{"label", v.Label}, {"task", taskSummary(v)},
				{"created", v.CreatedAt.Format("2006-01-02 15:04:05 MST")}, {"csv", v.CSVURL},
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(o.stdout)
			rows := [][]string{}
			for _, f := range v.Features {
				kind, cats := "numeric", "-"
				if f.Categorical {
					kind, cats = "categorical", fmt.Sprintf("%d: %s", len(f.Categories), firstFew(f.Categories, 60))
				}
				rows = append(rows, []string{f.Name, kind, cats})
			}
			return table(o.stdout, []string{"COLUMN", "TYPE", "CATEGORIES"}, rows)
		},
	}
}

// parseDatasetVersion reads a version argument: 2, v2 or latest (0).
func parseDatasetVersion(s string) (int, error) {
	if s == "latest" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s, "v"))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("version %q is not a version number (1, 2, ...) or latest", s)
	}
	return n, nil
}

func featureCount(fs []client.DatasetFeature) string {
	cat := 0
	for _, f := range fs {
		if f.Categorical {
			cat++
		}
	}
	return fmt.Sprintf("%d features (%d categorical)", len(fs), cat)
}

func taskSummary(v client.DatasetVersion) string {
	if v.Task != "classification" {
		return v.Task
	}
	return fmt.Sprintf("classification, %d classes: %s", len(v.Classes), firstFew(v.Classes, 60))
}

// firstFew lists names, cut at about width characters with "… (N more)".
func firstFew(names []string, width int) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 && b.Len()+len(n) > width {
			fmt.Fprintf(&b, ", … (%d more)", len(names)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}

func shortDigest(s string) string { return s[:min(len(s), 12)] }

func countOrEmpty(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}
