package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/internal/topics"
)

// DefaultAPIAddr is where the local inference API listens unless told.
const DefaultAPIAddr = "127.0.0.1:9090"

// Config configures an Agent. The zero value of every field but DataDir
// (and, before enrollment, ServerURL, DeviceID and EnrollToken) has a
// working default.
type Config struct {
	// DataDir holds the identity, model files and the telemetry outbox.
	DataDir string
	// ServerURL is the control plane's HTTP URL (enrollment, artifacts).
	// After enrollment it defaults to the URL enrolled with.
	ServerURL string
	// BrokerURL overrides the MQTT broker URL from enrollment.
	BrokerURL string
	// DeviceID names the device; needed to enroll, optional after (it must
	// then match the enrolled id).
	DeviceID string
	// EnrollToken is the one-time enrollment token; only needed once.
	EnrollToken Secret
	// Labels and Group are sent with the enrollment, for the control
	// plane to record on the device (it validates them; the agent checks
	// only that every label has a key, without '='). They are only sent
	// when the device enrolls; change them on the control plane after.
	Labels map[string]string
	Group  string
	// APIAddr is the local inference API's listen address (DefaultAPIAddr
	// if empty; port 0 picks a free port, see Agent.APIAddr).
	APIAddr string
	// ONNXRuntimeLib is the path of libonnxruntime.so; empty searches
	// $ONNXRUNTIME_LIB, the cache and the system (see onnxrt.Init).
	ONNXRuntimeLib string
	// Profile is the device's firmware profile name (reported, and
	// matched against manifests built for one profile).
	Profile string
	// TelemetryWindow is the aggregation window (telemetry.DefaultWindow
	// if 0).
	TelemetryWindow time.Duration
	// StatsWindow is the window of the data statistics of the models
	// whose manifest has a reference profile: they ride in the telemetry
	// record that closes it, so it is at least TelemetryWindow
	// (telemetry.DefaultStatsWindow, 60s, if 0; negative: the agent keeps
	// and sends no data statistics).
	StatsWindow time.Duration
	// OutboxMaxBytes bounds the queued telemetry (outbox.DefaultMaxBytes
	// if 0).
	OutboxMaxBytes int64
	// SyncWrites fsyncs every outbox write.
	SyncWrites bool
	// OutboxSyncInterval is how often, without SyncWrites, the telemetry
	// written to the outbox is synced to disk: about what a power cut can
	// lose (outbox.DefaultSyncInterval if 0; negative: never, leaving it to
	// the kernel's writeback, typically 30 s).
	OutboxSyncInterval time.Duration
	// OutboxMinFreeBytes is the free space the outbox's file system must
	// have for it to write telemetry (OutboxMaxBytes + outbox.MinFreeSlack
	// if 0).
	OutboxMinFreeBytes int64
	// IntraOpThreads is ONNX Runtime's intra-op thread count (0: default).
	IntraOpThreads int
	// HealthMinPredictions and HealthMinTime are the health check of a
	// model version whose manifest has none: the agent reports an active
	// version healthy once it has served HealthMinPredictions successful
	// predictions or been active for HealthMinTime, whichever comes first.
	// 0 means the default (reconcile.DefaultHealthMinPredictions, 100, and
	// reconcile.DefaultHealthMinTime, 30s); negative turns that criterion
	// off; with both off a version is healthy as soon as it is active.
	HealthMinPredictions int64
	HealthMinTime        time.Duration
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
	// Now is the wall clock (manifest expiry, telemetry windows, report
	// times); time.Now if nil. Durations use Go's monotonic clock whatever
	// this says.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("no data directory: pass --data-dir (e.g. /var/lib/shoal-agent)")
	}
	if c.ServerURL != "" {
		u, err := url.Parse(c.ServerURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("server URL %q: want http(s)://host[:port], e.g. http://127.0.0.1:8080", c.ServerURL)
		}
	}
	if c.DeviceID != "" {
		if err := topics.ValidateDeviceID(c.DeviceID); err != nil {
			return fmt.Errorf("--device-id: %w", err)
		}
	}
	if c.TelemetryWindow < 0 {
		return fmt.Errorf("telemetry window %s is negative", c.TelemetryWindow)
	}
	if c.OutboxMaxBytes < 0 {
		return fmt.Errorf("outbox max bytes %d is negative", c.OutboxMaxBytes)
	}
	if c.OutboxMinFreeBytes < 0 {
		return fmt.Errorf("outbox min free bytes %d is negative", c.OutboxMinFreeBytes)
	}
	if c.IntraOpThreads < 0 {
		return fmt.Errorf("intra-op threads %d is negative", c.IntraOpThreads)
	}
	if err := ValidateLabels(c.Labels); err != nil {
		return err
	}
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ValidateLabels checks what the agent can of labels: every key is
// non-empty and has no '=' (it could not be given as key=value). The
// control plane checks the rest when the device enrolls.
func ValidateLabels(labels map[string]string) error {
	for k := range labels {
		switch {
		case k == "":
			return errors.New("a label has an empty key")
		case strings.Contains(k, "="):
			return fmt.Errorf("label key %q has '='; a key cannot (labels are key=value)", k)
		}
	}
	return nil
}

// Secret is a string that must not appear in logs or error messages: it
// prints as "[redacted]" with fmt's verbs and slog, and marshals to JSON
// redacted. Reveal returns the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String redacts.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts (%#v).
func (s Secret) GoString() string { return fmt.Sprintf("agent.Secret(%q)", s.String()) }

// LogValue redacts in slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON redacts.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", s.String())), nil }

// MarshalText redacts (e.g. YAML encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
