// Package agent is the Shoal device agent: it serves the device's models
// to local applications over HTTP (Open Inference Protocol), keeps them at
// the control plane's desired state (verified, self-tested, swapped in
// atomically), and reports its state and telemetry over MQTT, buffering
// telemetry on disk while offline.
//
// An Agent is made with New, runs with Run and is released with Close.
// New opens everything local (data directory, model store, outbox, ONNX
// Runtime, the local API's listener) and loads the active models from
// disk, so that the agent serves at once, with or without a network. Run
// enrolls if the device never has, then connects and reconciles until its
// context ends; on the way out it stops the local API, flushes telemetry
// into the outbox and, if connected, briefly tries to get it acknowledged.
// Close publishes the offline status, disconnects and closes the stores
// and ONNX sessions.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/link"
	"github.com/shoalfleet/shoal/agent/internal/localapi"
	"github.com/shoalfleet/shoal/agent/internal/modelstore"
	"github.com/shoalfleet/shoal/agent/internal/outbox"
	"github.com/shoalfleet/shoal/agent/internal/reconcile"
	"github.com/shoalfleet/shoal/agent/internal/telemetry"
	"github.com/shoalfleet/shoal/internal/buildinfo"
	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/procstats"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
)

// Shutdown bounds.
const (
	// httpShutdownTimeout bounds waiting for in-flight API requests.
	httpShutdownTimeout = 5 * time.Second
	// flushTimeout bounds waiting for the control plane to ack the last
	// telemetry on the way out; what is not acked stays in the outbox.
	flushTimeout = 3 * time.Second
	// enrollRetryMax caps the wait between enrollment attempts.
	enrollRetryMax = time.Minute
)

// Agent is one running device agent.
type Agent struct {
	cfg Config
	log *slog.Logger

	id       *identity // nil until enrolled
	store    *modelstore.Store
	models   *inference.Set
	outbox   *outbox.Outbox
	agg      *telemetry.Aggregator
	listener net.Listener
	api      *http.Server

	sender atomic.Pointer[outbox.Sender] // set once Run has connected

	mu      sync.Mutex
	link    *link.Link
	running bool
	cancel  context.CancelFunc // cancels Run
	done    chan struct{}      // closed when Run returns
	closed  bool
}

// New opens the agent's local state and loads its models; it does not
// touch the network. A device that never enrolled needs cfg.ServerURL,
// cfg.DeviceID and cfg.EnrollToken (enrollment happens in Run).
func New(cfg Config) (_ *Agent, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, models: inference.NewSet()}
	defer func() {
		if err != nil {
			a.closeLocal()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	id, enrolled, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	switch {
	case enrolled && cfg.DeviceID != "" && cfg.DeviceID != id.DeviceID:
		return nil, fmt.Errorf("data directory %s belongs to device %q, but --device-id says %q; use another --data-dir for another device", cfg.DataDir, id.DeviceID, cfg.DeviceID)
	case enrolled:
		a.id = id
		if a.cfg.ServerURL == "" {
			a.cfg.ServerURL = id.ServerURL
		}
		if len(cfg.Labels) > 0 || cfg.Group != "" {
			a.log.Info("this device is enrolled already; its labels and group are only sent when it enrolls, so change them on the control plane",
				"device", id.DeviceID, "labels", cfg.Labels, "group", cfg.Group)
		}
	case cfg.EnrollToken == "":
		return nil, fmt.Errorf("this device is not enrolled yet (no %s) and no enrollment token was given: create one on the control plane with `shoal token create`, then pass --server, --device-id and --enroll-token",
			filepath.Join(cfg.DataDir, identityFile))
	case cfg.ServerURL == "":
		return nil, errors.New("this device is not enrolled yet: pass --server (the control plane's URL, e.g. http://10.0.0.1:8080) to enroll")
	case cfg.DeviceID == "":
		return nil, errors.New("this device is not enrolled yet: pass --device-id (letters, digits, '.', '_', '-') to enroll")
	}

	lib, err := onnxrt.Init(cfg.ONNXRuntimeLib)
	if err != nil {
		return nil, err
	}
	a.log.Info("ONNX Runtime loaded", "lib", lib, "version", onnxrt.Version)

	if a.store, err = modelstore.Open(cfg.DataDir, a.log); err != nil {
		return nil, err
	}
	a.loadModels()

	a.outbox, err = outbox.Open(filepath.Join(cfg.DataDir, "outbox"), outbox.Options{
		MaxBytes:     cfg.OutboxMaxBytes,
		SyncWrites:   cfg.SyncWrites,
		SyncInterval: cfg.OutboxSyncInterval,
		MinFreeBytes: cfg.OutboxMinFreeBytes,
	}, a.log.With("component", "outbox"))
	if err != nil {
		return nil, err
	}
	maxRecord := outbox.MaxRecordBytes
	if cfg.OutboxMaxBytes > 0 {
		maxRecord = int(min(cfg.OutboxMaxBytes, outbox.MaxRecordBytes))
	}
	a.agg = telemetry.NewAggregator(telemetry.Config{
		Window: cfg.TelemetryWindow, Appended: a.notifySender, Now: cfg.Now,
		StatsWindow: cfg.StatsWindow, Stats: a.servingStats, MaxRecordBytes: maxRecord,
	}, a.outbox, a.log.With("component", "telemetry"))

	a.listener, err = net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("local API: %w (is another agent running? choose another --api-addr)", err)
	}
	handler := localapi.New(a.models, a.agg, localapi.Config{Metrics: a.metrics, Capture: a.agg}, a.log.With("component", "localapi"))
	a.api = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	return a, nil
}

// loadModels verifies and loads every active model from disk. inference.Load
// hashes the very bytes it loads against the recorded SHA-256, which is
// modelstore.Verify without reading the file twice. A model that fails is
// logged and left out (so it is not reported active); the reconciler
// downloads it again once the desired state arrives.
func (a *Agent) loadModels() {
	for _, name := range a.store.Names() {
		ref, path, _ := a.store.Active(name)
		m, err := inference.Load(path, inference.Ref{Name: name, Version: ref.Version, SHA256: ref.SHA256, ReleaseSequence: ref.ReleaseSequence},
			onnxrt.Options{IntraOpThreads: a.cfg.IntraOpThreads})
		if err != nil {
			a.log.Error("active model is corrupt or does not load; not serving it until it is downloaded again", "model", name, "version", ref.Version, "err", err)
			continue
		}
		a.models.Swap(m)
		a.log.Info("serving", "model", name, "version", ref.Version)
	}
}

// servingStats lists the serving versions that keep data statistics, for
// the telemetry aggregator.
func (a *Agent) servingStats() []telemetry.VersionStats {
	vs := a.models.Stats()
	out := make([]telemetry.VersionStats, len(vs))
	for i, v := range vs {
		out[i] = telemetry.VersionStats{Model: v.Ref.Name, Version: v.Ref.Version, Stats: v.Stats}
	}
	return out
}

// metrics are what the local API's GET /metrics adds to the process's
// figures and its prediction counters.
func (a *Agent) metrics() []procstats.Metric {
	connected := 0.0
	if a.connected() {
		connected = 1
	}
	return []procstats.Metric{
		{Name: "shoal_agent_outbox_records", Help: "Telemetry records queued, not yet acknowledged by the control plane.", Kind: procstats.Gauge, Value: float64(a.outbox.Len())},
		{Name: "shoal_agent_outbox_bytes", Help: "Encoded size of the queued telemetry records.", Kind: procstats.Gauge, Value: float64(a.outbox.Bytes())},
		{Name: "shoal_agent_data_stats_dropped_total", Help: "Windows of a model version's data statistics left out of telemetry for making the record too large.", Kind: procstats.Counter, Value: float64(a.agg.StatsDropped())},
		{Name: "shoal_agent_captures_dropped_total", Help: "Captured predictions and feedback labels dropped for being over a telemetry record's bounds.", Kind: procstats.Counter, Value: float64(a.agg.CapturesDropped())},
		{Name: "shoal_agent_mqtt_connected", Help: "1 while connected to the MQTT broker.", Kind: procstats.Gauge, Value: connected},
	}
}

// APIAddr returns the address the local API listens on.
func (a *Agent) APIAddr() string { return a.listener.Addr().String() }

// DeviceID returns the device's id (the enrolled one, once enrolled).
func (a *Agent) DeviceID() string {
	if a.id != nil {
		return a.id.DeviceID
	}
	return a.cfg.DeviceID
}

func (a *Agent) notifySender() {
	if s := a.sender.Load(); s != nil {
		s.Notify()
	}
}

// Run serves, enrolls if needed, connects and reconciles until ctx is done
// or a component fails; then it shuts the local API down and flushes
// telemetry. It returns nil on a clean stop. Call it once, then Close.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	switch {
	case a.closed:
		a.mu.Unlock()
		return errors.New("agent: Run after Close")
	case a.running:
		a.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	a.running, a.cancel, a.done = true, cancel, make(chan struct{})
	a.mu.Unlock()
	defer close(a.done)
	defer cancel()

	// The transport (MQTT link, telemetry sender) outlives the rest so
	// that the last telemetry can still be sent and acked on the way out.
	transport := newRunGroup(context.Background())
	core := newRunGroup(ctx)
	core.Go("local API", func(ctx context.Context) error {
		if err := a.api.Serve(a.listener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	core.Go("telemetry", a.agg.Run)
	a.log.Info("local API listening", "addr", a.APIAddr(), "models", a.models.Names())

	err := a.start(core.ctx, core, transport)
	if err == nil {
		<-core.ctx.Done()
	}

	// Shutdown: stop accepting requests, then flush.
	sctx, scancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	if serr := a.api.Shutdown(sctx); serr != nil {
		a.log.Warn("local API did not shut down cleanly", "err", serr)
	}
	scancel()
	core.cancel()
	if gerr := core.Wait(); err == nil {
		err = gerr
	}
	if ferr := a.agg.Flush(); ferr != nil {
		a.log.Warn("could not flush the last telemetry window", "err", ferr)
	}
	if s := a.sender.Load(); s != nil && a.connected() {
		fctx, fcancel := context.WithTimeout(context.Background(), flushTimeout)
		if ferr := s.Flush(fctx); ferr != nil {
			a.log.Info("telemetry stays queued for the next start", "err", ferr)
		}
		fcancel()
	}
	transport.cancel()
	if terr := transport.Wait(); err == nil {
		err = terr
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// start enrolls if needed and starts the network side.
func (a *Agent) start(ctx context.Context, core, transport *runGroup) error {
	if a.id == nil {
		id, err := a.enroll(ctx)
		if err != nil {
			return err
		}
		a.id = id
	}
	id := a.id
	verifier, err := trust.NewVerifier([]byte(id.TrustPublicKeyPEM))
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	scheme := topics.New(id.TopicPrefix)
	brokerURL := id.BrokerURL
	if a.cfg.BrokerURL != "" {
		brokerURL = a.cfg.BrokerURL
	}
	lk, err := link.New(link.Config{
		BrokerURL:    brokerURL,
		DeviceID:     id.DeviceID,
		Username:     id.MQTTUsername,
		Password:     id.MQTTPassword,
		Topics:       scheme,
		AgentVersion: buildinfo.Version,
		Now:          a.cfg.Now,
	}, a.log)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.link = lk
	a.mu.Unlock()

	sender := outbox.NewSender(a.outbox, outbox.SenderConfig{DeviceID: id.DeviceID, Topic: scheme.Device(id.DeviceID, topics.Telemetry), Now: a.cfg.Now}, lk, a.log.With("component", "sender"))
	a.sender.Store(sender)
	reports := newReportPublisher(lk, scheme.Device(id.DeviceID, topics.Reported), a.log.With("component", "report"))
	rec, err := reconcile.New(reconcile.Config{
		DeviceID:     id.DeviceID,
		AgentVersion: buildinfo.Version,
		Profile:      a.cfg.Profile,
		ServerURL:    a.cfg.ServerURL,
		Verifier:     verifier,
		Store:        a.store,
		Models:       a.models,
		ORT:          onnxrt.Options{IntraOpThreads: a.cfg.IntraOpThreads},
		NoDataStats:  a.cfg.StatsWindow < 0,
		Report:       reports.Set,
		Now:          a.cfg.Now,

		HealthMinPredictions: a.cfg.HealthMinPredictions,
		HealthMinTime:        a.cfg.HealthMinTime,
	}, a.log)
	if err != nil {
		return err
	}

	ackLog := lograte.New(time.Minute, 1, nil)
	lk.OnDesired(rec.SetDesired)
	lk.OnAck(func(p []byte) {
		if err := sender.HandleAckPayload(p); err != nil {
			ackLog.Log(a.log, slog.LevelWarn, "", "dropped a malformed ack", "err", err)
		}
	})
	lk.OnConnectionChange(func(up bool) {
		sender.SetConnected(up)
		reports.SetConnected(up)
		if up {
			a.log.Info("online", "broker", brokerURL)
		} else {
			a.log.Info("offline; serving and buffering telemetry until the broker is back", "broker", brokerURL)
		}
	})

	transport.Go("mqtt link", lk.Run)
	transport.Go("telemetry sender", sender.Run)
	core.Go("reconciler", rec.Run)
	core.Go("report publisher", reports.Run)
	// A transport failure must stop the agent too.
	go func() {
		select {
		case <-transport.failed:
			core.cancel()
		case <-core.ctx.Done():
		}
	}()
	return nil
}

// enroll exchanges the token for an identity, retrying while the control
// plane cannot be reached, and stores it.
func (a *Agent) enroll(ctx context.Context) (*identity, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	logs := lograte.New(time.Minute, 1, nil)
	delay := time.Second
	for {
		id, err := enroll(ctx, client, a.cfg.ServerURL, enrollment{
			DeviceID: a.cfg.DeviceID, Token: a.cfg.EnrollToken, Profile: a.cfg.Profile,
			Labels: a.cfg.Labels, Group: a.cfg.Group,
		})
		if err == nil {
			if err := storeIdentity(a.cfg.DataDir, id); err != nil {
				return nil, err
			}
			a.log.Info("enrolled", "device", id.DeviceID, "server", a.cfg.ServerURL, "broker", id.BrokerURL)
			return id, nil
		}
		var refused *enrollError
		if errors.As(err, &refused) {
			return nil, err
		}
		logs.Log(a.log, slog.LevelWarn, "", "cannot reach the control plane to enroll; retrying", "server", a.cfg.ServerURL, "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, enrollRetryMax)
	}
}

func (a *Agent) connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.link != nil && a.link.Connected()
}

// Close stops Run if it is still running, publishes the offline status,
// disconnects from the broker, and closes the outbox and every ONNX
// session (each after its in-flight predictions).
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	cancel, done, lk := a.cancel, a.done, a.link
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	var errs []error
	if lk != nil {
		errs = append(errs, lk.Close())
	}
	errs = append(errs, a.closeLocal())
	return errors.Join(errs...)
}

// closeLocal closes what New opened.
func (a *Agent) closeLocal() error {
	var errs []error
	if a.listener != nil {
		if err := a.listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if a.outbox != nil {
		errs = append(errs, a.outbox.Close())
	}
	if a.models != nil {
		a.models.Close()
	}
	return errors.Join(errs...)
}
