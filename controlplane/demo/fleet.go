package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/controlplane"
	"github.com/shoalfleet/shoal/controlplane/client"
)

// A failure is a part of the fleet whose Run returned while the demo still
// needed it.
type failure struct {
	who string
	err error
}

func (f *failure) Error() string {
	return fmt.Sprintf("the demo stopped: %s stopped by itself: %v", f.who, f.err)
}

func (f *failure) Unwrap() error { return f.err }

// runner runs Run loops in goroutines until stop. One that returns before
// stop asks it to is a failure: it is reported to fail (which ends the
// demo) and kept for Err.
type runner struct {
	ctx    context.Context
	cancel context.CancelFunc
	fail   context.CancelCauseFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	stopping bool
	failures []error // Runs that returned by themselves
	stopErrs []error // errors Runs returned when stopped
}

// newRunner returns a runner whose Runs' context ends only with stop, not
// with the demo's: the fleet stops in order, agents first.
func newRunner(fail context.CancelCauseFunc) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &runner{ctx: ctx, cancel: cancel, fail: fail}
}

// Go runs run(ctx) in a goroutine; who names it in errors.
func (r *runner) Go(who string, run func(context.Context) error) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := run(r.ctx)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopping {
			if err != nil {
				r.stopErrs = append(r.stopErrs, fmt.Errorf("%s: %w", who, err))
			}
			return
		}
		if err == nil {
			err = errors.New("Run returned nil")
		}
		f := &failure{who: who, err: err}
		r.failures = append(r.failures, f)
		r.fail(f)
	}()
}

// stop ends every Run, waits for them, and returns the errors they
// returned on the way out.
func (r *runner) stop() error {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.stopErrs...)
}

// Err returns the failures: the Runs that returned by themselves.
func (r *runner) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.failures...)
}

// fleet is the demo's control plane and agents, all in this process.
type fleet struct {
	cfg *Config
	dir string
	log *slog.Logger

	cp       *controlplane.ControlPlane
	c        *client.Client
	cpRuns   *runner
	agents   []*fleetAgent
	agentRun *runner
}

// fleetAgent is one of the demo's agents.
type fleetAgent struct {
	id  string
	a   *agent.Agent
	url string // its local API
	api *localclient.Client
}

// startControlPlane starts the control plane (embedded broker, Badger
// store in dir) and its Run loop.
func startControlPlane(ctx context.Context, cfg *Config, dir string, log *slog.Logger, fail context.CancelCauseFunc) (*fleet, error) {
	f := &fleet{cfg: cfg, dir: dir, log: log, cpRuns: newRunner(fail), agentRun: newRunner(fail)}
	cp, err := controlplane.New(controlplane.Config{
		DataDir:           filepath.Join(dir, "controlplane"),
		HTTPAddr:          cfg.HTTPAddr,
		MQTTAddr:          cfg.MQTTAddr,
		ONNXRuntimeLib:    cfg.ONNXRuntimeLib,
		DriftWindow:       driftWindow,
		DriftSettle:       driftSettle,
		DriftEvalInterval: time.Second,
		Logger:            log.With("component", "controlplane"),
	})
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	f.cp = cp
	if err := cp.Start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start control plane: %w", err), cp.Close())
	}
	if f.c, err = client.New(cp.URL()); err != nil {
		return nil, errors.Join(err, cp.Close())
	}
	f.cpRuns.Go("the control plane", cp.Run)
	return f, nil
}

// addAgents enrolls n agents, each with its own one-time token, and
// starts their Run loops.
func (f *fleet) addAgents(ctx context.Context, n int) error {
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("demo-%02d", i)
		tok, err := f.c.CreateToken(ctx, time.Hour)
		if err != nil {
			return fmt.Errorf("create an enrollment token for %s: %w", id, err)
		}
		a, err := agent.New(agent.Config{
			DataDir:         filepath.Join(f.dir, "agents", id),
			ServerURL:       f.cp.URL(),
			DeviceID:        id,
			EnrollToken:     agent.Secret(tok.Token),
			APIAddr:         "127.0.0.1:0",
			ONNXRuntimeLib:  f.cfg.ONNXRuntimeLib,
			TelemetryWindow: time.Second,
			StatsWindow:     time.Second,
			IntraOpThreads:  1,
			Logger:          f.log.With("component", "agent", "device", id),
		})
		if err != nil {
			return fmt.Errorf("start agent %s: %w", id, err)
		}
		fa := &fleetAgent{id: id, a: a, url: "http://" + a.APIAddr()}
		if fa.api, err = localclient.New(fa.url); err != nil {
			return errors.Join(err, a.Close())
		}
		f.agents = append(f.agents, fa)
		f.agentRun.Go("agent "+id, a.Run)
	}
	return nil
}

// stopAgents stops the agents (each flushes its telemetry to the control
// plane on the way out) and closes them.
func (f *fleet) stopAgents() error {
	errs := []error{f.agentRun.stop()}
	for _, a := range f.agents {
		if err := a.a.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close agent %s: %w", a.id, err))
		}
	}
	return errors.Join(errs...)
}

// stopControlPlane stops the control plane; its Run closes it.
func (f *fleet) stopControlPlane() error {
	return f.cpRuns.stop()
}

// Err returns the failures of the fleet's Run loops.
func (f *fleet) Err() error {
	return errors.Join(f.agentRun.Err(), f.cpRuns.Err())
}
