package rollout

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// threeStages is a canary of 2, half the fleet, then all of it, an hour of
// soak each.
func threeStages(onFailure string) Spec {
	return Spec{Model: "m", Version: "2", OnFailure: onFailure, Stages: []Stage{
		{Name: "canary", Count: 2, Soak: Duration(time.Hour)},
		{Name: "half", Percent: 50, Soak: Duration(time.Hour)},
		{Name: "all", Percent: 100},
	}}
}

func countPhase(r Rollout, phase string) int { return r.Phases[phase] }

func desiredVersions(t *testing.T, e *env) map[string]string {
	t.Helper()
	view, err := e.fleet.Devices(ctx, e.order)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for id, d := range view {
		out[id] = modelState(d, "m").DesiredVersion
	}
	return out
}

func TestStagedRolloutCompletes(t *testing.T) {
	e := newEnv(t, 10)
	e.deploy("1")
	r := e.create(threeStages(""))
	if r.State != StateRunning || r.Stage != "canary" || r.Targets != 10 {
		t.Fatalf("new rollout: state %s stage %s targets %d", r.State, r.Stage, r.Targets)
	}
	if n := countPhase(r, PhaseNotified); n != 2 {
		t.Fatalf("canary notified %d devices; want 2 (phases %v)", n, r.Phases)
	}
	canary := map[string]bool{}
	for _, d := range r.Devices {
		if d.Stage == "canary" {
			canary[d.ID] = true
			if d.Previous != "1" {
				t.Errorf("%s previous = %q; want 1", d.ID, d.Previous)
			}
		}
	}
	for id, v := range desiredVersions(t, e) {
		if want := map[bool]string{true: "2", false: "1"}[canary[id]]; v != want {
			t.Errorf("during the canary %s desires %s; want %s", id, v, want)
		}
	}

	e.step()
	r = e.get(r.ID)
	if countPhase(r, PhaseHealthy) != 2 || r.Stage != "canary" {
		t.Fatalf("canary healthy: stage %s phases %v", r.Stage, r.Phases)
	}
	e.clock.Advance(59 * time.Minute)
	e.step()
	if r = e.get(r.ID); r.Stage != "canary" {
		t.Fatalf("canary passed before its soak: stage %s", r.Stage)
	}
	e.clock.Advance(2 * time.Minute)
	e.step()
	r = e.get(r.ID)
	if r.Stage != "half" || countPhase(r, PhaseHealthy) != 5 {
		t.Fatalf("after the canary's soak: stage %s phases %v; want half, 5 healthy", r.Stage, r.Phases)
	}
	e.clock.Advance(time.Hour)
	e.step()
	e.step()
	r = e.get(r.ID)
	dump(t, r)
	if r.State != StateCompleted || countPhase(r, PhaseHealthy) != 10 || r.EndedAt == nil {
		t.Fatalf("end: state %s phases %v", r.State, r.Phases)
	}
	for id, d := range e.devs {
		if d.active != "2" {
			t.Errorf("%s runs %s", id, d.active)
		}
		// One desired state for the deployment of 1, one for 2: no
		// device was notified twice.
		if n := e.pub.count(id); n != 2 {
			t.Errorf("%s was sent %d desired states; want 2", id, n)
		}
	}
	var types []string
	for _, ev := range r.Events {
		if ev.Type != EventDevice {
			types = append(types, ev.Type+":"+ev.Stage)
		}
	}
	want := []string{"created:", "stage_started:canary", "stage_passed:canary", "stage_started:half", "stage_passed:half", "stage_started:all", "stage_passed:all", "completed:"}
	if !slices.Equal(types, want) {
		t.Errorf("events %v;\nwant %v", types, want)
	}
	// The lock is gone: a new rollout of the same devices is accepted.
	e.push("4")
	spec := threeStages("")
	spec.Version = "4"
	e.create(spec)
}

func TestCohortsAreStickyAndDiffer(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	first := cohortOrder("r1", ids)
	if !slices.Equal(first, cohortOrder("r1", slices.Clone(ids))) {
		t.Fatal("cohort order is not deterministic")
	}
	rev := slices.Clone(ids)
	slices.Reverse(rev)
	if !slices.Equal(first, cohortOrder("r1", rev)) {
		t.Fatal("cohort order depends on the input order")
	}
	if slices.Equal(first, cohortOrder("r2", ids)) {
		t.Fatal("two rollouts got the same cohort order")
	}
	// Adding a device does not reorder the others.
	more := cohortOrder("r1", append(slices.Clone(ids), "zz"))
	if !slices.Equal(slices.DeleteFunc(more, func(s string) bool { return s == "zz" }), first) {
		t.Fatal("a new device reordered the existing ones")
	}
}

func TestSelfTestFailurePausesInTheCanary(t *testing.T) {
	e := newEnv(t, 10)
	e.deploy("1")
	for _, d := range e.devs {
		d.behave = "fail"
	}
	r := e.create(threeStages(ActionPause))
	e.step()
	r = e.get(r.ID)
	dump(t, r)
	if r.State != StatePaused || !strings.Contains(r.Reason, "2 of 2 devices failed") {
		t.Fatalf("state %s reason %q; want paused by the failure gate", r.State, r.Reason)
	}
	if countPhase(r, PhaseFailed) != 2 || countPhase(r, PhasePending) != 8 {
		t.Fatalf("phases %v; want the 2 canaries failed and 8 untouched", r.Phases)
	}
	for _, d := range r.Devices {
		if d.Phase == PhaseFailed && !strings.Contains(d.Reason, "self-test") {
			t.Errorf("%s failed for %q; want the agent's self-test error", d.ID, d.Reason)
		}
	}
	// Paused: time passes, nothing more is notified.
	e.clock.Advance(3 * time.Hour)
	e.step()
	if r = e.get(r.ID); countPhase(r, PhasePending) != 8 {
		t.Fatalf("a paused rollout notified devices: %v", r.Phases)
	}
	// Resume re-checks the gate, which still trips.
	if r, err := e.eng.Resume(ctx, r.ID); err != nil || r.State != StatePaused {
		t.Fatalf("resume with failures still there: state %s, %v", r.State, err)
	}
}

func TestSelfTestFailureRollsBackTheCanary(t *testing.T) {
	e := newEnv(t, 10)
	e.deploy("1")
	for _, d := range e.devs {
		d.behave = "fail"
	}
	r := e.create(threeStages(ActionRollback))
	e.step()
	e.step()
	r = e.get(r.ID)
	dump(t, r)
	if r.State != StateRolledBack {
		t.Fatalf("state %s; want rolled_back", r.State)
	}
	if countPhase(r, PhaseRolledBack) != 2 || countPhase(r, PhasePending) != 8 {
		t.Fatalf("phases %v; want 2 rolled back, 8 untouched", r.Phases)
	}
	for id, v := range desiredVersions(t, e) {
		if v != "1" {
			t.Errorf("%s desires %s after the rollback; want 1", id, v)
		}
	}
	for _, d := range e.devs {
		if d.active != "1" {
			t.Errorf("%s runs %s", d.id, d.active)
		}
	}
	// Rolled back is final: the engine stops visiting it.
	if _, err := e.eng.Rollback(ctx, r.ID); !shoalerr.Is(err, shoalerr.Conflict) {
		t.Errorf("second rollback: %v; want Conflict", err)
	}
}

func TestStuckAndBrickedDevicesFailAtTheTimeout(t *testing.T) {
	e := newEnv(t, 6)
	e.deploy("1")
	spec := threeStages(ActionPause)
	spec.Stages[0].Timeout = Duration(15 * time.Minute)
	r := e.create(spec)
	var canary []string
	for _, d := range r.Devices {
		if d.Stage == "canary" {
			canary = append(canary, d.ID)
		}
	}
	// One canary hangs in its download; the other dies right after it
	// was notified and never reports again (a bricked device).
	e.devs[canary[0]].behave = "stuck"
	e.setOnline(canary[1], false)
	e.step()
	r = e.get(r.ID)
	if got := phases(r); got[canary[0]] != PhaseDownloading || got[canary[1]] != PhaseNotified {
		t.Fatalf("before the timeout: %v", got)
	}
	e.clock.Advance(16 * time.Minute)
	e.step()
	r = e.get(r.ID)
	dump(t, r)
	if got := phases(r); got[canary[0]] != PhaseFailed || got[canary[1]] != PhaseFailed {
		t.Fatalf("after the timeout: %v; want both canaries failed", got)
	}
	if r.State != StatePaused {
		t.Fatalf("state %s; want paused", r.State)
	}
	for _, d := range r.Devices {
		if d.Phase == PhaseFailed && !strings.Contains(d.Reason, "timeout of 15m0s") {
			t.Errorf("%s: reason %q", d.ID, d.Reason)
		}
	}
}

func TestOfflineDevicesArePendingAndConvergeLater(t *testing.T) {
	e := newEnv(t, 10)
	e.deploy("1")
	offline := []string{"dev-01", "dev-04", "dev-07"}
	for _, id := range offline {
		e.setOnline(id, false)
	}
	spec := Spec{Model: "m", Version: "2", Stages: []Stage{{Name: "canary", Count: 2}, {Name: "all", Percent: 100}}}
	r := e.create(spec)
	for i := 0; i < 3; i++ {
		e.step()
	}
	r = e.get(r.ID)
	dump(t, r)
	if r.State != StateCompleted {
		t.Fatalf("state %s (%s); want completed on the devices seen", r.State, r.Reason)
	}
	if countPhase(r, PhaseOffline) != 3 || countPhase(r, PhaseHealthy) != 7 || countPhase(r, PhaseFailed) != 0 {
		t.Fatalf("phases %v; want 7 healthy, 3 offline", r.Phases)
	}
	// The canary is two devices seen online; offline devices were passed
	// over, and the last stage took them.
	if c := r.Stages[0]; c.Healthy != 2 || c.Notified != 2 {
		t.Errorf("canary stage %+v; want 2 devices, both healthy", c)
	}
	if a := r.Stages[1]; a.Offline != 3 {
		t.Errorf("last stage %+v; want the 3 offline devices in it", a)
	}
	for _, id := range offline {
		e.setOnline(id, true)
	}
	e.clock.Advance(time.Hour) // longer than any timeout: they were never seen
	e.step()
	r = e.get(r.ID)
	if countPhase(r, PhaseHealthy) != 10 {
		t.Fatalf("after reconnecting: %v; want all 10 healthy", r.Phases)
	}
	for _, id := range offline {
		if e.devs[id].active != "2" {
			t.Errorf("%s runs %s", id, e.devs[id].active)
		}
	}
}

func TestOfflineDevicesWaitForALaterStage(t *testing.T) {
	e := newEnv(t, 10)
	e.deploy("1")
	for _, id := range []string{"dev-03", "dev-05", "dev-06", "dev-08"} {
		e.setOnline(id, false)
	}
	r := e.create(threeStages(ActionPause))
	e.step()
	r = e.get(r.ID)
	if c := r.Stages[0]; c.Notified != 2 || c.Healthy != 2 {
		t.Fatalf("canary %+v; want two online devices", c)
	}
	// No offline device got the version ahead of the canary's verdict.
	desired := desiredVersions(t, e)
	for _, id := range []string{"dev-03", "dev-05", "dev-06", "dev-08"} {
		if p := phases(r)[id]; p != PhasePending || desired[id] != "1" {
			t.Errorf("%s during the canary: phase %s, desired %s; want pending on 1", id, p, desired[id])
		}
	}
	// One comes back: the next stage may take it.
	e.setOnline("dev-05", true)
	e.clock.Advance(time.Hour)
	e.step()
	r = e.get(r.ID)
	if r.Stage != "half" || r.Stages[1].Healthy != 3 || r.Stages[1].Notified != 3 {
		t.Fatalf("half: stage %s %+v; want 3 more devices, all online", r.Stage, r.Stages[1])
	}
	e.clock.Advance(time.Hour)
	e.step()
	r = e.get(r.ID)
	if r.State != StateCompleted || r.Phases[PhaseOffline] != 3 || r.Phases[PhaseHealthy] != 7 {
		t.Fatalf("end: %s %v; want completed with the 3 offline devices notified", r.State, r.Phases)
	}
	if d := desiredVersions(t, e); d["dev-03"] != "2" {
		t.Errorf("offline dev-03 desires %s after the last stage; want 2 (it converges on return)", d["dev-03"])
	}
}

func TestHealthGates(t *testing.T) {
	for _, tc := range []struct {
		name       string
		gate       HealthGate
		errs, p95  uint64
		wantReason string
	}{
		{"error rate", HealthGate{MaxErrorPercent: ptr(5.0)}, 30, 100, "error rate 30.0%"},
		{"latency", HealthGate{MaxP95LatencyRatio: ptr(2.0)}, 0, 450, "4.50× the 100µs it had on 1"},
		{"within bounds", HealthGate{MaxErrorPercent: ptr(5.0), MaxP95LatencyRatio: ptr(2.0)}, 1, 150, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 4)
			e.deploy("1")
			for _, id := range e.order {
				e.telemetry(id, "1", 100, 0, 100)
			}
			spec := threeStages(ActionPause)
			spec.Stages[0].Health = tc.gate
			r := e.create(spec)
			e.step()
			for _, d := range e.get(r.ID).Devices {
				if d.Stage == "canary" {
					e.telemetry(d.ID, "2", 100, tc.errs, tc.p95)
				}
			}
			e.step()
			r = e.get(r.ID)
			dump(t, r)
			if tc.wantReason == "" {
				if r.State != StateRunning || countPhase(r, PhaseHealthy) != 2 {
					t.Fatalf("state %s phases %v; want running with a healthy canary", r.State, r.Phases)
				}
				return
			}
			if r.State != StatePaused || countPhase(r, PhaseFailed) != 2 {
				t.Fatalf("state %s phases %v; want paused with the canary failed", r.State, r.Phases)
			}
			for _, d := range r.Devices {
				if d.Phase == PhaseFailed && !strings.Contains(d.Reason, tc.wantReason) {
					t.Errorf("%s: %q; want it to say %q", d.ID, d.Reason, tc.wantReason)
				}
			}
		})
	}
}

func TestRestartMidStageNotifiesNoOneAgain(t *testing.T) {
	e := newEnv(t, 8)
	e.deploy("1")
	r := e.create(threeStages(""))
	e.step()
	before := map[string]int{}
	for _, id := range e.order {
		before[id] = e.pub.count(id)
	}
	e.restart()
	e.step()
	e.step()
	for _, id := range e.order {
		if n := e.pub.count(id); n != before[id] {
			t.Errorf("%s was sent %d desired states after the restart; want none", id, n-before[id])
		}
	}
	if r = e.get(r.ID); r.Stage != "canary" || countPhase(r, PhaseHealthy) != 2 {
		t.Fatalf("after restart: stage %s phases %v", r.Stage, r.Phases)
	}
	e.clock.Advance(time.Hour)
	e.step()
	e.clock.Advance(time.Hour)
	e.step()
	e.step()
	if r = e.get(r.ID); r.State != StateCompleted {
		t.Fatalf("state %s phases %v; want completed", r.State, r.Phases)
	}
}

func TestOperatorCommands(t *testing.T) {
	e := newEnv(t, 10)
	e.deploy("1")
	r := e.create(threeStages(""))
	e.step()
	if r, err := e.eng.Pause(ctx, r.ID); err != nil || r.State != StatePaused {
		t.Fatalf("pause: %s %v", r.State, err)
	}
	if _, err := e.eng.Pause(ctx, r.ID); !shoalerr.Is(err, shoalerr.Conflict) {
		t.Fatalf("pause twice: %v; want Conflict", err)
	}
	e.clock.Advance(2 * time.Hour)
	e.step()
	if r = e.get(r.ID); r.Stage != "canary" {
		t.Fatalf("a paused rollout moved to %s", r.Stage)
	}
	if r, _ = e.eng.Resume(ctx, r.ID); r.State != StateRunning {
		t.Fatalf("resume: %s", r.State)
	}
	e.step()
	if r = e.get(r.ID); r.Stage != "half" {
		t.Fatalf("resumed after the soak: stage %s; want half", r.Stage)
	}
	// Promote passes "half" at once, soak or not.
	r, err := e.eng.Promote(ctx, r.ID)
	if err != nil || r.Stage != "all" {
		t.Fatalf("promote: stage %s, %v", r.Stage, err)
	}
	if !r.Stages[1].Promoted {
		t.Error("stage half not marked promoted")
	}
	if r, err = e.eng.Abort(ctx, r.ID); err != nil || r.State != StateAborted {
		t.Fatalf("abort: %s %v", r.State, err)
	}
	e.step()
	// Rollback of an aborted rollout returns every notified device.
	if r, err = e.eng.Rollback(ctx, r.ID); err != nil || r.State != StateRolledBack {
		t.Fatalf("rollback: %s %v", r.State, err)
	}
	e.step()
	e.step()
	r = e.get(r.ID)
	dump(t, r)
	if n := countPhase(r, PhaseRolledBack); n != 10 {
		t.Fatalf("phases %v; want every device rolled back", r.Phases)
	}
	for _, d := range e.devs {
		if d.active != "1" {
			t.Errorf("%s runs %s after the rollback", d.id, d.active)
		}
	}
	if _, err := e.eng.Promote(ctx, "r404"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("promote of an unknown rollout: %v; want NotFound", err)
	}
}

func TestOverlapIsRefusedUnlessSuperseding(t *testing.T) {
	e := newEnv(t, 6)
	e.deploy("1")
	first := e.create(Spec{Model: "m", Version: "2", Selector: Selector{Labels: map[string]string{"parity": "even"}}, Stages: []Stage{{Percent: 100}}})
	if first.Targets != 3 {
		t.Fatalf("parity=even selected %d devices; want 3", first.Targets)
	}
	// The odd devices are free.
	e.create(Spec{Model: "m", Version: "3", Selector: Selector{Labels: map[string]string{"parity": "odd"}}, Stages: []Stage{{Percent: 100}}})
	_, err := e.eng.Create(ctx, Spec{Model: "m", Version: "3", Selector: Selector{Devices: []string{"dev-00", "dev-05"}}, Stages: []Stage{{Percent: 100}}})
	if !shoalerr.Is(err, shoalerr.Conflict) || !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("overlapping rollout: %v; want Conflict naming %s", err, first.ID)
	}
	r, err := e.eng.Create(ctx, Spec{Model: "m", Version: "3", Selector: Selector{Devices: []string{"dev-00"}}, Stages: []Stage{{Percent: 100}}, Supersede: true})
	if err != nil {
		t.Fatal(err)
	}
	if old := e.get(first.ID); old.State != StateAborted || !strings.Contains(old.Reason, r.ID) {
		t.Fatalf("superseded rollout: %s %q", old.State, old.Reason)
	}
}

func TestCreateRefusesBadSpecs(t *testing.T) {
	e := newEnv(t, 3)
	for _, tc := range []struct {
		spec Spec
		code shoalerr.Code
		want string
	}{
		{Spec{Model: "m", Version: "9", Stages: []Stage{{Percent: 100}}}, shoalerr.NotFound, "9"},
		{Spec{Model: "m", Version: "2"}, shoalerr.Invalid, "at least one stage"},
		{Spec{Model: "m", Version: "2", Stages: []Stage{{Count: 1}}}, shoalerr.Invalid, "covers 1 of the 3"},
		{Spec{Model: "m", Version: "2", Stages: []Stage{{Count: 1, Percent: 5}}}, shoalerr.Invalid, "not both"},
		{Spec{Model: "m", Version: "2", Stages: []Stage{{Percent: 120}}}, shoalerr.Invalid, "percent 120"},
		{Spec{Model: "m", Version: "2", Stages: []Stage{{Name: "a", Count: 1}, {Name: "a", Percent: 100}}}, shoalerr.Invalid, "used twice"},
		{Spec{Model: "m", Version: "2", OnFailure: "explode", Stages: []Stage{{Percent: 100}}}, shoalerr.Invalid, "on_failure"},
		{Spec{Model: "m", Version: "2", Selector: Selector{Group: "nope"}, Stages: []Stage{{Percent: 100}}}, shoalerr.Invalid, "matches no enrolled device"},
		{Spec{Model: "m", Version: "2", Selector: Selector{Devices: []string{"ghost"}}, Stages: []Stage{{Percent: 100}}}, shoalerr.NotFound, "ghost"},
		{Spec{Model: "m", Version: "2", Stages: []Stage{{Percent: 100, Rate: &Rate{PerMinute: -1}}}}, shoalerr.Invalid, "rate.per_minute"},
		{Spec{Model: "m", Version: "2", CaptureShare: 1.5, Stages: []Stage{{Percent: 100}}}, shoalerr.Invalid, "capture_share"},
	} {
		_, err := e.eng.Create(ctx, tc.spec)
		if !shoalerr.Is(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want %s mentioning %q", tc.spec, err, tc.code, tc.want)
		}
	}
	if _, err := ParseSpec([]byte(`{"model":"m","version":"2","stages":[{"percent":100,"sok":"1h"}]}`)); err == nil || !strings.Contains(err.Error(), "sok") {
		t.Errorf("misspelt field: %v", err)
	}
	if _, err := ParseSpec([]byte(`{"model":"m","version":"2","stages":[{"percent":100,"soak":"an hour"}]}`)); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Errorf("bad duration: %v", err)
	}
}

func TestExponentialRate(t *testing.T) {
	e := newEnv(t, 20)
	e.deploy("1")
	r := e.create(Spec{Model: "m", Version: "2", Stages: []Stage{{Name: "all", Percent: 100, Rate: &Rate{PerMinute: 2, Growth: 2}}}})
	want := []int{2, 6, 14, 20} // 2, +4, +8, the rest
	for i, w := range want {
		if i > 0 {
			e.clock.Advance(time.Minute)
		}
		e.step()
		r = e.get(r.ID)
		if got := r.Targets - countPhase(r, PhasePending); got != w {
			t.Fatalf("minute %d: %d notified; want %d", i, got, w)
		}
	}
	if r.State != StateCompleted {
		t.Fatalf("state %s", r.State)
	}
}

func TestStageSizes(t *testing.T) {
	for _, tc := range []struct {
		st      Stage
		targets int
		want    int
	}{
		{Stage{Count: 2}, 50, 2},
		{Stage{Count: 80}, 50, 50},
		{Stage{Percent: 20}, 50, 10},
		{Stage{Percent: 20}, 3, 1},
		{Stage{Percent: 100}, 7, 7},
		{Stage{Percent: 33.3}, 3, 1},
	} {
		if got := stageSize(&tc.st, tc.targets); got != tc.want {
			t.Errorf("%+v of %d = %d; want %d", tc.st, tc.targets, got, tc.want)
		}
	}
}

func TestCaptureShareIsSignedIntoTheManifest(t *testing.T) {
	e := newEnv(t, 2)
	spec := Spec{Model: "m", Version: "2", CaptureShare: 0.25, Stages: []Stage{{Percent: 100}}}
	r := e.create(spec)
	rec, _, err := e.eng.load(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := trust.LoadOrCreateSigner(filepath.Join(e.dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := trust.NewVerifier(signer.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	payload, err := v.OpenEnvelope(rec.Envelope, trust.ManifestPayloadType)
	if err != nil {
		t.Fatal(err)
	}
	var m shoalv1.DeploymentManifest
	if err := protojson.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	if m.GetCaptureShare() != 0.25 || m.GetModelVersion() != "2" {
		t.Errorf("manifest capture share %v, version %s; want 0.25 of 2", m.GetCaptureShare(), m.GetModelVersion())
	}
}
