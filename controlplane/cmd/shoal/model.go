package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/client"
)

func newModelCmd(o *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Push, list and inspect model versions in the registry"}
	cmd.AddCommand(newModelPushCmd(o), newModelListCmd(o), newModelShowCmd(o), newModelSignatureCmd(o))
	return cmd
}

func newModelPushCmd(o *rootOptions) *cobra.Command {
	var name, version string
	cmd := &cobra.Command{
		Use:   "push --name NAME --version VERSION FILE.onnx",
		Short: "Upload an ONNX model as a new version; the control plane checks and signs it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || version == "" {
				return fmt.Errorf("both --name and --version are needed")
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			body, closeFile, err := openUpload(args[0], "model file", o.stderr)
			if err != nil {
				return err
			}
			defer closeFile()
			mv, err := c.PushModel(cmd.Context(), name, version, body)
			if err != nil {
				return fmt.Errorf("push %s as %s %s: %w", args[0], name, version, err)
			}
			if o.json {
				return printJSON(o.stdout, mv)
			}
			fmt.Fprintf(o.stdout, "pushed %s %s  sha256:%s  %s  signed\n", mv.Name, mv.Version, mv.SHA256, humanBytes(mv.Size))
			fmt.Fprintf(o.stdout, "  inputs:  %s\n  outputs: %s\n", specs(mv.Inputs), specs(mv.Outputs))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "model name")
	cmd.Flags().StringVar(&version, "version", "", "version label, e.g. 1 or 2026-11-26")
	return cmd
}

func newModelListCmd(o *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List models and their versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			models, err := c.Models(cmd.Context())
			if err != nil {
				return err
			}
			if o.json {
				if models == nil {
					models = []client.ModelSummary{}
				}
				return printJSON(o.stdout, models)
			}
			if len(models) == 0 {
				fmt.Fprintln(o.stdout, "no models yet: push one with `shoal model push --name N --version V FILE.onnx`")
				return nil
			}
			rows := [][]string{}
			for _, m := range models {
				rows = append(rows, []string{m.Name, m.Latest, fmt.Sprint(len(m.Versions)), ago(m.UpdatedAt)})
			}
			return table(o.stdout, []string{"MODEL", "LATEST", "VERSIONS", "UPDATED"}, rows)
		},
	}
}

func newModelShowCmd(o *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME [VERSION]",
		Short: "Show a model's versions, or one version in detail",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				versions, err := c.Model(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(o.stdout, versions)
				}
				rows := [][]string{}
				for _, v := range versions {
					rows = append(rows, []string{v.Version, v.SHA256[:12], humanBytes(v.Size), ago(v.CreatedAt)})
				}
				return table(o.stdout, []string{"VERSION", "SHA256", "SIZE", "CREATED"}, rows)
			}
			mv, err := c.ModelVersion(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(o.stdout, mv)
			}
			rows := [][]string{
				{"name", mv.Name}, {"version", mv.Version}, {"sha256", mv.SHA256},
				{"size", fmt.Sprintf("%s (%d bytes)", humanBytes(mv.Size), mv.Size)},
				{"created", mv.CreatedAt.Format("2006-01-02 15:04:05 MST")},
				{"artifact", mv.ArtifactURL}, {"key id", orDash(mv.KeyID)}, {"signature", orDash(mv.Signature)},
			}
			validation := "not gated (pushed by hand)"
			if v := mv.Validation; v != nil {
				validation = v.Status
				if len(v.Reasons) > 0 {
					validation += ": " + strings.Join(v.Reasons, "; ")
				}
			}
			rows = append(rows, []string{"validation", validation})
			for _, in := range mv.Inputs {
				rows = append(rows, []string{"input", specs([]client.TensorSpec{in})})
			}
			for _, out := range mv.Outputs {
				rows = append(rows, []string{"output", specs([]client.TensorSpec{out})})
			}
			if err := table(o.stdout, []string{"FIELD", "VALUE"}, rows); err != nil {
				return err
			}
			if mv.Validation != nil {
				fmt.Fprintln(o.stdout)
				printValidation(o.stdout, mv.Validation)
			}
			return nil
		},
	}
}

func newModelSignatureCmd(o *rootOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "signature NAME VERSION",
		Short: "Print (or save with -o) a version's signature, for cosign verify-blob",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			sig, err := c.Signature(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if out != "" {
				return os.WriteFile(out, []byte(sig+"\n"), 0o644)
			}
			if o.json {
				return printJSON(o.stdout, map[string]string{"name": args[0], "version": args[1], "signature": sig})
			}
			fmt.Fprintln(o.stdout, sig)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the signature to this file")
	return cmd
}
