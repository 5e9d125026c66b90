package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
)

func newRolloutCmd(o *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Staged rollouts: canary and waves gated on device health, with pause, promote and rollback",
	}
	cmd.AddCommand(newRolloutCreateCmd(o), newRolloutListCmd(o), newRolloutShowCmd(o))
	for _, a := range []struct{ name, short string }{
		{"pause", "Stop a running rollout from notifying more devices"},
		{"resume", "Let a paused rollout go on (its gates are checked again)"},
		{"promote", "Pass the current stage now, whatever its gates say"},
		{"abort", "End a rollout where it is; notified devices keep the new version"},
		{"rollback", "Return every device the rollout notified to the version it ran before"},
	} {
		cmd.AddCommand(newRolloutActionCmd(o, a.name, a.short))
	}
	return cmd
}

type rolloutFlags struct {
	file, model, version   string
	selector, group, prof  string
	devices                []string
	stages                 []string
	soak, timeout          time.Duration
	onFailure              string
	maxFailures            int
	supersede, wait, quiet bool
}

func newRolloutCreateCmd(o *rootOptions) *cobra.Command {
	var f rolloutFlags
	cmd := &cobra.Command{
		Use:   "create (-f rollout.yaml | --model NAME --version V [flags])",
		Short: "Start a staged rollout, from a YAML/JSON file or from flags",
		Long: `Start a staged rollout of a model version.

From a file (YAML or JSON; docs/API.md lists every field):

  model: summer
  version: "2"
  selector: {labels: {region: eu}}
  on_failure: rollback
  stages:
    - {name: canary, count: 2, soak: 10m, timeout: 15m}
    - {name: wave, percent: 20, soak: 30m, failure: {max_percent: 5}}
    - {name: all, percent: 100}

or from flags: --stages 2,20%,100% makes stages of 2 devices, 20% and all
of them, each with --soak, --timeout, --on-failure and --max-failures.
Sizes are cumulative. --wait follows the rollout until it ends.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.file != "" {
				for _, name := range []string{"model", "version", "selector", "group", "profile", "devices", "stages", "soak", "timeout", "on-failure", "max-failures"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s cannot be combined with -f: the file describes the rollout (only --supersede, --wait and --quiet-devices can)", name)
					}
				}
			}
			spec, err := f.spec(cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			r, err := c.CreateRollout(cmd.Context(), spec)
			if err != nil {
				return fmt.Errorf("create rollout: %w", err)
			}
			if f.wait {
				if !o.json {
					fmt.Fprintf(o.stdout, "rollout %s of %s %s to %d devices started\n", r.ID, r.Model, r.Version, r.Targets)
				}
				if r, err = followRollout(cmd.Context(), c, o, r.ID, f.quiet); err != nil {
					return err
				}
			}
			if o.json {
				return printJSON(o.stdout, r)
			}
			return printRollout(o.stdout, r, 15)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "rollout spec file, YAML or JSON (- for stdin)")
	fl.StringVar(&f.model, "model", "", "model name")
	fl.StringVar(&f.version, "version", "", "model version")
	fl.StringVar(&f.selector, "selector", "", "device labels that must match, k=v,k2=v2")
	fl.StringVar(&f.group, "group", "", "device group that must match")
	fl.StringVar(&f.prof, "profile", "", "firmware profile that must match")
	fl.StringSliceVar(&f.devices, "devices", nil, "explicit device ids, comma-separated")
	fl.StringSliceVar(&f.stages, "stages", []string{"1", "100%"}, "cumulative stage sizes: counts or percentages")
	fl.DurationVar(&f.soak, "soak", 0, "time each stage's success gate must hold before the next")
	fl.DurationVar(&f.timeout, "timeout", 0, "time a device has to become healthy (default 10m)")
	fl.StringVar(&f.onFailure, "on-failure", "pause", "what a tripped failure gate does: pause or rollback")
	fl.IntVar(&f.maxFailures, "max-failures", 0, "failed devices each stage tolerates")
	fl.BoolVar(&f.supersede, "supersede", false, "abort running rollouts of the model that hold the same devices")
	fl.BoolVar(&f.wait, "wait", false, "follow the rollout until it ends")
	fl.BoolVar(&f.quiet, "quiet-devices", false, "with --wait, print stage progress but not each device's phase changes")
	return cmd
}

// spec builds the rollout's spec from the file or the flags.
func (f *rolloutFlags) spec(stdin io.Reader) (apiv1.RolloutSpec, error) {
	if f.file != "" {
		var data []byte
		var err error
		if f.file == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f.file)
		}
		if err != nil {
			return apiv1.RolloutSpec{}, fmt.Errorf("read rollout spec: %w", err)
		}
		spec, err := parseRolloutSpec(data)
		if err != nil {
			return apiv1.RolloutSpec{}, fmt.Errorf("rollout spec %s %w", f.file, err)
		}
		if f.supersede {
			spec.Supersede = true
		}
		return spec, nil
	}
	if f.model == "" || f.version == "" {
		return apiv1.RolloutSpec{}, fmt.Errorf("give -f FILE, or both --model and --version")
	}
	spec := apiv1.RolloutSpec{Model: f.model, Version: f.version, Supersede: f.supersede,
		Selector: apiv1.Selector{Group: f.group, Profile: f.prof, Devices: f.devices}}
	if f.selector != "" {
		spec.Selector.Labels = map[string]string{}
		for _, kv := range strings.Split(f.selector, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return apiv1.RolloutSpec{}, fmt.Errorf("--selector %q: want key=value pairs separated by commas", f.selector)
			}
			spec.Selector.Labels[k] = v
		}
	}
	var err error
	if spec.Stages, err = stagesFromFlags("--stages", f.stages, f.soak, f.timeout, f.onFailure, f.maxFailures); err != nil {
		return apiv1.RolloutSpec{}, err
	}
	return spec, nil
}

// parseRolloutSpec reads a rollout spec written in YAML or JSON (YAML's
// superset) with the API's field names. Its error, which follows the
// file's name, says what is wrong: not YAML, not a mapping, a field the
// spec does not have (a misspelt gate must not be silently ignored), a
// value of the wrong type.
func parseRolloutSpec(data []byte) (apiv1.RolloutSpec, error) {
	// The YAML is read generically, then decoded as the JSON the API takes,
	// so that the field names, durations ("30m") and unknown fields are the
	// API's.
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return apiv1.RolloutSpec{}, fmt.Errorf("is neither YAML nor JSON: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return apiv1.RolloutSpec{}, errors.New("is not a spec: want a mapping with model, version and stages at the top")
	}
	// YAML reads `version: 2` as a number; a version is a name.
	for _, k := range []string{"model", "version"} {
		switch x := m[k].(type) {
		case int, float64:
			m[k] = fmt.Sprint(x)
		}
	}
	js, err := json.Marshal(m)
	if err != nil {
		return apiv1.RolloutSpec{}, fmt.Errorf("holds what a rollout spec cannot (%w); write its keys and values as the API's JSON", err)
	}
	var spec apiv1.RolloutSpec
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return apiv1.RolloutSpec{}, fmt.Errorf("is not a rollout spec (docs/API.md lists its fields): %w", err)
	}
	return spec, nil
}

// stagesFromFlags makes stages from cumulative sizes ("2", "20%",
// "100%") and the settings every stage shares.
func stagesFromFlags(flag string, sizes []string, soak, timeout time.Duration, onFailure string, maxFailures int) ([]apiv1.Stage, error) {
	var stages []apiv1.Stage
	for i, s := range sizes {
		maxCount := maxFailures
		st := apiv1.Stage{Name: stageName(i, len(sizes)), OnFailure: onFailure, Failure: apiv1.FailureGate{MaxCount: &maxCount},
			Soak: apiv1.Duration(max(soak, 0)), Timeout: apiv1.Duration(max(timeout, 0))}
		switch {
		case strings.HasSuffix(s, "%"):
			p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a percentage", flag, s)
			}
			st.Percent = p
		default:
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is neither a device count nor a percentage such as 20%%", flag, s)
			}
			st.Count = n
		}
		stages = append(stages, st)
	}
	return stages, nil
}

func stageName(i, n int) string {
	switch {
	case i == n-1:
		return "all"
	case i == 0:
		return "canary"
	}
	return fmt.Sprintf("wave-%d", i)
}

func newRolloutListCmd(o *rootOptions) *cobra.Command {
	var model string
	cmd := &cobra.Command{
		Use:   "list [--model NAME]",
		Short: "List rollouts, newest first, with their state and device phases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			rs, err := c.Rollouts(cmd.Context(), model)
			if err != nil {
				return fmt.Errorf("list rollouts: %w", err)
			}
			if o.json {
				return printJSON(o.stdout, map[string]any{"rollouts": rs})
			}
			if len(rs) == 0 {
				fmt.Fprintln(o.stdout, "no rollouts yet; start one with `shoal rollout create`")
				return nil
			}
			rows := make([][]string, 0, len(rs))
			for _, r := range rs {
				rows = append(rows, []string{r.ID, r.Model, r.Version, r.State, r.Stage, fmt.Sprint(r.Targets),
					fmt.Sprint(r.Phases["healthy"]), fmt.Sprint(r.Phases["failed"]), fmt.Sprint(r.Phases["offline"]), ago(r.CreatedAt)})
			}
			return table(o.stdout, []string{"ID", "MODEL", "VERSION", "STATE", "STAGE", "DEVICES", "HEALTHY", "FAILED", "OFFLINE", "CREATED"}, rows)
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "only rollouts of this model")
	return cmd
}

func newRolloutShowCmd(o *rootOptions) *cobra.Command {
	var all, watch bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a rollout: stages, each device's phase, and its events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			if watch {
				if _, err := followRollout(cmd.Context(), c, o, args[0], false); err != nil {
					return err
				}
			}
			r, err := c.Rollout(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("show rollout: %w", err)
			}
			if o.json {
				return printJSON(o.stdout, r)
			}
			n := 15
			if all {
				n = -1
			}
			return printRollout(o.stdout, r, n)
		},
	}
	cmd.Flags().BoolVar(&all, "events", false, "print every event, not only the last 15")
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the rollout's events until it ends")
	return cmd
}

func newRolloutActionCmd(o *rootOptions, action, short string) *cobra.Command {
	return &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			r, err := c.RolloutAction(cmd.Context(), args[0], action)
			if err != nil {
				return fmt.Errorf("%s rollout %s: %w", action, args[0], err)
			}
			if o.json {
				return printJSON(o.stdout, r)
			}
			return printRollout(o.stdout, r, 5)
		},
	}
}

// printRollout prints a rollout for people: its state, the stages, the
// devices and the last events (all of them if events < 0).
func printRollout(w io.Writer, r client.Rollout, events int) error {
	fmt.Fprintf(w, "rollout %s: %s %s, %s, stage %s, %d devices\n", r.ID, r.Model, r.Version, strings.ReplaceAll(r.State, "_", " "), r.Stage, r.Targets)
	if r.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", r.Reason)
	}
	fmt.Fprintln(w)
	rows := make([][]string, 0, len(r.Stages))
	for _, s := range r.Stages {
		state := s.State
		if s.Promoted {
			state += " (promoted)"
		}
		rows = append(rows, []string{s.Name, state, fmt.Sprint(s.Size), fmt.Sprint(s.Notified), fmt.Sprint(s.Healthy), fmt.Sprint(s.Failed), fmt.Sprint(s.Offline)})
	}
	if err := table(w, []string{"STAGE", "STATE", "SIZE", "NOTIFIED", "HEALTHY", "FAILED", "OFFLINE"}, rows); err != nil {
		return err
	}
	if len(r.Devices) > 0 {
		fmt.Fprintln(w)
		rows = rows[:0]
		for _, d := range r.Devices {
			rows = append(rows, []string{d.ID, orDash(d.Stage), d.Phase, orDash(d.Previous), orDash(d.Reason)})
		}
		if err := table(w, []string{"DEVICE", "STAGE", "PHASE", "PREVIOUS", "REASON"}, rows); err != nil {
			return err
		}
	}
	evs := r.Events
	if len(evs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	if events >= 0 && len(evs) > events {
		fmt.Fprintf(w, "last %d of %d events (--events for all):\n", events, len(evs))
		evs = evs[len(evs)-events:]
	}
	rows = rows[:0]
	for _, ev := range evs {
		rows = append(rows, []string{ev.Time.Local().Format("15:04:05"), orDash(ev.Stage), orDash(ev.Device), ev.Message})
	}
	return table(w, []string{"TIME", "STAGE", "DEVICE", "EVENT"}, rows)
}

// followRollout prints a rollout's events as they happen, and a progress
// line per stage, until it ends or ctx does.
func followRollout(ctx context.Context, c *client.Client, o *rootOptions, id string, quiet bool) (client.Rollout, error) {
	last := ""
	return c.WaitRollout(ctx, id, 500*time.Millisecond, func(evs []client.RolloutEvent, r client.Rollout) error {
		if o.json {
			return nil
		}
		for _, ev := range evs {
			if quiet && ev.Type == "device" && ev.Phase != "failed" {
				continue
			}
			who := ""
			if ev.Device != "" {
				who = ev.Device + ": "
			}
			fmt.Fprintf(o.stdout, "  %s  %s%s\n", ev.Time.Local().Format("15:04:05"), who, ev.Message)
		}
		if line := client.RolloutProgress(r); line != last {
			fmt.Fprintln(o.stdout, line)
			last = line
		}
		return nil
	})
}
