// Package controltest runs a real Shoal control plane in-process for tests:
// Badger in a temp dir, the embedded MQTT broker and the HTTP API on
// loopback ephemeral ports, real ONNX Runtime. Start(t) needs no options;
// everything is shut down when the test ends.
//
//	cp := controltest.Start(t)
//	tok := cp.Token(t)
//	... start an agent with cp.URL() and tok ...
//	cp.PushModel(t, "summer", "1", onnxBytes)
//	cp.Deploy(t, "summer", "1")
package controltest

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane"
	"github.com/shoalfleet/shoal/controlplane/client"
)

// Server is a running control plane and a client for its API.
type Server struct {
	*controlplane.ControlPlane
	// Client talks to the API.
	Client *client.Client
	// DataDir is the control plane's data directory.
	DataDir string

	t    testing.TB
	opts options
}

type options struct {
	cfg controlplane.Config
}

// Option adjusts the control plane Start runs.
type Option func(*options)

// WithTopicPrefix sets the MQTT topic prefix.
func WithTopicPrefix(prefix string) Option {
	return func(o *options) { o.cfg.TopicPrefix = prefix }
}

// WithNow sets the control plane's clock.
func WithNow(now func() time.Time) Option { return func(o *options) { o.cfg.Now = now } }

// WithLogger sends the control plane's logs to log instead of the test log.
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.cfg.Logger = log } }

// WithRolloutInterval sets how often the rollout engine runs a pass
// when nothing triggers one (tests that move an injected clock call
// ReconcileRollouts instead of waiting).
func WithRolloutInterval(d time.Duration) Option {
	return func(o *options) { o.cfg.RolloutInterval = d }
}

// WithDrift sets the drift window, how long after a window ends it is
// judged, and how often the drift policies are evaluated (tests may call
// EvaluateDrift instead of waiting for eval); zero keeps a default.
func WithDrift(window, settle, eval time.Duration) Option {
	return func(o *options) {
		o.cfg.DriftWindow, o.cfg.DriftSettle, o.cfg.DriftEvalInterval = window, settle, eval
	}
}

// WithDataDir uses dir (which the caller owns) instead of a fresh temp dir:
// a control plane started on the data of a previous one.
func WithDataDir(dir string) Option { return func(o *options) { o.cfg.DataDir = dir } }

// WithAddrs sets the HTTP and MQTT listen addresses (default
// 127.0.0.1:0 for both).
func WithAddrs(httpAddr, mqttAddr string) Option {
	return func(o *options) { o.cfg.HTTPAddr, o.cfg.MQTTAddr = httpAddr, mqttAddr }
}

// WithBrokerURL uses an external MQTT broker instead of the embedded one.
func WithBrokerURL(url string) Option { return func(o *options) { o.cfg.BrokerURL = url } }

// WithPublicBrokerURL sets the broker URL agents are told at enrollment.
func WithPublicBrokerURL(url string) Option {
	return func(o *options) { o.cfg.PublicBrokerURL = url }
}

// WithHTTPMiddleware wraps the API handler, to hold, cut or alter
// responses (a flaky artifact download, say).
func WithHTTPMiddleware(mw func(http.Handler) http.Handler) Option {
	return func(o *options) { o.cfg.HTTPMiddleware = mw }
}

// Start starts a control plane for the test and stops it when the test
// ends. It fails the test if the control plane cannot start.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{cfg: controlplane.Config{HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.cfg.DataDir == "" {
		o.cfg.DataDir = t.TempDir()
	}
	return start(t, o)
}

func start(t testing.TB, o options) *Server {
	t.Helper()
	cfg := o.cfg
	var tl *testLog
	if cfg.Logger == nil {
		tl = &testLog{t: t}
		cfg.Logger = slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cp, err := controlplane.New(cfg)
	if err != nil {
		t.Fatalf("controltest: %v", err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatalf("controltest: %v", err)
	}
	c, err := client.New(cp.URL())
	if err != nil {
		cp.Close()
		t.Fatalf("controltest: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Close(); err != nil {
			t.Errorf("controltest: close control plane: %v", err)
		}
		if tl != nil {
			tl.stop()
		}
	})
	return &Server{ControlPlane: cp, Client: c, DataDir: cfg.DataDir, t: t, opts: o}
}

// Restart closes the control plane and starts a new one on the same data
// directory and the same addresses, as after a process restart. The
// returned Server replaces s.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	o := s.opts
	o.cfg.DataDir = s.DataDir
	o.cfg.HTTPAddr = s.HTTPAddr()
	if o.cfg.BrokerURL == "" {
		o.cfg.MQTTAddr = s.MQTTAddr()
	}
	if err := s.Close(); err != nil {
		t.Fatalf("controltest: restart: %v", err)
	}
	return start(t, o)
}

// Token returns a new one-time enrollment token.
func (s *Server) Token(t testing.TB) string {
	t.Helper()
	tok, err := s.Client.CreateToken(context.Background(), 0)
	if err != nil {
		t.Fatalf("controltest: create token: %v", err)
	}
	return tok.Token
}

// PushModel uploads an ONNX model as name/version.
func (s *Server) PushModel(t testing.TB, name, version string, onnx []byte) client.ModelVersion {
	t.Helper()
	mv, err := s.Client.PushModel(context.Background(), name, version, bytes.NewReader(onnx))
	if err != nil {
		t.Fatalf("controltest: push %s %s: %v", name, version, err)
	}
	return mv
}

// Deploy makes model/version the desired model of devices (every enrolled
// device if none are given).
func (s *Server) Deploy(t testing.TB, model, version string, devices ...string) client.DeployResult {
	t.Helper()
	r, err := s.Client.Deploy(context.Background(), model, version, devices)
	if err != nil {
		t.Fatalf("controltest: deploy %s %s: %v", model, version, err)
	}
	return r
}

// testLog writes log lines to the test log until the test is over; lines
// from goroutines that outlive it are dropped instead of panicking.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}
