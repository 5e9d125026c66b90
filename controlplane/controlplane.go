// Package controlplane is the Shoal control plane as one value: New wires
// the store, signing key, ONNX Runtime, registry, MQTT broker (embedded or
// external), fleet, monitor and HTTP API from a Config; Start listens, Run
// serves until its context ends, Close shuts everything down in order.
// `shoal serve`, `shoal demo` and tests (controltest) all start control
// planes through it.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoalfleet/shoal/controlplane/internal/api"
	"github.com/shoalfleet/shoal/controlplane/internal/broker"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/drift"
	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/loop"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/procstats"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
)

const (
	// shutdownTimeout bounds how long Close waits for HTTP requests in
	// flight (artifact downloads resume with Range, so cutting them is safe).
	shutdownTimeout = 10 * time.Second
	// dialTimeout bounds the first connection to an external broker.
	dialTimeout = 30 * time.Second
	// externalClientID is the control plane's MQTT client id on an external
	// broker whose URL has no username; fixed, so the broker keeps its
	// session across restarts.
	externalClientID = "shoal-controlplane"
	// manifestRefreshWindow is how close to its expiry a manifest of the
	// desired state is re-signed: a third of the default lifetime, so the
	// retained desired state an offline device comes back to always has
	// days left (10 of 30), and a pass that fails has many retries first.
	manifestRefreshWindow = registry.DefaultManifestTTL / 3
	// refreshPassTimeout bounds one pass of RefreshManifests.
	refreshPassTimeout = 10 * time.Minute
	// rolloutMinGap is the least time between two rollout passes, however
	// often devices report: a thousand devices reporting at once cost a
	// pass or two, not a thousand.
	rolloutMinGap = 100 * time.Millisecond
)

// ControlPlane is a configured control plane. Its methods are safe for
// concurrent use.
type ControlPlane struct {
	cfg    Config
	log    *slog.Logger
	scheme topics.Scheme

	store    *badgerstore.Store
	signer   *trust.Signer
	registry *registry.Registry
	datasets *dataset.Store
	jobs     *jobs.Runner
	fleet    *fleet.Service
	monitor  *monitor.Monitor
	rollouts *rollout.Engine
	drift    *drift.Service
	retrain  *loop.Service
	embedded *broker.Embedded // nil when an external broker is used
	external *broker.External // nil when the embedded broker is used
	bus      broker.Bus
	http     *http.Server

	// mu guards the fields below; it is never held across I/O, so that
	// URL, HTTPAddr and Close answer while Start works.
	mu       sync.Mutex
	httpLn   net.Listener
	starting bool // Start was called (it may have failed)
	closed   bool // Close was called
	// cancelStart ends a Start in progress, which closes startDone on its
	// way out; both nil until Start is called.
	cancelStart context.CancelFunc
	startDone   chan struct{}
	// stopGroup ends the run group — HTTP serving and the background
	// loops — whose end closes groupDone, with groupErr its first error;
	// all nil until Start succeeds.
	stopGroup context.CancelFunc
	groupDone chan struct{}
	groupErr  error

	closeOnce sync.Once
	closeErr  error
}

// New builds a control plane from cfg: it opens (or creates) the data
// directory, the store and the signing key, loads ONNX Runtime and, with an
// external broker, connects to it. Nothing listens until Start.
func New(cfg Config) (_ *ControlPlane, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{cfg: cfg, log: cfg.Logger, scheme: topics.New(cfg.TopicPrefix)}
	defer func() {
		if err != nil {
			cp.closeParts()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("control plane: create data directory: %w", err)
	}
	ortPath, err := onnxrt.Init(cfg.ONNXRuntimeLib)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp.log.Info("ONNX Runtime loaded", "component", "onnxruntime", "library", ortPath)

	storeDir := filepath.Join(cfg.DataDir, "store")
	cp.store, err = badgerstore.Open(storeDir, cp.log.With("component", "store"))
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp.log.Info("store opened", "component", "store", "dir", storeDir)

	keyPath := filepath.Join(cfg.DataDir, "signing-key.pem")
	cp.signer, err = trust.LoadOrCreateSigner(keyPath)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp.log.Info("signing key loaded", "component", "trust", "path", keyPath, "key_id", cp.signer.KeyID())

	blobDir := filepath.Join(cfg.DataDir, "artifacts")
	cp.registry, err = registry.New(cp.store, blobDir, cp.signer, cp.log.With("component", "registry"), cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp.log.Info("registry ready", "component", "registry", "artifacts", blobDir)

	datasetDir := filepath.Join(cfg.DataDir, "datasets")
	cp.datasets, err = dataset.NewStore(cp.store, datasetDir, cp.log.With("component", "dataset"), cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}

	// The embedded broker asks the fleet for device credentials, and the
	// fleet publishes through the broker: the broker gets a forwarder that
	// the fleet is plugged into once it exists, before anything listens.
	auth := &deviceAuth{}
	if err := cp.openBus(auth); err != nil {
		return nil, err
	}
	cp.fleet = fleet.New(cp.store, cp.bus, cp.scheme, cp.log.With("component", "fleet"), cfg.Now)
	auth.set(cp.fleet)
	cp.monitor = monitor.New(cp.store, cp.bus, cp.scheme, cp.log.With("component", "monitor"), cfg.Now)
	cp.rollouts = rollout.New(cp.store, cp.fleet, cp.registry, cp.monitor, cp.log.With("component", "rollout"), cfg.Now)
	// Data statistics are grouped by the device's firmware profile and
	// its values of the cohort labels.
	if err := cp.monitor.ConfigureStats(monitor.StatsConfig{Window: cfg.DriftWindow, CohortLabels: cfg.DriftCohortLabels, Device: func(ctx context.Context, id string) (string, map[string]string, error) {
		d, err := cp.fleet.Get(ctx, id)
		return d.Profile, d.Labels, err
	}}); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp.jobs, err = jobs.New(cp.store, cp.datasets, cp.registry, cp.log.With("component", "jobs"), cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	// The retraining loop is made before drift, whose alerts it takes.
	cp.retrain = loop.New(cp.store, cp.jobs, cp.datasets, cp.rollouts, loop.Options{Now: cfg.Now, Log: cp.log.With("component", "loop"), Captures: cp.monitor})
	cp.drift = drift.New(cp.store, cp.monitor, cp.registry, drift.Options{
		Now: cfg.Now, Window: cp.monitor.StatsWindowDuration(), Settle: cfg.DriftSettle, Log: cp.log.With("component", "drift"),
		OnAlert: cp.retrain.OnAlert,
	})

	handler, err := api.New(api.Deps{
		Registry:     cp.registry,
		Fleet:        cp.fleet,
		Monitor:      cp.monitor,
		Rollouts:     cp.rollouts,
		Datasets:     cp.datasets,
		Drift:        cp.drift,
		Jobs:         cp.jobs,
		Loop:         cp.retrain,
		Captures:     cp.monitor,
		PublicKeyPEM: cp.signer.PublicKeyPEM(),
		TopicPrefix:  cp.scheme.Prefix,
		BrokerURL:    cp.PublicBrokerURL,
		Metrics:      cp.metrics,

		TrustedProxies: cfg.TrustedProxies,
	}, cp.log.With("component", "api"))
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	if cfg.HTTPMiddleware != nil {
		handler = cfg.HTTPMiddleware(handler)
	}
	cp.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cp.log.With("component", "http").Handler(), slog.LevelWarn),
	}
	return cp, nil
}

// openBus creates the embedded broker or connects to the external one.
func (cp *ControlPlane) openBus(auth broker.Authenticator) error {
	if cp.cfg.BrokerURL == "" {
		emb, err := broker.NewEmbedded(broker.EmbeddedConfig{
			Addr:   cp.cfg.MQTTAddr,
			Scheme: cp.scheme,
			Auth:   auth,
		}, cp.log) // the broker names its own components
		if err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
		cp.embedded, cp.bus = emb, emb
		return nil
	}
	// The client id is the broker username when there is one: brokers
	// (Shoal's own among them) commonly tie the two together.
	clientID := externalClientID
	if u, err := url.Parse(cp.cfg.BrokerURL); err == nil && u.User.Username() != "" {
		clientID = u.User.Username()
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	ext, err := broker.DialExternal(ctx, broker.ExternalConfig{URL: cp.cfg.BrokerURL, ClientID: clientID}, cp.log)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	cp.external, cp.bus = ext, ext
	cp.log.Info("connected to external MQTT broker", "component", "mqtt", "broker", redactURL(cp.cfg.BrokerURL), "client_id", clientID)
	return nil
}

// Start makes the control plane listen (MQTT, then HTTP), subscribes the
// fleet and monitor to device topics, re-signs the desired state's
// manifests that are about to expire (RefreshManifests), republishes
// every device's desired state (the embedded broker keeps retained
// messages in memory only), then runs HTTP serving and the background
// loops (manifest refresh every Config.ManifestRefreshInterval, rollouts,
// drift, retraining) in one run group. It returns once both listeners
// accept connections. Cancelling ctx, or calling Close, ends a Start in
// progress. After an error, call Close to release what was started.
func (cp *ControlPlane) Start(ctx context.Context) error {
	cp.mu.Lock()
	switch {
	case cp.closed:
		cp.mu.Unlock()
		return errors.New("control plane: Start after Close")
	case cp.starting:
		cp.mu.Unlock()
		return errors.New("control plane: Start called twice")
	}
	cp.starting = true
	ctx, cancel := context.WithCancel(ctx)
	cp.cancelStart, cp.startDone = cancel, make(chan struct{})
	cp.mu.Unlock()
	defer func() {
		cancel()
		close(cp.startDone)
	}()

	if cp.embedded != nil {
		if err := cp.embedded.Start(); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
	}
	if err := cp.subscribe(); err != nil {
		return err
	}
	// Re-sign what expired while the control plane was down before the
	// republish, so that devices are not sent manifests they would refuse.
	// A failure is no reason not to serve: the loop tries again.
	rctx, rcancel := context.WithTimeout(ctx, refreshPassTimeout)
	err := cp.refreshManifests(rctx)
	rcancel()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("control plane: start-up interrupted: %w", context.Cause(ctx))
	}
	if err != nil {
		cp.log.Error("could not re-sign expiring deployment manifests; will try again", "component", "fleet", "err", err, "retry_in", cp.cfg.ManifestRefreshInterval)
	}
	pctx, pcancel := context.WithTimeout(ctx, dialTimeout)
	err = cp.fleet.Republish(pctx)
	pcancel()
	if err != nil {
		return fmt.Errorf("control plane: republish desired state: %w", err)
	}
	ln, err := net.Listen("tcp", cp.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("control plane: HTTP API: listen on %s: %w", cp.cfg.HTTPAddr, err)
	}

	cp.mu.Lock()
	if cp.closed || ctx.Err() != nil {
		cp.mu.Unlock()
		ln.Close()
		return errors.New("control plane: start-up interrupted: closed or cancelled")
	}
	cp.httpLn = ln
	cp.runGroup(ln)
	cp.mu.Unlock()

	base := "http://" + ln.Addr().String()
	cp.log.Info("HTTP API listening", "component", "api", "addr", ln.Addr().String(), "url", base)
	if cp.embedded != nil && cp.cfg.PublicBrokerURL == "" && isUnspecifiedHost(cp.embedded.Addr()) {
		cp.log.Warn("the MQTT broker listens on every interface, and agents are told "+cp.publicBrokerURL()+
			"; set --public-broker-url to the address agents can reach", "component", "mqtt")
	}
	cp.log.Info("agents enroll at "+base+"/v1/enroll", "component", "api", "broker_url", cp.publicBrokerURL(), "topic_prefix", cp.scheme.Prefix)
	return nil
}

// runGroup starts HTTP serving on ln and the background loops as one
// group: the first to fail ends them all (Run returns its error), and
// Close ends them before it closes the broker and the store. cp.mu is held.
func (cp *ControlPlane) runGroup(ln net.Listener) {
	gctx, stop := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(gctx)
	cp.stopGroup, cp.groupDone = stop, make(chan struct{})
	g.Go(func() error {
		if err := cp.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control plane: HTTP API stopped: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// The loops end with gctx too; requests in flight get a while.
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := cp.http.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
			// Downloads still running resume with Range later.
			cp.log.Warn("HTTP requests still running after "+shutdownTimeout.String()+"; cutting them", "component", "api")
			cp.http.Close()
		} else if err != nil {
			return fmt.Errorf("control plane: HTTP shutdown: %w", err)
		}
		return nil
	})
	g.Go(func() error { cp.refreshLoop(gctx); return nil })
	g.Go(func() error { cp.rollouts.Run(gctx, cp.cfg.RolloutInterval, rolloutMinGap); return nil })
	g.Go(func() error { cp.drift.Run(gctx, cp.cfg.DriftEvalInterval); return nil })
	g.Go(func() error { cp.retrain.Run(gctx, cp.cfg.RolloutInterval); return nil })
	go func() {
		err := g.Wait()
		if err != nil {
			cp.log.Error("control plane stopping", "err", err)
		}
		cp.mu.Lock()
		cp.groupErr = err
		cp.mu.Unlock()
		close(cp.groupDone)
	}()
}

// RefreshManifests re-signs the deployment manifests of the desired state
// that expire within 10 days (a third of the default lifetime) by the
// configured clock, keeping each manifest's own lifetime, and stores and
// publishes the desired state of the devices that use them
// (fleet.Service.Refresh). The control plane does this at Start and every
// Config.ManifestRefreshInterval; call it after Start.
func (cp *ControlPlane) RefreshManifests(ctx context.Context) error {
	cp.mu.Lock()
	closed := cp.closed
	cp.mu.Unlock()
	if closed {
		return errors.New("control plane: RefreshManifests after Close")
	}
	return cp.refreshManifests(ctx)
}

func (cp *ControlPlane) refreshManifests(ctx context.Context) error {
	before := cp.cfg.Now().Add(manifestRefreshWindow)
	res, err := cp.fleet.Refresh(ctx, before, func(env []byte) ([]byte, error) {
		env, _, err := cp.registry.Reissue(ctx, env, 0)
		return env, err
	})
	if res.Envelopes > 0 {
		cp.log.Info("deployment manifests re-signed", "component", "fleet", "manifests", res.Envelopes, "devices", res.Devices,
			"expiring_before", before.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return fmt.Errorf("control plane: re-sign deployment manifests: %w", err)
	}
	return nil
}

// ReconcileRollouts runs one pass of the rollout engine now. The control
// plane runs one every Config.RolloutInterval, and soon after devices
// report; tests with an injected clock call it after moving the clock.
func (cp *ControlPlane) ReconcileRollouts(ctx context.Context) error {
	cp.mu.Lock()
	closed := cp.closed
	cp.mu.Unlock()
	if closed {
		return errors.New("control plane: ReconcileRollouts after Close")
	}
	return cp.rollouts.Reconcile(ctx)
}

// EvaluateDrift evaluates the drift policies now: the windows that have
// closed and settled since the last evaluation are judged, and alerts
// raised (drift.Service.Evaluate). The control plane does this every
// Config.DriftEvalInterval; tests call it rather than wait.
func (cp *ControlPlane) EvaluateDrift(ctx context.Context) error {
	cp.mu.Lock()
	closed := cp.closed
	cp.mu.Unlock()
	if closed {
		return errors.New("control plane: EvaluateDrift after Close")
	}
	return cp.drift.Evaluate(ctx)
}

// refreshLoop runs RefreshManifests every ManifestRefreshInterval until
// ctx ends.
func (cp *ControlPlane) refreshLoop(ctx context.Context) {
	t := time.NewTicker(cp.cfg.ManifestRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, refreshPassTimeout)
		err := cp.refreshManifests(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			cp.log.Error("could not re-sign expiring deployment manifests; will try again", "component", "fleet", "err", err, "retry_in", cp.cfg.ManifestRefreshInterval)
		}
	}
}

func (cp *ControlPlane) subscribe() error {
	subs := []struct {
		kind topics.Kind
		h    func(topic string, payload []byte)
	}{
		{topics.Reported, cp.handleReported},
		{topics.Status, cp.handleStatus},
		{topics.Telemetry, cp.handleTelemetry},
	}
	for _, s := range subs {
		if err := cp.bus.Subscribe(cp.scheme.AllDevices(s.kind), s.h); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
	}
	return nil
}

// handleReported stores a device's reported state and asks the rollout
// engine for a pass: a device moving on may move a rollout on.
func (cp *ControlPlane) handleReported(topic string, payload []byte) {
	cp.fleet.HandleReported(topic, payload)
	cp.rollouts.Kick()
}

// handleStatus stores a device's online status; a device coming online
// may count for a rollout stage.
func (cp *ControlPlane) handleStatus(topic string, payload []byte) {
	cp.fleet.HandleStatus(topic, payload)
	cp.rollouts.Kick()
}

// handleTelemetry marks the device as seen and ingests its batch.
func (cp *ControlPlane) handleTelemetry(topic string, payload []byte) {
	if id, _, err := cp.scheme.Parse(topic); err == nil {
		cp.fleet.Touch(id)
	}
	cp.monitor.HandleTelemetry(topic, payload)
}

// Run starts the control plane if Start has not been called, serves until
// ctx ends or the run group fails, then shuts down (Close). It returns nil
// after a shutdown asked for by ctx, or the error that stopped it.
func (cp *ControlPlane) Run(ctx context.Context) error {
	cp.mu.Lock()
	starting, done := cp.starting, cp.groupDone
	cp.mu.Unlock()
	if !starting {
		if err := cp.Start(ctx); err != nil {
			if ctx.Err() != nil {
				// Stopped while starting (SIGTERM at start-up): a clean exit.
				return cp.Close()
			}
			return errors.Join(err, cp.Close())
		}
		cp.mu.Lock()
		done = cp.groupDone
		cp.mu.Unlock()
	}
	if done == nil {
		return errors.Join(errors.New("control plane: Run after a failed or unfinished Start"), cp.Close())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case <-done:
		cp.mu.Lock()
		runErr = cp.groupErr
		cp.mu.Unlock()
	}
	cp.log.Info("control plane shutting down")
	return errors.Join(runErr, cp.Close())
}

// Close ends a Start in progress, stops the run group (the background
// loops, and HTTP serving, waiting up to 10s for requests in flight), then
// closes the broker and the store. It may be called more than once.
func (cp *ControlPlane) Close() error {
	cp.closeOnce.Do(func() {
		cp.mu.Lock()
		cp.closed = true
		cancelStart, startDone := cp.cancelStart, cp.startDone
		cp.mu.Unlock()
		if cancelStart != nil {
			cancelStart()
			<-startDone
		}
		cp.mu.Lock()
		stop, done := cp.stopGroup, cp.groupDone
		cp.mu.Unlock()
		var errs []error
		if stop != nil {
			// The loops use the store and the broker: they end first.
			// What ended the group is Run's to return (and logged).
			stop()
			<-done
		}
		errs = append(errs, cp.closeParts())
		cp.closeErr = errors.Join(errs...)
		cp.log.Info("control plane stopped")
	})
	return cp.closeErr
}

// closeParts stops the training jobs, closes the broker, then the store:
// whatever New opened.
func (cp *ControlPlane) closeParts() error {
	var errs []error
	if cp.jobs != nil {
		// Running jobs are stopped (and marked failed) before the store
		// they write to closes.
		if err := cp.jobs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("control plane: stop training jobs: %w", err))
		}
	}
	if cp.embedded != nil {
		if err := cp.embedded.Close(); err != nil {
			errs = append(errs, fmt.Errorf("control plane: close MQTT broker: %w", err))
		}
	}
	if cp.external != nil {
		if err := cp.external.Close(); err != nil {
			errs = append(errs, fmt.Errorf("control plane: disconnect from MQTT broker: %w", err))
		}
	}
	if cp.store != nil {
		if err := cp.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("control plane: close store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// HTTPAddr returns the API's address: the one listened on after Start (with
// the chosen port), the configured one before.
func (cp *ControlPlane) HTTPAddr() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.httpAddrLocked()
}

func (cp *ControlPlane) httpAddrLocked() string {
	if cp.httpLn != nil {
		return cp.httpLn.Addr().String()
	}
	return cp.cfg.HTTPAddr
}

// URL returns the API's base URL, http://{HTTPAddr}.
func (cp *ControlPlane) URL() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.urlLocked()
}

func (cp *ControlPlane) urlLocked() string { return "http://" + cp.httpAddrLocked() }

// MQTTAddr returns the embedded broker's address (with the chosen port
// after Start), or the external broker's URL without credentials.
func (cp *ControlPlane) MQTTAddr() string {
	if cp.embedded != nil {
		return cp.embedded.Addr()
	}
	return redactURL(cp.cfg.BrokerURL)
}

// PublicBrokerURL returns the broker URL agents are told at enrollment.
func (cp *ControlPlane) PublicBrokerURL() string { return cp.publicBrokerURL() }

func (cp *ControlPlane) publicBrokerURL() string {
	switch {
	case cp.cfg.PublicBrokerURL != "":
		return cp.cfg.PublicBrokerURL
	case cp.embedded != nil:
		return "tcp://" + cp.embedded.Addr()
	}
	return redactURL(cp.cfg.BrokerURL)
}

// TopicPrefix returns the MQTT topic prefix in use.
func (cp *ControlPlane) TopicPrefix() string { return cp.scheme.Prefix }

// PublicKeyPEM returns the signing public key: the trust root agents pin.
func (cp *ControlPlane) PublicKeyPEM() []byte { return cp.signer.PublicKeyPEM() }

// deviceAuth forwards the embedded broker's credential checks to the fleet,
// which is created after the broker.
type deviceAuth struct {
	mu sync.RWMutex
	a  broker.Authenticator
}

var _ broker.Authenticator = (*deviceAuth)(nil)

func (d *deviceAuth) set(a broker.Authenticator) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a = a
}

// Authenticate refuses everyone until the fleet is plugged in.
func (d *deviceAuth) Authenticate(username, password string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.a != nil && d.a.Authenticate(username, password)
}

// metrics are what GET /metrics adds to the process's figures: ingest
// counters, all atomics (no store reads per scrape).
func (cp *ControlPlane) metrics() []procstats.Metric {
	t, d := cp.monitor.Stats(), cp.fleet.Stats()
	c := func(name, help string, v uint64) procstats.Metric {
		return procstats.Metric{Name: name, Help: help, Kind: procstats.Counter, Value: float64(v)}
	}
	m := []procstats.Metric{
		c("shoal_telemetry_batches_total", "Telemetry batches stored and acknowledged, resent ones included.", t.Batches),
		c("shoal_telemetry_records_total", "Telemetry records stored for the first time.", t.Records),
		c("shoal_telemetry_duplicate_records_total", "Telemetry records received again and skipped.", t.DuplicateRecords),
		c("shoal_telemetry_rejected_total", "Telemetry batches dropped unacknowledged: malformed, too large, inconsistent, or not stored.",
			t.BadTopic+t.TooLarge+t.Malformed+t.BadSchema+t.WrongDevice+t.BadBatch+t.StoreErrors),
		c("shoal_telemetry_ack_errors_total", "Telemetry batches stored whose Ack could not be published.", t.AckErrors),
		c("shoal_device_messages_total", "Reported-state and status messages stored.", d.Accepted),
		c("shoal_device_messages_rejected_total", "Reported-state and status messages dropped: malformed, too large, unknown device, or not stored.",
			d.BadTopic+d.TooLarge+d.Malformed+d.BadSchema+d.WrongDevice+d.UnknownDevice+d.StoreErrors),
	}
	m = append(m,
		c("shoal_telemetry_unaggregated_records_total", "Telemetry records stored but in no per-version aggregate (more versions in a batch than the bound).", t.Unaggregated),
		c("shoal_data_stats_merged_total", "Data statistics of telemetry records merged into every drift window aggregate of theirs.", t.StatsMerged),
		c("shoal_data_stats_rejected_total", "Data statistics not merged somewhere: invalid, of another shape than the window's, or over the batch bound.",
			t.StatsInvalid+t.StatsMismatched+t.StatsOverLimit),
	)
	rs := cp.rollouts.Stats()
	m = append(m,
		c("shoal_rollout_passes_total", "Passes of the rollout engine over the running rollouts.", rs.Passes),
		procstats.Metric{Name: "shoal_rollout_pass_seconds_total", Help: "Time spent in rollout engine passes.", Kind: procstats.Counter, Value: rs.PassTime.Seconds()})
	if cp.embedded != nil {
		b := cp.embedded.Stats()
		m = append(m, c("shoal_mqtt_refused_total", "MQTT connects, publishes and subscriptions the embedded broker refused.",
			b.BadCredentials+b.ClientIDRefused+b.WillRefused+b.PublishRefused+b.SubscribeRefused))
	}
	return m
}
