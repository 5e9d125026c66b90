package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/client"
)

func newDeployCmd(o *rootOptions) *cobra.Command {
	var model, version string
	var devices []string
	cmd := &cobra.Command{
		Use:   "deploy --model NAME --version V [--devices a,b]",
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
			r, err := c.Deploy(cmd.Context(), model, version, devices)
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
	return cmd
}

func newDevicesCmd(o *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List enrolled devices: online, active model, phase, last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			devs, err := c.Devices(cmd.Context())
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
				fmt.Fprintln(o.stdout, "no devices yet: create a token with `shoal token create` and start `shoal-agent run --enroll-token ...`")
				return nil
			}
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
				rows = append(rows, []string{d.ID, online, orDash(strings.Join(models, "; ")), d.Phase, orDash(d.AgentVersion), ago(d.LastSeen), orDash(d.Error)})
			}
			return table(o.stdout, []string{"DEVICE", "STATUS", "MODELS", "PHASE", "AGENT", "LAST SEEN", "ERROR"}, rows)
		},
	}
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
