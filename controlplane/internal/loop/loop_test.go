package loop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/drift"
	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
)

// These tests run the loop over the real jobs runner, registry, dataset
// store, fleet and rollout engine on a Badger store, with an injected
// clock.

var ctx = context.Background()

type nopPublisher struct{}

func (nopPublisher) Publish(string, []byte, bool) error { return nil }

type env struct {
	t        *testing.T
	clock    *shoaltest.Clock
	datasets *dataset.Store
	reg      *registry.Registry
	runner   *jobs.Runner
	rollouts *rollout.Engine
	mon      *monitor.Monitor
	loop     *Service
	iris     []byte
}

// newEnv trains version 1 of model "iris" on dataset iris v1 with a job,
// enrolls two devices, and pushes iris again as v2 (all but its last row).
func newEnv(t *testing.T) *env {
	t.Helper()
	onnxrt.MustInitForTest(t)
	dir := os.Getenv("SHOAL_DATASETS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "datasets")
	}
	iris, err := os.ReadFile(filepath.Join(dir, "iris.csv"))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("iris.csv is absent (%v); it lives in the shared datasets folder next to the repository, or set $SHOAL_DATASETS", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, clock: shoaltest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)), iris: iris}
	tmp := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	st, err := badgerstore.Open(filepath.Join(tmp, "store"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	signer, err := trust.LoadOrCreateSigner(filepath.Join(tmp, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if e.reg, err = registry.New(st, filepath.Join(tmp, "artifacts"), signer, log, e.clock.Now); err != nil {
		t.Fatal(err)
	}
	if e.datasets, err = dataset.NewStore(st, filepath.Join(tmp, "datasets"), log, e.clock.Now); err != nil {
		t.Fatal(err)
	}
	if e.runner, err = jobs.New(st, e.datasets, e.reg, log, e.clock.Now); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.runner.Close() })
	scheme := topics.New("")
	fl := fleet.New(st, nopPublisher{}, scheme, log, e.clock.Now)
	e.mon = monitor.New(st, nopPublisher{}, scheme, log, e.clock.Now)
	e.rollouts = rollout.New(st, fl, e.reg, e.mon, log, e.clock.Now)
	e.loop = New(st, e.runner, e.datasets, e.rollouts, Options{Now: e.clock.Now, Log: log, Captures: e.mon})

	for i := range 2 {
		tok, err := fl.CreateToken(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fl.Enroll(ctx, fleet.EnrollRequest{Token: tok.Token, DeviceID: fmt.Sprintf("dev-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	e.pushIris(iris)
	j, err := e.runner.Submit(ctx, jobs.Spec{Dataset: "iris", Model: "iris", Spec: training.Spec{Trainer: training.Logistic, Seed: 7}})
	if err != nil {
		t.Fatal(err)
	}
	if j = e.wait(j.ID); j.State != jobs.Succeeded || j.Result.ModelVersion != "1" {
		t.Fatalf("lineage job = %s %q %+v; want version 1 made", j.State, j.Error, j.Result)
	}
	lines := bytes.SplitAfter(bytes.TrimRight(iris, "\n"), []byte("\n"))
	e.pushIris(bytes.Join(lines[:len(lines)-1], nil))
	return e
}

func (e *env) pushIris(csv []byte) {
	e.t.Helper()
	if _, _, err := e.datasets.Push(ctx, "iris", "Species", "", bytes.NewReader(csv)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) wait(id string) jobs.Job {
	e.t.Helper()
	j, err := e.runner.Wait(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *env) setPolicy(p Policy) Policy {
	e.t.Helper()
	p, err := e.loop.SetPolicy(ctx, "iris", p)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func alert(version string) drift.Alert {
	return drift.Alert{ID: "iris/" + version + "/all/1", Model: "iris", Version: version, Cohort: "all"}
}

// finish waits for run r's job and steps the loop.
func (e *env) finish(r Run) Run {
	e.t.Helper()
	e.wait(r.Job)
	e.clock.Advance(time.Minute)
	if err := e.loop.Step(ctx); err != nil {
		e.t.Fatal(err)
	}
	runs, err := e.loop.Runs(ctx, "iris")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, got := range runs {
		if got.Seq == r.Seq {
			return got
		}
	}
	e.t.Fatalf("run %d is gone: %+v", r.Seq, runs)
	return Run{}
}

func canaryTemplate() *rollout.Spec {
	return &rollout.Spec{Stages: []rollout.Stage{
		{Name: "canary", Count: 1, Soak: rollout.Duration(10 * time.Minute)},
		{Name: "all", Percent: 100},
	}}
}

func TestAlertRetrainsOnLatestDataAndRollsOut(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(Policy{Retrain: true, Rollout: canaryTemplate(), Cooldown: rollout.Duration(time.Hour)})

	e.loop.OnAlert(alert("1"))
	runs, err := e.loop.Runs(ctx, "iris")
	if err != nil || len(runs) != 1 {
		t.Fatalf("Runs = %+v, %v; want one run", runs, err)
	}
	r := runs[0]
	if r.State != Training || r.Seq != 1 || r.LineageJob != "job-1" || r.Job != "job-2" || r.Dataset != "iris" || r.DatasetVersion != 2 || r.FromVersion != "1" {
		t.Fatalf("run = %+v; want job-2 training on iris v2 from job-1's lineage", r)
	}
	j, err := e.runner.Get(ctx, r.Job)
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.DatasetVersion != 2 || j.Spec.Trainer != training.Logistic || j.Spec.Seed != 7 {
		t.Errorf("retraining spec = %+v; want logistic, seed 7, on iris v2", j.Spec)
	}

	// A second alert while the run trains starts nothing.
	if _, err := e.loop.Start(ctx, alert("1")); !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), "is training") {
		t.Errorf("Start while training = %v; want skipped", err)
	}

	r = e.finish(r)
	if r.State != RollingOut || r.Version != "2" || r.Rollout == "" || r.RolloutState != rollout.StateRunning {
		t.Fatalf("run = %+v; want version 2 rolling out", r)
	}
	if v, err := e.reg.Get(ctx, "iris", "2"); err != nil || v.Validation == nil || !v.Validation.Passed() {
		t.Errorf("version 2 = %+v, %v; want it validated", v, err)
	}
	ro, err := e.rollouts.Get(ctx, r.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	if ro.Model != "iris" || ro.Version != "2" || len(ro.Spec.Stages) != 2 || ro.Spec.Stages[0].Name != "canary" || ro.Spec.Stages[0].Soak.D() != 10*time.Minute || !ro.Spec.Supersede {
		t.Errorf("rollout = %s %s %+v; want iris 2 through the template's canary and all", ro.Model, ro.Version, ro.Spec)
	}
	var states []State
	for _, ev := range r.Events {
		states = append(states, ev.State)
	}
	if fmt.Sprint(states) != "[training candidate rolling_out]" {
		t.Errorf("events = %+v", r.Events)
	}

	// The rollout ends; the run is done, and the cooldown still holds.
	if _, err := e.rollouts.Abort(ctx, r.Rollout); err != nil {
		t.Fatal(err)
	}
	if err := e.loop.Step(ctx); err != nil {
		t.Fatal(err)
	}
	runs, _ = e.loop.Runs(ctx, "iris")
	if runs[0].State != Done || runs[0].RolloutState != rollout.StateAborted {
		t.Errorf("run after the abort = %+v; want done", runs[0])
	}
	if _, err := e.loop.Start(ctx, alert("2")); !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), "cooldown") {
		t.Errorf("Start within the cooldown = %v; want skipped", err)
	}
	e.clock.Advance(time.Hour)
	r2, err := e.loop.Start(ctx, alert("2"))
	if err != nil || r2.Seq != 2 || r2.State != Training || r2.LineageJob != "job-2" {
		t.Errorf("Start after the cooldown = %+v, %v; want run 2 from job-2", r2, err)
	}
	if r2.Job != "" {
		e.wait(r2.Job)
	}
}

func TestFailedGatesReject(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(Policy{Retrain: true, Rollout: canaryTemplate(), Gates: &validation.Gates{MaxLatencyP95: time.Nanosecond}})
	r, err := e.loop.Start(ctx, alert("1"))
	if err != nil {
		t.Fatal(err)
	}
	r = e.finish(r)
	if r.State != Rejected || r.Version != "2" || r.Rollout != "" || len(r.Reasons) == 0 || !strings.Contains(strings.Join(r.Reasons, " "), "budget 1ns") {
		t.Errorf("run = %+v; want rejected for latency, no rollout", r)
	}
	if rs, err := e.rollouts.List(ctx, "iris"); err != nil || len(rs) != 0 {
		t.Errorf("rollouts = %+v, %v; want none", rs, err)
	}
}

func TestNoRolloutStopsAtCandidate(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(Policy{Retrain: true})
	r, err := e.loop.Start(ctx, alert("1"))
	if err != nil {
		t.Fatal(err)
	}
	if r = e.finish(r); r.State != Candidate || r.Version != "2" || r.Rollout != "" {
		t.Errorf("run = %+v; want candidate 2 and no rollout", r)
	}
}

func TestNothingStarts(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name   string
		policy *Policy
		alert  drift.Alert
		want   string
	}{
		{"no policy", nil, alert("1"), "has no retraining policy"},
		{"retrain off", &Policy{Rollout: canaryTemplate()}, alert("1"), "retrain off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.policy != nil {
				e.setPolicy(*c.policy)
			}
			if _, err := e.loop.Start(ctx, c.alert); !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Start = %v; want skipped: %q", err, c.want)
			}
		})
	}
	if runs, err := e.loop.Runs(ctx, "iris"); err != nil || len(runs) != 0 {
		t.Errorf("runs = %+v, %v; want none", runs, err)
	}
	if js, _ := e.runner.List(ctx); len(js) != 1 {
		t.Errorf("%d jobs; want only the lineage job", len(js))
	}

	// A version no job made, or a dataset that is gone: a failed run says why.
	e.setPolicy(Policy{Retrain: true, Cooldown: rollout.Duration(time.Second)})
	r, err := e.loop.Start(ctx, alert("9"))
	if err != nil || r.State != Failed || !strings.Contains(strings.Join(r.Reasons, ""), "was not made by a training job") {
		t.Errorf("run of a version no job made = %+v, %v", r, err)
	}
	e.clock.Advance(time.Minute)
	e.setPolicy(Policy{Retrain: true, Dataset: "nope", Cooldown: rollout.Duration(time.Second)})
	r, err = e.loop.Start(ctx, alert("1"))
	if err != nil || r.State != Failed || r.Job != "" || !strings.Contains(strings.Join(r.Reasons, ""), `"nope"`) {
		t.Errorf("run on a missing dataset = %+v, %v", r, err)
	}
}

func TestPolicyChecked(t *testing.T) {
	e := &env{t: t, clock: shoaltest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))}
	st, err := badgerstore.Open(filepath.Join(t.TempDir(), "store"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.loop = New(st, nil, nil, nil, Options{Now: e.clock.Now})
	if _, err := e.loop.Policy(ctx, "m"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("Policy before any = %v; want NotFound", err)
	}
	p := e.setPolicyOf("m", Policy{Retrain: true, Rollout: canaryTemplate()})
	if p.Cooldown.D() != DefaultCooldown || !p.Rollout.Supersede || p.Rollout.Model != "" || p.Rollout.OnFailure != rollout.ActionPause || !p.UpdatedAt.Equal(e.clock.Now()) {
		t.Errorf("stored policy = %+v; want defaults filled", p)
	}
	if got, err := e.loop.Policy(ctx, "m"); err != nil || got.Rollout == nil || got.Rollout.Stages[0].Name != "canary" {
		t.Errorf("Policy = %+v, %v", got, err)
	}
	for _, c := range []struct {
		name, model string
		p           Policy
		want        string
	}{
		{"bad model", "a/b", Policy{}, "model name"},
		{"bad dataset", "m", Policy{Dataset: "a b"}, "dataset"},
		{"bad gates", "m", Policy{Gates: &validation.Gates{MinAccuracy: 2}}, "min_accuracy 2"},
		{"negative cooldown", "m", Policy{Cooldown: rollout.Duration(-time.Second)}, "cooldown -1s is negative"},
		{"no stages", "m", Policy{Rollout: &rollout.Spec{}}, "rollout: stages"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := e.loop.SetPolicy(ctx, c.model, c.p); !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("SetPolicy = %v; want Invalid with %q", err, c.want)
			}
		})
	}
}

func (e *env) setPolicyOf(model string, p Policy) Policy {
	e.t.Helper()
	p, err := e.loop.SetPolicy(ctx, model, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}
