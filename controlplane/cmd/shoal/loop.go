package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
)

func newLoopCmd(o *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "loop MODEL",
		Short: "Show a model's retraining runs: drift alert → training job → gates → canary rollout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			runs, err := c.LoopRuns(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("retraining runs of %s: %w", args[0], err)
			}
			if o.json {
				return printJSON(o.stdout, map[string]any{"model": args[0], "runs": runs})
			}
			if len(runs) == 0 {
				fmt.Fprintf(o.stdout, "no retraining runs of %s yet; a drift alert starts one when its policy says so (shoal loop policy %s --retrain)\n", args[0], args[0])
				return nil
			}
			rows := make([][]string, 0, len(runs))
			for _, r := range runs {
				rows = append(rows, []string{fmt.Sprint(r.Seq), r.StartedAt.Local().Format("2006-01-02 15:04:05"), r.State, r.FromVersion,
					orDash(r.Job), datasetOf(r), orDash(r.Version), orDash(strings.TrimSpace(r.Rollout + " " + r.RolloutState)), orDash(strings.Join(r.Reasons, "; "))})
			}
			if err := table(o.stdout, []string{"RUN", "STARTED", "STATE", "FROM", "JOB", "DATASET", "VERSION", "ROLLOUT", "REASONS"}, rows); err != nil {
				return err
			}
			last := runs[0]
			fmt.Fprintf(o.stdout, "\nrun %d:\n", last.Seq)
			for _, ev := range last.Events {
				fmt.Fprintf(o.stdout, "  %s  %-11s %s\n", ev.At.Local().Format("15:04:05"), ev.State, ev.Message)
			}
			return nil
		},
	}
	cmd.AddCommand(newLoopPolicyCmd(o))
	return cmd
}

func datasetOf(r client.LoopRun) string {
	if r.Dataset == "" {
		return "-"
	}
	return fmt.Sprintf("%s v%d", r.Dataset, r.DatasetVersion)
}

func newLoopPolicyCmd(o *rootOptions) *cobra.Command {
	var (
		retrain, noRollout bool
		captures           bool
		dataset            string
		canary             []string
		soak, timeout      time.Duration
		cooldown           time.Duration
		onFailure          string
	)
	cmd := &cobra.Command{
		Use:   "policy MODEL [--retrain [--dataset D] [--canary 1,100%] [--soak 10m] [--cooldown 1h]]",
		Short: "Show or set what a drift alert on a model does: retrain it, gate it, roll the candidate out",
		Long: `Without flags, shows the model's retraining policy. With --retrain, a drift
alert on the model starts a training job with the trainer and spec that
made the alerting version, on its dataset's latest version (or --dataset);
a candidate that passes its validation gates is rolled out in the --canary
stages (cumulative sizes), unless --no-rollout. --cooldown bounds how often.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			set := false
			for _, name := range []string{"retrain", "dataset", "captures", "canary", "soak", "timeout", "cooldown", "on-failure", "no-rollout"} {
				set = set || cmd.Flags().Changed(name)
			}
			var p client.LoopPolicy
			if set {
				p = client.LoopPolicy{Retrain: retrain, Dataset: dataset, Captures: captures}
				if cooldown > 0 {
					p.Cooldown = apiv1.Duration(cooldown)
				}
				if !noRollout {
					stages, err := stagesFromFlags("--canary", canary, soak, timeout, onFailure, 0)
					if err != nil {
						return err
					}
					p.Rollout = &apiv1.RolloutSpec{Stages: stages, OnFailure: onFailure}
				}
				if p, err = c.SetLoopPolicy(cmd.Context(), args[0], p); err != nil {
					return fmt.Errorf("set the retraining policy of %s: %w", args[0], err)
				}
			} else if p, err = c.LoopPolicy(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("retraining policy of %s: %w", args[0], err)
			}
			if o.json {
				return printJSON(o.stdout, p)
			}
			rollout, every := "none: stop at the signed candidate", "-"
			if p.Rollout != nil {
				tmpl, err := json.Marshal(p.Rollout)
				if err != nil {
					return err
				}
				rollout = string(tmpl)
			}
			if p.Cooldown != 0 {
				every = p.Cooldown.String()
			}
			return table(o.stdout, []string{"FIELD", "VALUE"}, [][]string{
				{"model", args[0]}, {"retrain", fmt.Sprint(p.Retrain)}, {"dataset", orDash(p.Dataset)}, {"captures", fmt.Sprint(p.Captures)},
				{"cooldown", every}, {"rollout", rollout}, {"updated", p.UpdatedAt.Local().Format(time.RFC3339)},
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&retrain, "retrain", false, "retrain the model when a drift alert is raised on it")
	f.StringVar(&dataset, "dataset", "", "dataset to retrain on (default: the one the alerting version was trained on), at its latest version")
	f.BoolVar(&captures, "captures", false, "add the model's labelled captured rows to the data set (as a new version) before retraining")
	f.StringSliceVar(&canary, "canary", []string{"1", "100%"}, "rollout stages of a candidate that passes its gates (cumulative sizes)")
	f.DurationVar(&soak, "soak", 10*time.Minute, "soak of each rollout stage")
	f.DurationVar(&timeout, "timeout", 0, "time a device has to become healthy (default 10m)")
	f.DurationVar(&cooldown, "cooldown", 0, "least time between two retraining runs of the model (default 1h)")
	f.StringVar(&onFailure, "on-failure", "rollback", "what a tripped rollout gate does: pause or rollback")
	f.BoolVar(&noRollout, "no-rollout", false, "stop at the signed candidate; roll it out by hand")
	return cmd
}
