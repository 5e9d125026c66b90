package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
)

const (
	modelName = "soak-mlp"
	features  = 8
	// Bounds on the harness's waits.
	readyTimeout    = time.Minute
	convergeTimeout = 5 * time.Minute
	stopTimeout     = 30 * time.Second
	settleTimeout   = 90 * time.Second
	drainTimeout    = time.Minute
)

type soak struct {
	o        *options
	dir, bin string

	cpURL string
	cp    *proc
	c     *client.Client
	hc    *http.Client // /metrics scrapes and health checks
	load  *http.Client // predictions
	ctl   context.Context

	agents   []*agent
	start    time.Time // t=0: the load starts
	version  int
	loadStop chan struct{}
	loadWG   sync.WaitGroup
	trackWG  sync.WaitGroup

	csvFile *os.File
	csv     *csv.Writer

	mu        sync.Mutex // guards what the trackers write
	cpSamples []sample
	restarts  []*restartEvent
	updates   []*updateEvent
	crashes   []string
	lastTelem int64
}

type agent struct {
	id   string
	api  string              // http://host:port
	ctl  *localclient.Client // health checks, on the scrapes' connection
	load *localclient.Client // predictions, on their own
	p    *proc

	ok, failed, modelFailed atomic.Uint64
	errMu                   sync.Mutex
	lastErr                 string
	samples                 []sample
}

type sample struct {
	at time.Duration
	u  usage
}

type restartEvent struct {
	at          time.Duration
	stopTook    time.Duration // SIGTERM until the old process exited
	down        time.Duration // SIGTERM until the new one answered
	exitErr     error
	killed      bool
	reconnected time.Duration // after the new one answered, until every agent was connected; -1 never
}

type updateEvent struct {
	version   int
	at        time.Duration
	converged time.Duration // -1 not (yet)
	status    string        // when not converged: how far it got
}

func (s *soak) elapsed() time.Duration {
	if s.start.IsZero() {
		return 0
	}
	return time.Since(s.start)
}

// run is the whole soak; it returns the exit code.
func (s *soak) run(ctx context.Context) int {
	s.ctl = ctx
	// One connection per agent for the predictions and one for the
	// scrapes, each kept open: the agents' goroutine and fd counts then
	// do not move with the harness's connection reuse.
	transport := func() *http.Transport {
		return &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Hour}
	}
	s.hc = &http.Client{Timeout: 30 * time.Second, Transport: transport()}
	s.load = &http.Client{Timeout: 30 * time.Second, Transport: transport()}
	s.loadStop = make(chan struct{})
	if err := s.setup(ctx); err != nil {
		logf("set-up failed: %v", err)
		s.abort()
		return 1
	}
	code, err := s.loop(ctx)
	if err != nil {
		if ctx.Err() != nil {
			logf("interrupted: stopping every process")
		} else {
			logf("stopped: %v", err)
		}
		s.abort()
		s.summary(nil)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return code
}

func (s *soak) setup(ctx context.Context) error {
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return err
	}
	s.cpURL = "http://" + httpAddr
	s.cp = &proc{name: "control plane", bin: filepath.Join(s.bin, "shoal"), log: filepath.Join(s.dir, "cp.log"),
		args: []string{"serve", "--data-dir", filepath.Join(s.dir, "cp"), "--http-addr", httpAddr, "--mqtt-addr", mqttAddr}}
	if err := s.cp.start(); err != nil {
		return err
	}
	if err := s.waitCP(ctx); err != nil {
		return err
	}
	if s.c, err = client.New(s.cpURL); err != nil {
		return err
	}
	logf("control plane up: %s, MQTT %s (pid %d)", s.cpURL, mqttAddr, s.cp.pid())

	for i := 1; i <= s.o.agents; i++ {
		id := fmt.Sprintf("soak-%03d", i)
		tok, err := s.c.CreateToken(ctx, time.Hour)
		if err != nil {
			return fmt.Errorf("create token: %w", err)
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		dataDir := filepath.Join(s.dir, "agents", id)
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return err
		}
		a := &agent{id: id, api: "http://" + addr}
		if a.ctl, err = localclient.New(a.api, localclient.WithHTTPClient(s.hc)); err != nil {
			return err
		}
		if a.load, err = localclient.New(a.api, localclient.WithHTTPClient(s.load)); err != nil {
			return err
		}
		a.p = &proc{name: "agent " + id, bin: filepath.Join(s.bin, "shoal-agent"), log: filepath.Join(dataDir, "agent.log"),
			args: []string{"run", "--data-dir", dataDir, "--server", s.cpURL, "--device-id", id, "--enroll-token", tok.Token,
				"--api-addr", addr, "--telemetry-window", s.o.window.String(), "--intra-op-threads", "1"}}
		if err := a.p.start(); err != nil {
			return err
		}
		s.agents = append(s.agents, a)
	}
	for _, a := range s.agents {
		if err := waitFor(ctx, readyTimeout, a.ctl.Live); err != nil {
			return fmt.Errorf("agent %s did not come up: %w\n%s", a.id, err, a.p.tail(2000))
		}
	}
	logf("%d agents started and enrolled (one process each)", len(s.agents))

	if err := s.pushAndDeploy(ctx); err != nil {
		return err
	}
	ev := s.updates[0]
	s.trackConvergence(ctx, ev, time.Now())
	if ev.converged < 0 {
		return fmt.Errorf("the first model did not reach every agent: %s", ev.status)
	}
	logf("%s v1 active on all %d agents after %s", modelName, len(s.agents), ev.converged.Round(100*time.Millisecond))

	f, err := os.Create(s.o.out)
	if err != nil {
		return err
	}
	s.csvFile, s.csv = f, csv.NewWriter(f)
	s.csv.Write([]string{"elapsed_s", "time", "process", "pid", "rss_bytes", "rss_anon_bytes", "heap_inuse_bytes", "goroutines", "fds", "threads",
		"predictions_ok", "agent_predictions_total", "outbox_records", "mqtt_connected", "cp_telemetry_predictions"})
	return nil
}

// waitCP waits until the control plane's API answers.
func (s *soak) waitCP(ctx context.Context) error {
	if err := waitFor(ctx, readyTimeout, httpOK(s.hc, s.cpURL+"/api/v1/trust/public-key")); err != nil {
		return fmt.Errorf("control plane did not come up: %w\n%s", err, s.cp.tail(3000))
	}
	return nil
}

// waitFor calls check until it returns nil, for up to timeout.
func waitFor(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpOK is a check that GET url answers 200.
func httpOK(hc *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// model is version v of the soak's model: an MLP 8-16-3 classifier whose
// weights depend on v.
func model(v int) ([]byte, error) {
	return onnxbuild.MLP(onnxbuild.MLPSpec{
		Name:       modelName,
		Input:      "x",
		Layers:     onnxbuild.RandomLayers(uint64(v), features, 16, 3),
		Classifier: true,
	})
}

// pushAndDeploy pushes the next model version and deploys it to every
// device; the convergence is tracked by the caller.
func (s *soak) pushAndDeploy(ctx context.Context) error {
	s.version++
	v := strconv.Itoa(s.version)
	data, err := model(s.version)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := s.c.PushModel(ctx, modelName, v, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("push %s v%s: %w", modelName, v, err)
	}
	if _, err := s.c.Deploy(ctx, modelName, v, nil); err != nil {
		return fmt.Errorf("deploy %s v%s: %w", modelName, v, err)
	}
	s.mu.Lock()
	s.updates = append(s.updates, &updateEvent{version: s.version, at: s.elapsed(), converged: -1})
	s.mu.Unlock()
	return nil
}

// trackConvergence polls the devices until every one reports the version
// active, or convergeTimeout passes, or ctx ends.
func (s *soak) trackConvergence(ctx context.Context, ev *updateEvent, since time.Time) {
	v := strconv.Itoa(ev.version)
	deadline := since.Add(convergeTimeout)
	for {
		status := "no answer from the control plane"
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		devs, err := s.c.Devices(qctx)
		cancel()
		if err == nil {
			active, phases := 0, map[string]int{}
			for _, d := range devs {
				for _, m := range d.Models {
					if m.Name != modelName {
						continue
					}
					if m.ActiveVersion == v && m.Phase == "active" {
						active++
					}
					phases[m.Phase]++
				}
			}
			if active == len(s.agents) {
				s.mu.Lock()
				ev.converged, ev.status = time.Since(since), ""
				s.mu.Unlock()
				return
			}
			status = fmt.Sprintf("%d/%d active at v%s (phases %v)", active, len(s.agents), v, phases)
		}
		s.mu.Lock()
		ev.status = status
		s.mu.Unlock()
		if ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// loop drives the load and the schedule until -duration, then finishes.
func (s *soak) loop(ctx context.Context) (int, error) {
	s.start = time.Now()
	for _, a := range s.agents {
		s.loadWG.Add(1)
		go s.drive(a)
	}
	logf("load: %g predictions/s on each of %d agents; sample every %s, restart the control plane every %s, new model every %s, for %s (warm-up %s)",
		s.o.rate, len(s.agents), s.o.sample, orNever(s.o.brokerRestart), orNever(s.o.update), s.o.duration, s.o.warmup)

	trackCtx, stopTracking := context.WithCancel(ctx)
	defer stopTracking()
	end := s.o.duration
	nextSample, nextRestart, nextUpdate := time.Duration(0), s.o.brokerRestart, s.o.update
	lastSample := time.Duration(-1)
	for {
		at, what := nextEvent(nextSample, nextRestart, nextUpdate, end, s.o.brokerRestart > 0, s.o.update > 0)
		if d := at - s.elapsed(); d > 0 {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		switch what {
		case "sample":
			s.takeSample(ctx)
			lastSample = at
			nextSample += s.o.sample
		case "restart":
			if err := s.restartCP(trackCtx); err != nil {
				return 0, err
			}
			nextRestart += s.o.brokerRestart
		case "update":
			if err := s.pushAndDeploy(ctx); err != nil {
				return 0, err
			}
			s.mu.Lock()
			ev := s.updates[len(s.updates)-1]
			s.mu.Unlock()
			logf("+%s  pushed and deployed %s v%d", fmtDur(ev.at), modelName, ev.version)
			s.trackWG.Add(1)
			go func() { defer s.trackWG.Done(); s.trackConvergence(trackCtx, ev, time.Now()) }()
			nextUpdate += s.o.update
		case "end":
			if lastSample < end-time.Second {
				s.takeSample(ctx)
			}
			return s.finish(ctx, stopTracking), nil
		}
	}
}

// nextEvent picks the earliest event. At a tie a sample comes first, so
// that the figures are read before a restart or an update disturbs them,
// then a restart, then an update; none starts at or after the end.
func nextEvent(sample, restart, update, end time.Duration, restarts, updates bool) (time.Duration, string) {
	at, what := sample, "sample"
	if end < at {
		at, what = end, "end"
	}
	if restarts && restart < end && restart < at {
		at, what = restart, "restart"
	}
	if updates && update < end && update < at {
		at, what = update, "update"
	}
	return at, what
}

func orNever(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.String()
}

// drive sends -rate predictions per second to one agent until the load
// stops. Requests are not cancelled on the way out: one the agent counted
// must be counted here too.
func (s *soak) drive(a *agent) {
	defer s.loadWG.Done()
	h := fnv.New64a()
	h.Write([]byte(a.id))
	r := rand.New(rand.NewPCG(h.Sum64(), 1))
	reqs := make([]localclient.InferRequest, 64)
	for i := range reqs {
		x := make([]float32, features)
		for j := range x {
			x[j] = float32(r.NormFloat64())
		}
		reqs[i] = localclient.InferRequest{Model: modelName, Inputs: []localclient.Tensor{localclient.NewTensor("x", []int64{1, features}, x)}}
	}
	interval := time.Duration(float64(time.Second) / s.o.rate)
	select { // spread the agents' ticks
	case <-s.loadStop:
		return
	case <-time.After(time.Duration(r.Int64N(int64(interval)))):
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-s.loadStop:
			return
		case <-t.C:
		}
		if _, err := a.load.Infer(context.Background(), reqs[i%len(reqs)]); err != nil {
			a.failed.Add(1)
			if localclient.StatusOf(err) == http.StatusInternalServerError {
				a.modelFailed.Add(1) // the agent counts these in its telemetry
			}
			a.errMu.Lock()
			a.lastErr = err.Error()
			a.errMu.Unlock()
			continue
		}
		a.ok.Add(1)
	}
}

// counted is what the agent's telemetry should hold for the harness's
// requests: the predictions its model ran, failed ones included.
func (a *agent) counted() uint64 { return a.ok.Load() + a.modelFailed.Load() }

// takeSample reads every process, writes the CSV rows and prints a line.
func (s *soak) takeSample(ctx context.Context) {
	at := s.elapsed()
	s.checkCrashes()
	now := time.Now()
	telem := int64(-1)
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if sum, err := s.c.Telemetry(qctx, ""); err == nil {
		telem = int64(sum.Total.Predictions)
	}
	cancel()
	cpU := read(s.cp.pid(), s.cpURL+"/metrics", s.hc)
	s.mu.Lock()
	s.cpSamples = append(s.cpSamples, sample{at, cpU})
	s.lastTelem = telem
	s.mu.Unlock()
	row := func(name string, u usage, ok, agentTotal, outbox, connected, telem int64) {
		s.csv.Write([]string{strconv.FormatFloat(at.Seconds(), 'f', 1, 64), now.Format(time.RFC3339), name, strconv.Itoa(u.pid),
			num(u.rss), num(u.rssAnon), num(u.heapInUse), num(u.goroutines), num(int64(u.fds)), num(u.threads),
			num(ok), num(agentTotal), num(outbox), num(connected), num(telem)})
	}
	row("cp", cpU, -1, -1, -1, -1, telem)
	var ok, failed uint64
	connected := 0
	var rss, gor, fds, heap []float64
	for _, a := range s.agents {
		u := read(a.p.pid(), a.api+"/metrics", s.hc)
		a.samples = append(a.samples, sample{at, u})
		c := metric(u.metrics, "shoal_agent_mqtt_connected")
		if c == 1 {
			connected++
		}
		row(a.id, u, int64(a.ok.Load()), metric(u.metrics, "shoal_agent_predictions_total"), metric(u.metrics, "shoal_agent_outbox_records"), c, -1)
		ok += a.ok.Load()
		failed += a.failed.Load()
		rss, gor, fds, heap = append(rss, mib(u.rss)), append(gor, float64(u.goroutines)), append(fds, float64(u.fds)), append(heap, mib(u.heapInUse))
	}
	s.csv.Flush()
	if err := s.csv.Error(); err != nil {
		logf("CSV: %v", err)
	}
	s.mu.Lock()
	nr, nu := len(s.restarts), len(s.updates)-1
	s.mu.Unlock()
	logf("+%s  cp pid %d: RSS %.1f MiB, heap %.1f MiB, %d goroutines, %d fds | agents (mean/max): RSS %.1f/%.1f MiB, heap %.1f/%.1f MiB, goroutines %.1f/%.0f, fds %.1f/%.0f, %d/%d connected | predictions %d ok, %d failed; control plane has %s | restarts %d, updates %d",
		fmtDur(at), cpU.pid, mib(cpU.rss), mib(cpU.heapInUse), cpU.goroutines, cpU.fds,
		mean(rss), maxOf(rss), mean(heap), maxOf(heap), mean(gor), maxOf(gor), mean(fds), maxOf(fds), connected, len(s.agents),
		ok, failed, numOr(telem, "?"), nr, nu)
}

// checkCrashes restarts a process that exited on its own, and notes it.
func (s *soak) checkCrashes() {
	procs := []*proc{s.cp}
	for _, a := range s.agents {
		procs = append(procs, a.p)
	}
	for _, p := range procs {
		if gone, err := p.exited(); gone {
			msg := fmt.Sprintf("+%s %s exited on its own (%v); started again. Log tail:\n%s", fmtDur(s.elapsed()), p.name, err, p.tail(1500))
			logf("%s", msg)
			s.mu.Lock()
			s.crashes = append(s.crashes, msg)
			s.mu.Unlock()
			if err := p.start(); err != nil {
				logf("could not start %s again: %v", p.name, err)
			}
		}
	}
}

// restartCP stops the control plane with SIGTERM and starts it again on
// the same data and ports: the embedded broker restarts with it, and every
// agent must reconnect.
func (s *soak) restartCP(ctx context.Context) error {
	ev := &restartEvent{at: s.elapsed(), reconnected: -1}
	t0 := time.Now()
	ev.exitErr, ev.killed = s.cp.stop(stopTimeout)
	ev.stopTook = time.Since(t0)
	if err := s.cp.start(); err != nil {
		return err
	}
	if err := s.waitCP(ctx); err != nil {
		return err
	}
	ready := time.Now()
	ev.down = ready.Sub(t0)
	s.mu.Lock()
	s.restarts = append(s.restarts, ev)
	s.mu.Unlock()
	logf("+%s  restarted the control plane (pid %d): stopped in %s (exit: %v%s), answering again after %s",
		fmtDur(ev.at), s.cp.pid(), ev.stopTook.Round(time.Millisecond), orOK(ev.exitErr), map[bool]string{true: ", KILLED after " + stopTimeout.String()}[ev.killed], ev.down.Round(time.Millisecond))
	s.trackWG.Add(1)
	go func() {
		defer s.trackWG.Done()
		deadline := ready.Add(convergeTimeout)
		for ctx.Err() == nil && time.Now().Before(deadline) {
			n := 0
			for _, a := range s.agents {
				if m, err := scrape(s.hc, a.api+"/metrics"); err == nil && m["shoal_agent_mqtt_connected"] == 1 {
					n++
				}
			}
			if n == len(s.agents) {
				s.mu.Lock()
				ev.reconnected = time.Since(ready)
				s.mu.Unlock()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}

func orOK(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// finish stops the load and the agents, compares the predictions made with
// the control plane's telemetry, stops the control plane and prints the
// summary. It returns the exit code.
func (s *soak) finish(ctx context.Context, stopTracking context.CancelFunc) int {
	close(s.loadStop)
	s.loadWG.Wait()
	logf("+%s  load stopped; waiting for update and reconnect trackers (up to %s)", fmtDur(s.elapsed()), convergeTimeout)
	tracked := make(chan struct{})
	go func() { s.trackWG.Wait(); close(tracked) }()
	select {
	case <-tracked:
	case <-time.After(convergeTimeout):
		stopTracking()
		<-tracked
	}

	res := &result{agentTotals: map[string]int64{}}
	for _, a := range s.agents {
		m, err := scrape(s.hc, a.api+"/metrics")
		res.agentTotals[a.id] = -1
		if err == nil {
			res.agentTotals[a.id] = metric(m, "shoal_agent_predictions_total")
		}
	}
	logf("stopping the %d agents gracefully (SIGTERM: each flushes its last telemetry window)", len(s.agents))
	s.stopAgents(res)

	res.expected = map[string]uint64{}
	for _, a := range s.agents {
		res.expected[a.id] = a.counted()
		res.total += a.counted()
	}
	res.got, res.settled = s.settle(ctx, res.total)
	for _, a := range s.agents {
		if res.got[a.id] != res.expected[a.id] {
			res.mismatched = append(res.mismatched, a.id)
		}
	}
	if len(res.mismatched) > 0 {
		// Tell "not yet sent" from "lost": an agent keeps what was not
		// acked in its outbox and sends it on its next start.
		logf("telemetry differs for %d agents; starting them again to send what their outboxes kept", len(res.mismatched))
		res.drained = s.drain(ctx, res)
	}
	logf("stopping the control plane")
	if err, killed := s.cp.stop(stopTimeout); err != nil || killed {
		logf("control plane exit: %v (killed: %v)\n%s", err, killed, s.cp.tail(2000))
		res.cpExit = fmt.Sprintf("%v (killed: %v)", err, killed)
	}
	s.csv.Flush()
	if err := s.csvFile.Close(); err != nil {
		logf("CSV: %v", err)
	}
	return s.summary(res)
}

type result struct {
	agentTotals map[string]int64 // shoal_agent_predictions_total before the stop
	stopErrs    []string
	expected    map[string]uint64
	total       uint64
	got         map[string]uint64
	gotTotal    uint64
	settled     bool
	mismatched  []string
	drained     map[string]uint64 // after the drain restart
	cpExit      string
}

func (s *soak) stopAgents(res *result) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range s.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err, killed := a.p.stop(stopTimeout)
			if err != nil || killed {
				mu.Lock()
				res.stopErrs = append(res.stopErrs, fmt.Sprintf("%s: exit %v, killed %v", a.id, err, killed))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(res.stopErrs)
}

// settle polls the control plane's telemetry until it counts want
// predictions, or stops changing for 15 s, or settleTimeout passes.
func (s *soak) settle(ctx context.Context, want uint64) (map[string]uint64, bool) {
	deadline := time.Now().Add(settleTimeout)
	var last uint64
	lastChange := time.Now()
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sum, err := s.c.Telemetry(qctx, "")
		cancel()
		if err == nil {
			got := map[string]uint64{}
			for _, d := range sum.Devices {
				got[d.DeviceID] = d.Predictions
			}
			if sum.Total.Predictions != last {
				last, lastChange = sum.Total.Predictions, time.Now()
			}
			if sum.Total.Predictions == want || time.Since(lastChange) > 15*time.Second || time.Now().After(deadline) {
				return got, sum.Total.Predictions == want
			}
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			return map[string]uint64{}, false
		}
		time.Sleep(time.Second)
	}
}

// drain starts the mismatched agents again until their telemetry matches
// (or drainTimeout), stops them, and returns the control plane's counts.
func (s *soak) drain(ctx context.Context, res *result) map[string]uint64 {
	var started []*agent
	for _, a := range s.agents {
		for _, id := range res.mismatched {
			if a.id == id && a.p.start() == nil {
				started = append(started, a)
			}
		}
	}
	got := map[string]uint64{}
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if sum, err := s.c.Telemetry(ctx, ""); err == nil {
			done := true
			for _, d := range sum.Devices {
				got[d.DeviceID] = d.Predictions
			}
			for _, a := range started {
				done = done && got[a.id] == res.expected[a.id]
			}
			if done {
				break
			}
		}
		time.Sleep(time.Second)
	}
	for _, a := range started {
		a.p.stop(stopTimeout)
	}
	return got
}

// abort stops every child: agents first, then the control plane.
func (s *soak) abort() {
	select {
	case <-s.loadStop:
	default:
		close(s.loadStop)
	}
	s.loadWG.Wait()
	var wg sync.WaitGroup
	for _, a := range s.agents {
		wg.Add(1)
		go func() { defer wg.Done(); a.p.stop(10 * time.Second) }()
	}
	wg.Wait()
	if s.cp != nil {
		s.cp.stop(10 * time.Second)
	}
	if s.csv != nil {
		s.csv.Flush()
		s.csvFile.Close()
	}
}

func num(v int64) string {
	if v < 0 {
		return ""
	}
	return strconv.FormatInt(v, 10)
}

func numOr(v int64, unknown string) string {
	if v < 0 {
		return unknown
	}
	return strconv.FormatInt(v, 10)
}

func mib(b int64) float64 {
	if b < 0 {
		return -1
	}
	return float64(b) / (1 << 20)
}

func fmtDur(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
