package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// Rollout scenarios with real agents in this process, over the embedded
// broker, with the control plane on an injected clock: soak times of an
// hour pass when the test moves the clock.

// rolloutFleet is a control plane and agents for rollout scenarios.
type rolloutFleet struct {
	t      *testing.T
	clock  *shoaltest.Ahead // the control plane's: agents, on real time, accept what it signs
	cp     *controltest.Server
	agents []*fleetAgent
	byID   map[string]*fleetAgent
	mu     sync.Mutex // guards cfgs
	cfgs   map[string]agent.Config
}

func newRolloutFleet(t *testing.T, n int) *rolloutFleet { return newRolloutFleetOf(t, n, false) }

// newRolloutFleetOf starts n agents on model m version 1: in this
// process, or, with processes, as shoal-agent binaries.
func newRolloutFleetOf(t *testing.T, n int, processes bool) *rolloutFleet {
	t.Helper()
	onnxrt.MustInitForTest(t)
	f := &rolloutFleet{t: t, clock: &shoaltest.Ahead{}, byID: map[string]*fleetAgent{}, cfgs: map[string]agent.Config{}}
	f.cp = controltest.Start(t, controltest.WithNow(f.clock.Now), controltest.WithLogger(testLogger(t)))
	f.cp.PushModel(t, "m", "1", rolloutModel(t, "good", 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	dir := t.TempDir()
	for i := range n {
		id := fmt.Sprintf("dev-%02d", i)
		tok := f.cp.Token(t)
		if processes {
			_, api := startAgentProc(t, dir, "shoal-agent "+id, "run", "--data-dir", filepath.Join(dir, id), "--server", f.cp.URL(),
				"--device-id", id, "--enroll-token", tok, "--telemetry-window", "100ms")
			f.byID[id] = &fleetAgent{id: id, api: api}
			continue
		}
		wg.Go(func() {
			fa := f.start(id, func(c *agent.Config) { c.EnrollToken = agent.Secret(tok) })
			mu.Lock()
			f.byID[id] = fa
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := range n {
		f.agents = append(f.agents, f.byID[fmt.Sprintf("dev-%02d", i)])
	}
	// Agents enroll as they start running; deploy once all have.
	waitDevices(t, f.cp.Client, "every agent enrolled", func(ds []client.Device) error {
		if len(ds) != n {
			return fmt.Errorf("%d of %d enrolled", len(ds), n)
		}
		return nil
	})
	f.cp.Deploy(t, "m", "1")
	waitDevices(t, f.cp.Client, "every agent on 1", allActive(n, "m", "1"))
	return f
}

// start runs agent id; its config is kept so that it can be started
// again on the same data directory.
func (f *rolloutFleet) start(id string, mutate ...func(*agent.Config)) *fleetAgent {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg, ok := f.cfgs[id]
	if !ok {
		cfg = agent.Config{
			DataDir:         f.t.TempDir(),
			ServerURL:       f.cp.URL(),
			DeviceID:        id,
			APIAddr:         "127.0.0.1:0",
			TelemetryWindow: 50 * time.Millisecond,
			IntraOpThreads:  1,
			Logger:          testLogger(f.t),
		}
	}
	for _, m := range mutate {
		m(&cfg)
	}
	f.cfgs[id] = cfg
	return runAgentCfg(f.t, id, cfg)
}

// rolloutModel builds version models that all take "x" [batch, 4] and
// give "output" [batch, 2]:
//   - good: a small MLP (seed picks the weights);
//   - slow: a hundred times more work per row (same inputs and outputs);
//   - noisy: adds random noise to its input, so it never reproduces its
//     self-test on a device (a non-deterministic export);
//   - batch1: reshapes to one row, so it fails at run time on any batch
//     of two or more (its self-test has one row, and passes).
func rolloutModel(t *testing.T, kind string, seed uint64) []byte {
	t.Helper()
	var data []byte
	var err error
	switch kind {
	case "good":
		data, err = onnxbuild.MLP(onnxbuild.MLPSpec{Name: "m", Input: "x", Layers: onnxbuild.RandomLayers(seed, 4, 8, 2)})
	case "slow":
		// 4 → 512, then the same 512×512 layer 800 times, → 2: some 210M
		// multiply-adds per row — tens of milliseconds, against the tens
		// of microseconds of "good" — from a file of 1 MiB. The gap is that
		// wide so that no load on the machine running the test closes it.
		ls := onnxbuild.RandomLayers(seed, 4, 512, 512, 2)
		g := onnxbuild.New("m")
		x := g.InputFloat("x", -1, 4)
		x = g.Node("Gemm", []string{x, g.Weight("W0", ls[0].W, 4, 512), g.Weight("B0", ls[0].B, 512)}, "")
		w, b := g.Weight("W", ls[1].W, 512, 512), g.Weight("B", ls[1].B, 512)
		for range 800 {
			x = g.Node("Tanh", []string{g.Node("Gemm", []string{x, w, b}, "")}, "")
		}
		x = g.Node("Gemm", []string{x, g.Weight("W2", ls[2].W, 512, 2), g.Weight("B2", ls[2].B, 2)}, "")
		g.Node("Identity", []string{x}, "output")
		g.OutputFloat("output", -1, 2)
		data, err = g.Bytes()
	case "noisy", "batch1":
		l := onnxbuild.RandomLayers(seed, 4, 2)[0]
		g := onnxbuild.New("m")
		x := g.InputFloat("x", -1, 4)
		if kind == "noisy" {
			noise := g.Node("RandomNormalLike", []string{x}, "", onnxbuild.AttrFloat("scale", 10))
			x = g.Node("Add", []string{x, noise}, "")
		}
		y := g.Node("Gemm", []string{x, g.Weight("W", l.W, 4, 2), g.Weight("B", l.B, 2)}, "")
		if kind == "batch1" {
			y = g.Node("Reshape", []string{y, g.WeightInt64("one_row", []int64{1, 2}, 2)}, "")
		}
		g.Node("Identity", []string{y}, "output")
		g.OutputFloat("output", -1, 2)
		data, err = g.Bytes()
	default:
		t.Fatalf("no model kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (f *rolloutFleet) create(spec apiv1.RolloutSpec) client.Rollout {
	f.t.Helper()
	r, err := f.cp.Client.CreateRollout(context.Background(), spec)
	if err != nil {
		f.t.Fatalf("create rollout: %v", err)
	}
	return r
}

func (f *rolloutFleet) get(id string) client.Rollout {
	f.t.Helper()
	r, err := f.cp.Client.Rollout(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *rolloutFleet) act(id, action string) client.Rollout {
	f.t.Helper()
	r, err := f.cp.Client.RolloutAction(context.Background(), id, action)
	if err != nil {
		f.t.Fatalf("%s %s: %v", action, id, err)
	}
	return r
}

// waitRollout waits until cond accepts the rollout.
func (f *rolloutFleet) waitRollout(id, what string, cond func(client.Rollout) error) client.Rollout {
	f.t.Helper()
	var last client.Rollout
	shoaltest.Eventually(f.t, what, func() error {
		r, err := f.cp.Client.Rollout(context.Background(), id)
		if err != nil {
			return err
		}
		last = r
		return cond(r)
	})
	return last
}

// advance moves the control plane's clock and runs a rollout pass.
func (f *rolloutFleet) advance(d time.Duration) {
	f.t.Helper()
	f.clock.Advance(d)
	if err := f.cp.ReconcileRollouts(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func stageIs(name string, healthy int) func(client.Rollout) error {
	return func(r client.Rollout) error {
		if r.Stage != name || r.Phases["healthy"] != healthy {
			return fmt.Errorf("state %s stage %s phases %v; want stage %s with %d healthy", r.State, r.Stage, r.Phases, name, healthy)
		}
		return nil
	}
}

func stateIs(state string) func(client.Rollout) error {
	return func(r client.Rollout) error {
		if r.State != state {
			return fmt.Errorf("state %s (%s) phases %v; want %s", r.State, r.Reason, r.Phases, state)
		}
		return nil
	}
}

// serving returns the version an agent answers with.
func serving(t *testing.T, fa *fleetAgent) string {
	t.Helper()
	out, err := fa.infer("m", "x", []int64{1, 4}, []float32{0.1, 0.2, 0.3, 0.4})
	if err != nil {
		t.Fatalf("%s infer: %v", fa.id, err)
	}
	return out.ModelVersion
}

// stagesSpec is a rollout of model m at version through stages of the
// given cumulative sizes (a count of devices, or "20%"), each soaking
// soak, its devices reporting healthy once active (health {0, 0}).
func stagesSpec(version, onFailure string, soak time.Duration, sizes ...any) apiv1.RolloutSpec {
	var stages []apiv1.Stage
	for i, s := range sizes {
		st := apiv1.Stage{Name: fmt.Sprintf("s%d", i+1), Soak: apiv1.Duration(soak), Timeout: apiv1.Duration(time.Hour)}
		switch v := s.(type) {
		case int:
			st.Count = v
		case string:
			fmt.Sscanf(v, "%g%%", &st.Percent)
		}
		stages = append(stages, st)
	}
	return apiv1.RolloutSpec{Model: "m", Version: version, OnFailure: onFailure, Stages: stages,
		Health: &apiv1.HealthCheck{Predictions: 0, Seconds: 0}}
}

// TestRolloutFiftyAgents: 50 agents, stages of 2 devices, 20% and 100%,
// an hour of soak each: a good model goes out stage by stage, no device
// outside a started stage is touched, and pause, resume and promote
// work on the way.
func TestRolloutFiftyAgents(t *testing.T) {
	n := 50
	if testing.Short() {
		n = 20
	}
	f := newRolloutFleet(t, n)
	f.cp.PushModel(t, "m", "2", rolloutModel(t, "good", 2))
	r := f.create(stagesSpec("2", "pause", time.Hour, 2, "20%", "100%"))
	r = f.waitRollout(r.ID, "canary healthy", stageIs("s1", 2))
	for _, d := range r.Devices {
		want := map[bool]string{true: "2", false: "1"}[d.Stage == "s1"]
		if got := serving(t, f.byID[d.ID]); got != want {
			t.Errorf("during the canary %s (stage %q) serves %s; want %s", d.ID, d.Stage, got, want)
		}
	}
	// The canary stays a canary until its soak is over.
	f.advance(30 * time.Minute)
	if r = f.get(r.ID); r.Stage != "s1" {
		t.Fatalf("canary passed after 30 of its 60 minutes")
	}
	f.advance(31 * time.Minute)
	wave := n / 5
	r = f.waitRollout(r.ID, "20% healthy", stageIs("s2", wave))

	// Paused, the rollout does not move on, whatever the clock says.
	f.act(r.ID, "pause")
	f.advance(2 * time.Hour)
	if r = f.get(r.ID); r.State != "paused" || r.Stage != "s2" || r.Phases["pending"] != n-wave {
		t.Fatalf("paused rollout moved: state %s stage %s phases %v", r.State, r.Stage, r.Phases)
	}
	f.act(r.ID, "resume")
	f.advance(0)
	r = f.waitRollout(r.ID, "every device healthy", stageIs("s3", n))
	// An operator need not wait for the last soak.
	if r = f.act(r.ID, "promote"); r.State != "completed" {
		t.Fatalf("after promote: %s", r.State)
	}
	r = f.get(r.ID)
	for _, fa := range f.agents {
		if got := serving(t, fa); got != "2" {
			t.Errorf("%s serves %s", fa.id, got)
		}
	}
	var kinds []string
	for _, ev := range r.Events {
		if ev.Type != "device" {
			kinds = append(kinds, ev.Type)
		}
	}
	want := "created stage_started stage_passed stage_started paused resumed stage_passed stage_started promoted stage_passed completed"
	if strings.Join(kinds, " ") != want {
		t.Errorf("events: %v\nwant %s", kinds, want)
	}
}

// TestRolloutSelfTestFailureRollsBack: a model that fails its self-test on
// the devices stops the rollout in its canary, and with rollback on the
// canary is back on the old version; no other device was touched.
//
// The agents here are shoal-agent processes, not in-process agents: the
// model is non-deterministic (random noise), and ONNX Runtime seeds its
// random ops once per process, so an agent sharing the control plane's
// process would reproduce the self-test exactly, as no real device does.
func TestRolloutSelfTestFailureRollsBack(t *testing.T) {
	f := newRolloutFleetOf(t, 6, true)
	f.cp.PushModel(t, "m", "2", rolloutModel(t, "noisy", 2))
	r := f.create(stagesSpec("2", "rollback", 0, 2, "100%"))
	r = f.waitRollout(r.ID, "rolled back", func(r client.Rollout) error {
		if r.State != "rolled_back" || r.Phases["rolled_back"] != 2 {
			return fmt.Errorf("state %s phases %v", r.State, r.Phases)
		}
		return nil
	})
	if r.Phases["pending"] != 4 {
		t.Errorf("phases %v; want 4 devices untouched", r.Phases)
	}
	// The gate trips at the first failure; the other canary may not have
	// failed yet.
	if !strings.Contains(r.Reason, "of 2 devices failed; at most 0 may") {
		t.Errorf("reason %q", r.Reason)
	}
	var failed bool
	for _, ev := range r.Events {
		if ev.Phase == "failed" && strings.Contains(ev.Message, "self-test") {
			failed = true
		}
	}
	if !failed {
		t.Error("no event says a canary failed its self-test")
	}
	for _, fa := range f.agents {
		if got := serving(t, fa); got != "1" {
			t.Errorf("%s serves %s after the rollback", fa.id, got)
		}
	}
	devs, err := f.cp.Client.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if m := d.Models[0]; m.DesiredVersion != "1" || m.ActiveVersion != "1" || m.Phase != "active" {
			t.Errorf("%s: desired %s active %s phase %s", d.ID, m.DesiredVersion, m.ActiveVersion, m.Phase)
		}
	}
}

// TestRolloutHealthGates: models that pass their self-test but raise the
// error rate, or the p95 latency, on the canary trip its health gate. The
// same devices take one rollout after the other.
func TestRolloutHealthGates(t *testing.T) {
	f := newRolloutFleet(t, 6)
	f.cp.PushModel(t, "m", "2", rolloutModel(t, "batch1", 2))
	f.cp.PushModel(t, "m", "3", rolloutModel(t, "slow", 3))
	// Traffic: one and two rows, in turn.
	traffic := func(fa *fleetAgent, n int) {
		for i := range n {
			rows := 1 + i%2
			fa.infer("m", "x", []int64{int64(rows), 4}, make([]float32, 4*rows))
		}
	}
	// Many baseline predictions, so that a few slowed by a busy machine
	// barely move version 1's p95.
	for _, fa := range f.agents {
		traffic(fa, 200)
	}
	waitTelemetry(t, f.cp.Client, f.agents)

	for _, tc := range []struct {
		version, gate, want string
	}{
		// Half the requests fail; the gate may judge on the first
		// windows, so the rate it quotes is near 50%, not exactly.
		{"2", `{"max_error_percent": 5}`, "error rate "},
		{"3", `{"max_p95_latency_ratio": 2}`, "p95 latency"},
	} {
		// The canary soaks an hour of the control plane's clock, which
		// stands still here: the health gate has all the time it needs.
		spec := stagesSpec(tc.version, "rollback", time.Hour, 2, "100%")
		gate := &spec.Stages[0].Health
		if err := json.Unmarshal([]byte(tc.gate), gate); err != nil {
			t.Fatal(err)
		}
		gate.MinPredictions = 20
		r := f.create(spec)
		r = f.waitRollout(r.ID, "canary active", func(r client.Rollout) error {
			if n := r.Phases["healthy"] + r.Phases["active"]; n != 2 {
				return fmt.Errorf("phases %v", r.Phases)
			}
			return nil
		})
		for _, d := range r.Devices {
			if d.Stage == "s1" {
				traffic(f.byID[d.ID], 40)
			}
		}
		r = f.waitRollout(r.ID, "health gate trips on "+tc.version, stateIs("rolled_back"))
		if !strings.Contains(r.Reason, "devices failed") {
			t.Errorf("%s: reason %q", tc.version, r.Reason)
		}
		found := false
		for _, ev := range r.Events {
			if ev.Phase == "failed" && strings.Contains(ev.Message, tc.want) {
				if !found {
					t.Logf("version %s: %s", tc.version, ev.Message)
				}
				found = true
			}
		}
		if !found {
			t.Errorf("version %s: no device failed with %q; events %+v", tc.version, tc.want, r.Events)
		}
		f.waitRollout(r.ID, "canary back on 1", func(r client.Rollout) error {
			if r.Phases["rolled_back"] != 2 {
				return fmt.Errorf("phases %v", r.Phases)
			}
			return nil
		})
		for _, fa := range f.agents {
			if got := serving(t, fa); got != "1" {
				t.Errorf("after the %s rollback %s serves %s", tc.version, fa.id, got)
			}
		}
	}
}

// TestRolloutOfflineDevices: a fifth of the fleet is offline throughout;
// the stages complete on the devices seen, and the others converge when
// they come back.
func TestRolloutOfflineDevices(t *testing.T) {
	f := newRolloutFleet(t, 10)
	offline := []string{"dev-02", "dev-07"}
	for _, id := range offline {
		f.byID[id].shutdown(t)
	}
	waitDevices(t, f.cp.Client, "two devices offline", func(ds []client.Device) error {
		n := 0
		for _, d := range ds {
			if !d.Online {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d offline", n)
		}
		return nil
	})
	f.cp.PushModel(t, "m", "2", rolloutModel(t, "good", 2))
	r := f.create(stagesSpec("2", "pause", 0, 2, "100%"))
	r = f.waitRollout(r.ID, "completed on the devices seen", stateIs("completed"))
	if r.Phases["healthy"] != 8 || r.Phases["offline"] != 2 || r.Phases["failed"] != 0 {
		t.Fatalf("phases %v; want 8 healthy, 2 offline", r.Phases)
	}
	for _, id := range offline {
		f.byID[id] = f.start(id)
	}
	r = f.waitRollout(r.ID, "the offline devices converge", func(r client.Rollout) error {
		if r.Phases["healthy"] != 10 {
			return fmt.Errorf("phases %v", r.Phases)
		}
		return nil
	})
	for _, id := range offline {
		if got := serving(t, f.byID[id]); got != "2" {
			t.Errorf("%s serves %s after coming back", id, got)
		}
	}
}

// TestRolloutSurvivesControlPlaneRestart: the control plane restarts in
// the middle of a stage; the rollout goes on from where it was and no
// device is sent its desired state again.
func TestRolloutSurvivesControlPlaneRestart(t *testing.T) {
	f := newRolloutFleet(t, 8)
	f.cp.PushModel(t, "m", "2", rolloutModel(t, "good", 2))
	r := f.create(stagesSpec("2", "pause", time.Hour, 2, "50%", "100%"))
	f.waitRollout(r.ID, "canary healthy", stageIs("s1", 2))
	generations := func() map[string]uint64 {
		devs, err := f.cp.Client.Devices(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, d := range devs {
			out[d.ID] = d.DesiredGeneration
		}
		return out
	}
	before := generations()
	f.cp = f.cp.Restart(t)
	if err := f.cp.ReconcileRollouts(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r = f.get(r.ID); r.Stage != "s1" || r.State != "running" || r.Phases["healthy"] != 2 {
		t.Fatalf("after restart: %s stage %s phases %v", r.State, r.Stage, r.Phases)
	}
	if after := generations(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("desired generations changed across the restart:\nbefore %v\nafter  %v", before, after)
	}
	f.advance(61 * time.Minute)
	f.waitRollout(r.ID, "half healthy", stageIs("s2", 4))
	f.advance(61 * time.Minute)
	f.waitRollout(r.ID, "all healthy", stageIs("s3", 8))
	f.advance(61 * time.Minute)
	f.waitRollout(r.ID, "completed", stateIs("completed"))
}
