package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/demo"
)

func newDemoCmd(o *rootOptions) *cobra.Command {
	cfg := demo.Config{}
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole loop on embedded defaults: train, roll out, stream, detect drift, retrain, gate, canary, promote",
		Long: `shoal demo starts a control plane (embedded MQTT broker, Badger store) and
N agents in this process and runs the whole MLOps loop on a built-in
synthetic sensor data set (temperature, vibration, current, pressure →
normal / worn / failing):

  1. push the data set and train v1 with a training job (epochs, gates);
  2. roll v1 out in stages (canary, half, all), each gated on health;
  3. set a drift policy and a retraining policy;
  4. stream predictions through the agents' Open Inference Protocol APIs
     and show the drift windows (low PSI, no alert);
  5. the sensors age: temperature shifts by 3 standard deviations and
     labelled field data arrives as the data set's v2; drift is detected,
     an alert starts a retraining run, the candidate passes its gates and
     is rolled out as a canary, then to the whole fleet.

Drift windows are 5 seconds here (an hour by default). Progress is printed
as it goes, with the URLs to look at. It stays up until Ctrl-C, or
--duration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Agents < 1 {
				return errors.New("--agents must be at least 1")
			}
			if cfg.Interval <= 0 {
				return errors.New("--interval must be positive")
			}
			cfg.Out = o.stdout
			cfg.Logger = slog.New(slog.DiscardHandler)
			if verbose {
				cfg.Logger = o.logger()
			}
			return demo.Run(cmd.Context(), cfg)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&cfg.Agents, "agents", 5, "number of agents to start")
	fl.DurationVar(&cfg.Duration, "duration", 0, "exit after this long (default: run until Ctrl-C)")
	fl.StringVar(&cfg.DataDir, "data-dir", "", "keep state here (default: a temporary directory, removed on exit)")
	fl.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "control plane HTTP address")
	fl.StringVar(&cfg.MQTTAddr, "mqtt-addr", "127.0.0.1:1883", "embedded MQTT broker address")
	fl.StringVar(&cfg.ONNXRuntimeLib, "onnxruntime-lib", "", "path to libonnxruntime.so (default: $ONNXRUNTIME_LIB, the cache, the system)")
	fl.DurationVar(&cfg.Interval, "interval", time.Second, "time between prediction rounds")
	fl.BoolVar(&verbose, "verbose", false, "show the control plane's and agents' logs")
	return cmd
}
