package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/client"
)

func newDeployCmd(o *rootOptions) *cobra.Command {
	var model, version string
	var devices []string
	var opts client.DeployOptions
	cmd := &cobra.Command{
		Use:   "deploy --model NAME --version V [--devices a,b] [--capture-share F]",
		Short: "Make a model version the desired model of every device, or of the devices listed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || version == "" {
				return fmt.Errorf("both --model and --version are needed")
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			r, err := c.DeployWith(cmd.Context(), model, version, devices, opts)
			if err != nil {
				return fmt.Errorf("deploy %s %s: %w", model, version, err)
			}
			if o.json {
				return printJSON(o.stdout, r)
			}
			fmt.Fprintf(o.stdout, "deployed %s %s (release %d) to %d device(s)\n", r.Model, r.Version, r.ReleaseSequence, len(r.Devices))
			rows := [][]string{}
			for _, d := range r.Devices {
				rows = append(rows, []string{d.ID, fmt.Sprint(d.Generation)})
			}
			if len(rows) > 0 {
				return table(o.stdout, []string{"DEVICE", "GENERATION"}, rows)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "model name")
	cmd.Flags().StringVar(&version, "version", "", "model version")
	cmd.Flags().StringSliceVar(&devices, "devices", nil, "comma-separated device ids (default: every enrolled device)")
	cmd.Flags().Float64Var(&opts.CaptureShare, "capture-share", 0, "share (0 to 1) of predictions the agents capture, with their inputs, for retraining")
	return cmd
}

func newDevicesCmd(o *rootOptions) *cobra.Command {
	var selector map[string]string
	var group string
	cmd := &cobra.Command{
		Use:   "devices [--selector k=v,k2=v2] [--group G]",
		Short: "List enrolled devices: online, active model, phase, group, labels, last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			f := client.DeviceFilter{Labels: selector, Group: group}
			devs, err := c.DevicesMatching(cmd.Context(), f)
			if err != nil {
				return err
			}
			if o.json {
				if devs == nil {
					devs = []client.Device{}
				}
				return printJSON(o.stdout, devs)
			}
			if len(devs) == 0 {
				if len(f.Labels) > 0 || f.Group != "" {
					fmt.Fprintf(o.stdout, "no devices match%s\n", describeFilter(f))
					return nil
				}
				fmt.Fprintln(o.stdout, "no devices yet: create a token with `shoal token create` and start `shoal-agent run --enroll-token ...`")
				return nil
			}
			return devicesTable(o.stdout, devs)
		},
	}
	cmd.Flags().StringToStringVar(&selector, "selector", nil, "only devices with these labels, e.g. env=prod,site=north (all must match)")
	cmd.Flags().StringVar(&group, "group", "", "only devices in this group")
	cmd.AddCommand(newDevicesLabelCmd(o))
	return cmd
}

func newDevicesLabelCmd(o *rootOptions) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "label ID [key=value]... [key-]... [--group G]",
		Short: "Set (key=value) or remove (key-) a device's labels, or set its group (--group \"\" takes it out)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			labels, err := parseLabelArgs(args[1:])
			if err != nil {
				return err
			}
			var g *string
			if cmd.Flags().Changed("group") {
				g = &group
			}
			if labels == nil && g == nil {
				return fmt.Errorf("nothing to change on %s: give key=value to set a label, key- to remove one, or --group", id)
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			d, err := c.UpdateDevice(cmd.Context(), id, labels, g)
			if err != nil {
				return err // names the device and the label
			}
			if o.json {
				return printJSON(o.stdout, d)
			}
			return devicesTable(o.stdout, []client.Device{d})
		},
	}
	cmd.Flags().StringVar(&group, "group", "", `put the device in this group ("" takes it out of its group)`)
	return cmd
}

// parseLabelArgs reads kubectl-style label arguments: key=value sets a
// label, key- removes it. It returns nil for no arguments.
func parseLabelArgs(args []string) (map[string]*string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := make(map[string]*string, len(args))
	for _, a := range args {
		var key string
		var value *string
		if k, v, ok := strings.Cut(a, "="); ok {
			key, value = k, &v
		} else if k, ok := strings.CutSuffix(a, "-"); ok {
			key = k
		}
		if key == "" {
			return nil, fmt.Errorf("label argument %q: write key=value to set a label, or key- to remove it", a)
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("label %q is given more than once", key)
		}
		out[key] = value
	}
	return out, nil
}

// devicesTable prints devices for people.
func devicesTable(w io.Writer, devs []client.Device) error {
	rows := [][]string{}
	for _, d := range devs {
		online := "offline"
		if d.Online {
			online = "online"
		}
		var models []string
		for _, m := range d.Models {
			s := m.Name + " " + orDash(m.ActiveVersion)
			if m.DesiredVersion != "" && m.DesiredVersion != m.ActiveVersion {
				s += " → " + m.DesiredVersion
			}
			models = append(models, s)
		}
		rows = append(rows, []string{d.ID, online, orDash(strings.Join(models, "; ")), d.Phase, orDash(d.AgentVersion), ago(seen(d.LastSeen)),
			orDash(d.Group), orDash(labelsCell(d.Labels, maxLabelsCell)), orDash(d.Error)})
	}
	return table(w, []string{"DEVICE", "STATUS", "MODELS", "PHASE", "AGENT", "LAST SEEN", "GROUP", "LABELS", "ERROR"}, rows)
}

// describeFilter says what a device filter asks for, after "no devices
// match".
func describeFilter(f client.DeviceFilter) string {
	var s string
	if sel := f.Selector(); sel != "" {
		s += " --selector " + sel
	}
	if f.Group != "" {
		s += " --group " + f.Group
	}
	return s
}

func newTokenCmd(o *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Enrollment tokens"}
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create [--ttl 24h]",
		Short: "Make a one-time enrollment token for a new device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), ttl)
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(o.stdout, t)
			}
			fmt.Fprintf(o.stdout, "%s\n\nOne-time token, valid until %s. Enroll a device with:\n  shoal-agent run --server %s --device-id DEVICE --enroll-token %s\n",
				t.Token, t.ExpiresAt.Local().Format("2006-01-02 15:04 MST"), o.server, t.Token)
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long the token stays valid (default 24h)")
	cmd.AddCommand(create)
	return cmd
}

func newTelemetryCmd(o *rootOptions) *cobra.Command {
	var device string
	cmd := &cobra.Command{
		Use:   "telemetry [--device ID]",
		Short: "Show telemetry received from devices: records, predictions, errors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			s, err := c.Telemetry(cmd.Context(), device)
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(o.stdout, s)
			}
			rows := [][]string{}
			for _, d := range s.Devices {
				rows = append(rows, []string{d.DeviceID, fmt.Sprint(d.Records), fmt.Sprint(d.Predictions), fmt.Sprint(d.Errors), fmt.Sprint(d.DroppedRecords)})
			}
			rows = append(rows, []string{"TOTAL", fmt.Sprint(s.Total.Records), fmt.Sprint(s.Total.Predictions), fmt.Sprint(s.Total.Errors), fmt.Sprint(s.Total.DroppedRecords)})
			return table(o.stdout, []string{"DEVICE", "RECORDS", "PREDICTIONS", "ERRORS", "DROPPED"}, rows)
		},
	}
	cmd.Flags().StringVar(&device, "device", "", "one device only")
	return cmd
}

// seen is when a device was last seen, for ago: zero (never) if nil.
func seen(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
