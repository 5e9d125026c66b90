package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane"
	"github.com/shoalfleet/shoal/internal/topics"
)

// newServeCmd is `shoal serve`: the control plane, until SIGINT or SIGTERM.
func newServeCmd(o *rootOptions) *cobra.Command {
	var cfg controlplane.Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane: HTTP API, embedded MQTT broker, registry and fleet",
		Long: `Run the control plane until interrupted (SIGINT or SIGTERM), then shut down
gracefully. Both listeners bind to loopback unless told otherwise; to serve
devices on the network, give --http-addr and --mqtt-addr (e.g. :8080, :1883)
and --public-broker-url with the address devices reach the broker at.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = o.logger()
			cp, err := controlplane.New(cfg)
			if err != nil {
				return err
			}
			return cp.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./shoal-data", "directory for the store, artifacts and signing key")
	f.StringVar(&cfg.HTTPAddr, "http-addr", controlplane.DefaultHTTPAddr, "HTTP API listen address")
	f.StringVar(&cfg.MQTTAddr, "mqtt-addr", controlplane.DefaultMQTTAddr, "embedded MQTT broker listen address (unused with --broker)")
	f.StringVar(&cfg.BrokerURL, "broker", os.Getenv("SHOAL_BROKER"), "external MQTT broker URL (tcp://user:pass@host:1883) instead of the embedded broker (env SHOAL_BROKER, which keeps the password off the command line)")
	f.StringSliceVar(&cfg.TrustedProxies, "trusted-proxy", nil, "address or CIDR of a reverse proxy whose X-Forwarded-For names the client (repeatable; none by default)")
	f.StringVar(&cfg.PublicBrokerURL, "public-broker-url", "", "broker URL agents are told at enrollment (default tcp://{mqtt-addr}, or --broker without credentials)")
	f.StringVar(&cfg.TopicPrefix, "topic-prefix", topics.DefaultPrefix, "MQTT topic prefix")
	f.DurationVar(&cfg.DriftWindow, "drift-window", controlplane.DefaultDriftWindow, "window data statistics are aggregated over and drift judged on; must divide 24h (1h, 30m, 15m, ...)")
	f.StringSliceVar(&cfg.DriftCohortLabels, "drift-cohort-labels", nil, "label keys whose values also group data statistics and drift into cohorts (label:region=eu), at most 4: region,site")
	f.DurationVar(&cfg.DriftSettle, "drift-settle", controlplane.DefaultDriftSettle, "how long after a drift window ends it is judged, for late telemetry")
	f.StringVar(&cfg.ONNXRuntimeLib, "onnxruntime-lib", "", "path of libonnxruntime.so (default: $ONNXRUNTIME_LIB, the `make ort` cache, then the system)")
	return cmd
}
