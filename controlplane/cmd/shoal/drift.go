package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/client"
)

func newDriftCmd(o *rootOptions) *cobra.Command {
	var q client.DriftQuery
	cmd := &cobra.Command{
		Use:   "drift MODEL [--version V] [--cohort C] [--last 24h]",
		Short: "Show a model's data drift by window: samples, overall PSI, the most drifting features",
		Long: `Show how far the data a model sees on the devices is from its training data,
window by window: the samples seen, the overall PSI (the largest of the
features'), the three features with the largest PSI, and "!" where the
window breaches the model's drift policy.

The cohort is "all" (the default), "profile:NAME" for the devices of one
firmware profile, or "label:KEY=VALUE" for those with a label the control
plane groups by (shoal serve --drift-cohort-labels KEY,...).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			r, err := c.Drift(cmd.Context(), args[0], q)
			if err != nil {
				return fmt.Errorf("drift of model %s: %w", args[0], err)
			}
			if o.json {
				return printJSON(o.stdout, r)
			}
			return printDrift(o.stdout, r)
		},
	}
	cmd.Flags().StringVar(&q.Version, "version", "", "only this version (default: every version)")
	cmd.Flags().StringVar(&q.Cohort, "cohort", "", `cohort: "all", "profile:NAME" or "label:KEY=VALUE" (default "all")`)
	cmd.Flags().DurationVar(&q.Last, "last", 0, "windows that ended within this long (default 24h)")
	cmd.AddCommand(newDriftPolicyCmd(o))
	return cmd
}

// printDrift writes a drift report as a table.
func printDrift(w io.Writer, r client.DriftReport) error {
	if p := r.Policy; p != nil {
		fmt.Fprintf(w, "policy: alert when %s >= %g with at least %d samples in %d windows in a row\n", p.Metric, p.Threshold, p.MinSamples, p.Windows)
	} else {
		fmt.Fprintf(w, "no drift policy; set one with `shoal drift policy %s --threshold 0.2`\n", r.Model)
	}
	if len(r.Windows) == 0 {
		fmt.Fprintln(w, "no data statistics in these windows: devices send them for versions pushed with a reference profile")
		return nil
	}
	rows := make([][]string, 0, len(r.Windows))
	for _, d := range r.Windows {
		breach := ""
		if d.Breach {
			breach = "!"
		}
		psi, top := fmt.Sprintf("%.3f", d.PSI), topPSI(d.Features, 3)
		if d.Error != "" {
			psi, top = "-", d.Error
		}
		rows = append(rows, []string{d.Version, d.Cohort, d.Start.UTC().Format("2006-01-02 15:04"), fmt.Sprint(d.Samples), psi, top, breach})
	}
	return table(w, []string{"VERSION", "COHORT", "WINDOW (UTC)", "SAMPLES", "PSI", "TOP FEATURES (PSI)", "BREACH"}, rows)
}

// topPSI names the n features with the largest PSI, with it.
func topPSI(fs []client.FeatureDrift, n int) string {
	var ok []client.FeatureDrift
	for _, f := range fs {
		if f.Error == "" {
			ok = append(ok, f)
		}
	}
	sort.SliceStable(ok, func(i, j int) bool { return ok[i].PSI > ok[j].PSI })
	parts := make([]string, 0, n)
	for _, f := range ok[:min(n, len(ok))] {
		parts = append(parts, fmt.Sprintf("%s %.3f", f.Name, f.PSI))
	}
	return orDash(strings.Join(parts, ", "))
}

func newDriftPolicyCmd(o *rootOptions) *cobra.Command {
	var p client.DriftPolicy
	cmd := &cobra.Command{
		Use:   "policy MODEL [--metric psi|js|ks --threshold X --min-samples N --windows K]",
		Short: "Show a model's drift policy, or set it with --threshold",
		Long: `With no flags, show the model's drift policy. With --threshold, set it: an
alert is raised when K windows in a row each have at least N samples and
an overall metric (the largest of the features') at or above X.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			set := false
			for _, f := range []string{"metric", "threshold", "min-samples", "windows"} {
				set = set || cmd.Flags().Changed(f)
			}
			if set && !cmd.Flags().Changed("threshold") {
				return errors.New("set a policy with --threshold (and --metric, --min-samples, --windows)")
			}
			if set {
				p, err = c.SetDriftPolicy(cmd.Context(), args[0], p)
				if err != nil {
					return fmt.Errorf("set the drift policy of model %s: %w", args[0], err)
				}
			} else if p, err = c.DriftPolicy(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("drift policy of model %s: %w", args[0], err)
			}
			if o.json {
				return printJSON(o.stdout, p)
			}
			fmt.Fprintf(o.stdout, "model %s: alert when %s >= %g with at least %d samples in %d windows in a row (set %s)\n",
				args[0], p.Metric, p.Threshold, p.MinSamples, p.Windows, p.UpdatedAt.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&p.Metric, "metric", "psi", "metric: psi, js or ks")
	cmd.Flags().Float64Var(&p.Threshold, "threshold", 0, "the overall metric at or above which a window breaches")
	cmd.Flags().Uint64Var(&p.MinSamples, "min-samples", 500, "the samples a window needs to count")
	cmd.Flags().IntVar(&p.Windows, "windows", 3, "breaching windows in a row that raise an alert")
	return cmd
}

func newAlertsCmd(o *rootOptions) *cobra.Command {
	var model string
	cmd := &cobra.Command{
		Use:   "alerts [--model NAME]",
		Short: "List drift alerts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			as, err := c.Alerts(cmd.Context(), model)
			if err != nil {
				return fmt.Errorf("list alerts: %w", err)
			}
			if o.json {
				return printJSON(o.stdout, map[string]any{"alerts": as})
			}
			if len(as) == 0 {
				fmt.Fprintln(o.stdout, "no alerts")
				return nil
			}
			rows := make([][]string, 0, len(as))
			for _, a := range as {
				value := "-"
				if n := len(a.Windows); n > 0 {
					last := a.Windows[n-1]
					value = fmt.Sprintf("%.3f", map[string]float64{"psi": last.PSI, "js": last.JS, "ks": last.KS}[a.Policy.Metric])
				}
				var top []string
				for _, f := range a.TopFeatures {
					top = append(top, f.Name)
				}
				rows = append(rows, []string{a.RaisedAt.UTC().Format("2006-01-02 15:04"), a.Model, a.Version, a.Cohort,
					fmt.Sprintf("%s>=%g", a.Policy.Metric, a.Policy.Threshold), value, a.StreakStart.UTC().Format("2006-01-02 15:04"),
					orDash(strings.Join(top, ", "))})
			}
			return table(o.stdout, []string{"RAISED (UTC)", "MODEL", "VERSION", "COHORT", "POLICY", "LAST", "DRIFTING SINCE", "TOP FEATURES"}, rows)
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "only alerts of this model")
	return cmd
}
