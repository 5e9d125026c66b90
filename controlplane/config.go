package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
)

// Defaults for Config. Both addresses are loopback: exposing the control
// plane is a deliberate choice made with a flag.
const (
	DefaultHTTPAddr = "127.0.0.1:8080"
	DefaultMQTTAddr = "127.0.0.1:1883"
	// DefaultManifestRefreshInterval is how often the desired state's
	// manifests are checked for expiry unless Config says otherwise.
	DefaultManifestRefreshInterval = time.Hour
	// DefaultRolloutInterval is how often the rollout engine runs a pass
	// when nothing asks for one sooner (devices reporting do).
	DefaultRolloutInterval = time.Second
	// DefaultDriftWindow is the drift window unless Config says otherwise
	// (monitor.DefaultStatsWindow).
	DefaultDriftWindow = time.Hour
	// DefaultDriftSettle is how long after a drift window ends it is
	// judged unless Config says otherwise (drift.DefaultSettle).
	DefaultDriftSettle = 5 * time.Minute
	// DefaultDriftEvalInterval is how often the drift policies are
	// evaluated unless Config says otherwise.
	DefaultDriftEvalInterval = time.Minute
)

// Config configures a control plane. Only DataDir is required.
type Config struct {
	// DataDir holds the store (DataDir/store), the artifacts
	// (DataDir/artifacts), the datasets' CSV files (DataDir/datasets) and
	// the signing key (DataDir/signing-key.pem).
	DataDir string
	// HTTPAddr is the API's listen address (default DefaultHTTPAddr); port
	// 0 picks a free port (HTTPAddr on the ControlPlane tells which).
	HTTPAddr string
	// MQTTAddr is the embedded broker's listen address (default
	// DefaultMQTTAddr); unused when BrokerURL is set.
	MQTTAddr string
	// BrokerURL, if set, is an external MQTT broker to use instead of the
	// embedded one: tcp://user:pass@host:port (or ssl://, ws://, wss://).
	BrokerURL string
	// PublicBrokerURL is the broker URL agents are told at enrollment.
	// Default: tcp://{the embedded broker's address}, or BrokerURL without
	// its credentials.
	PublicBrokerURL string
	// TopicPrefix is the MQTT topic prefix (default topics.DefaultPrefix).
	TopicPrefix string
	// TrustedProxies are the addresses or CIDRs of reverse proxies in front
	// of the HTTP API whose X-Forwarded-For names the client; none by
	// default, so a client is known by the address it connects from.
	TrustedProxies []string
	// ONNXRuntimeLib is the path of libonnxruntime.so; empty searches
	// $ONNXRUNTIME_LIB, the cache and the system (onnxrt.Init).
	ONNXRuntimeLib string
	// Logger receives the control plane's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// ManifestRefreshInterval is how often the deployment manifests of
	// every device's desired state are checked, and those that expire
	// within a third of the default lifetime (10 of 30 days) re-signed
	// (default DefaultManifestRefreshInterval). It must be shorter than
	// those 10 days.
	ManifestRefreshInterval time.Duration
	// RolloutInterval is how often the rollout engine checks its gates,
	// soak times and timeouts (default DefaultRolloutInterval); a device
	// report also triggers a pass.
	RolloutInterval time.Duration
	// DriftWindow is the window data statistics are aggregated over and
	// drift is judged on (default DefaultDriftWindow). It must be a whole
	// number of milliseconds that divides 24h, so that windows start at
	// the same times each day. Agents send statistics every StatsWindow
	// (agent.Config), which should be well under it.
	DriftWindow time.Duration
	// DriftSettle is how long after a drift window ends the drift
	// policies wait before judging it, for the records still on their way
	// (default DefaultDriftSettle).
	DriftSettle time.Duration
	// DriftEvalInterval is how often the drift policies are evaluated
	// (default DefaultDriftEvalInterval); EvaluateDrift runs one now.
	DriftEvalInterval time.Duration
	// DriftCohortLabels are the label keys ("region", "site") whose
	// values group data statistics, and drift, into cohorts
	// "label:{key}={value}", besides "all" and each firmware profile's:
	// at most monitor.MaxCohortLabels keys of letters, digits, '.', '_'
	// and '-'. A device without a value of a key is in none of its
	// cohorts.
	DriftCohortLabels []string
	// HTTPMiddleware, if set, wraps the API handler: tests use it to hold,
	// cut or alter responses (controltest.WithHTTPMiddleware).
	HTTPMiddleware func(http.Handler) http.Handler
}

func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		return c, errors.New("control plane: no data directory; give one (shoal serve --data-dir)")
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.MQTTAddr == "" {
		c.MQTTAddr = DefaultMQTTAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.ManifestRefreshInterval == 0:
		c.ManifestRefreshInterval = DefaultManifestRefreshInterval
	case c.ManifestRefreshInterval < 0 || c.ManifestRefreshInterval >= manifestRefreshWindow:
		return c, fmt.Errorf("control plane: manifest refresh interval %s: want a positive duration under %s (manifests are re-signed once less than that is left of them), or 0 for the default (%s)",
			c.ManifestRefreshInterval, manifestRefreshWindow, DefaultManifestRefreshInterval)
	}
	switch {
	case c.RolloutInterval == 0:
		c.RolloutInterval = DefaultRolloutInterval
	case c.RolloutInterval < 0:
		return c, fmt.Errorf("control plane: rollout interval %s is negative; give a positive duration, or 0 for the default (%s)", c.RolloutInterval, DefaultRolloutInterval)
	}
	switch {
	case c.DriftWindow == 0:
		c.DriftWindow = DefaultDriftWindow
	case c.DriftWindow < time.Millisecond || c.DriftWindow%time.Millisecond != 0 || (24*time.Hour)%c.DriftWindow != 0:
		return c, fmt.Errorf("control plane: drift window %s: want a whole number of milliseconds that divides 24h (1h, 30m, 15m, 1m, 10s, ...), or 0 for the default (%s)",
			c.DriftWindow, DefaultDriftWindow)
	}
	switch {
	case c.DriftSettle == 0:
		c.DriftSettle = DefaultDriftSettle
	case c.DriftSettle < 0:
		return c, fmt.Errorf("control plane: drift settle time %s is negative; give a positive duration, or 0 for the default (%s)", c.DriftSettle, DefaultDriftSettle)
	}
	switch {
	case c.DriftEvalInterval == 0:
		c.DriftEvalInterval = DefaultDriftEvalInterval
	case c.DriftEvalInterval < 0:
		return c, fmt.Errorf("control plane: drift evaluation interval %s is negative; give a positive duration, or 0 for the default (%s)", c.DriftEvalInterval, DefaultDriftEvalInterval)
	}
	if err := monitor.CheckCohortLabels(c.DriftCohortLabels); err != nil {
		return c, fmt.Errorf("control plane: drift cohort labels: %w", err)
	}
	if c.PublicBrokerURL != "" {
		u, err := url.Parse(c.PublicBrokerURL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return c, fmt.Errorf("control plane: public broker URL %q: want scheme://host:port, e.g. tcp://broker.example.com:1883", c.PublicBrokerURL)
		}
		if u.User != nil {
			return c, fmt.Errorf("control plane: public broker URL %q holds credentials; agents get their own at enrollment, so leave them out", redactURL(c.PublicBrokerURL))
		}
	}
	return c, nil
}

// redactURL returns raw without its user information.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

// isUnspecifiedHost reports whether addr listens on every interface, so
// that its host is no address an agent can dial.
func isUnspecifiedHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
