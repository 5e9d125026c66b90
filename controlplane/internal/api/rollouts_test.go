package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The devices of these tests are enrolled but no agent runs on them, so
// a rollout holds still long enough to drive every route. They are
// offline unless a test brings them online (online, below): a stage
// before the last passes offline devices over (they stay "pending", and
// nothing is sent to them), while the last stage notifies every device
// left (their desired state is set) and finds the offline ones
// "offline". An online device a stage notifies is "notified", and stays
// so, since nothing reports on it.

// rolloutEnv is an API with summer 1 and 2, winter 1, and the devices ids
// enrolled.
func rolloutEnv(t *testing.T, ids ...string) *env {
	t.Helper()
	e := newEnv(t)
	for _, p := range []struct{ name, version, file string }{
		{"summer", "1", "example_dynamic_axes.onnx"},
		{"summer", "2", "example_multitype.onnx"},
		{"winter", "1", "example_dynamic_axes.onnx"},
	} {
		if r := e.push(p.name, p.version, testModel(t, p.file)); r.status != http.StatusCreated {
			t.Fatalf("push %s %s: %d %s", p.name, p.version, r.status, r.body)
		}
	}
	for _, id := range ids {
		e.enroll(id)
	}
	return e
}

// online makes devices online, as the status an agent publishes on
// connecting does: the fleet handles a DeviceStatus saying so on each
// device's status topic.
func (e *env) online(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		b, err := proto.Marshal(&shoalv1.DeviceStatus{SchemaVersion: 1, DeviceId: id, Online: true})
		if err != nil {
			e.t.Fatal(err)
		}
		e.fleet.HandleStatus(e.scheme.Device(id, topics.Status), b)
		r := e.get("/api/v1/devices/" + id)
		if r.status != http.StatusOK {
			e.t.Fatalf("GET device %s = %d %s", id, r.status, r.body)
		}
		var d fleet.Device
		if r.json(e.t, &d); !d.Online {
			e.t.Fatalf("device %s is not online after its online status: %s", id, r.body)
		}
	}
}

// rollout decodes a rollout view, which must have the given status.
func (r response) rollout(t *testing.T, status int) rollout.Rollout {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d %s; want %d", r.status, r.body, status)
	}
	var v rollout.Rollout
	r.json(t, &v)
	return v
}

// createRollout creates a rollout that must be accepted.
func (e *env) createRollout(spec string) rollout.Rollout {
	e.t.Helper()
	return e.postJSON("/api/v1/rollouts", spec).rollout(e.t, http.StatusCreated)
}

func (e *env) rolloutAction(id, action string) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/api/v1/rollouts/"+id+"/"+action, nil)
}

// desiredVersion is the version of model in the device's desired state
// ("" if none).
func (e *env) desiredVersion(id, model string) string {
	e.t.Helper()
	r := e.get("/api/v1/devices/" + id)
	var d fleet.Device
	r.json(e.t, &d)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET device %s = %d %s", id, r.status, r.body)
	}
	for _, m := range d.Models {
		if m.Name == model {
			return m.DesiredVersion
		}
	}
	return ""
}

func TestRolloutCreate(t *testing.T) {
	e := rolloutEnv(t, "dev-a", "dev-b", "dev-c", "dev-d")
	r := e.get("/api/v1/rollouts")
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"rollouts":[]}` {
		t.Errorf("empty rollout list = %d %s", r.status, r.body)
	}
	// dev-a and dev-b are online; dev-c is not.
	e.online("dev-a", "dev-b")
	watch := map[string]*desiredWatch{"dev-a": e.watchDesired("dev-a"), "dev-b": e.watchDesired("dev-b")}

	r = e.postJSON("/api/v1/rollouts", `{"model":"summer","version":"1",
		"selector":{"devices":["dev-a","dev-b","dev-c"]},
		"health":{"predictions":50,"seconds":120},
		"stages":[{"name":"canary","count":1,"soak":"5m"},{"percent":100,"failure":{"max_percent":10}}]}`)
	ro := r.rollout(t, http.StatusCreated)
	var raw map[string]any
	r.json(t, &raw)
	for _, k := range []string{"id", "model", "version", "state", "reason", "stage", "targets", "release_sequence",
		"phases", "stages", "created_at", "updated_at", "ended_at", "spec", "devices"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("Rollout JSON lacks %q: %s", k, r.body)
		}
	}
	if _, ok := raw["events"]; ok {
		t.Errorf("the created rollout has events; only GET of one rollout has them: %s", r.body)
	}
	if ro.ID != "r1" || ro.Model != "summer" || ro.Version != "1" || ro.State != rollout.StateRunning || ro.Reason != "" ||
		ro.Stage != "canary" || ro.Targets != 3 || ro.ReleaseSequence != 1 || ro.EndedAt != nil || ro.CreatedAt.IsZero() {
		t.Errorf("created rollout = %s", r.body)
	}
	// The canary notified one device seen online: the first of dev-a and
	// dev-b in the rollout's order. dev-c, offline, was passed over: it
	// stays pending for a later stage, and is sent nothing.
	if fmt.Sprint(ro.Phases) != "map[notified:1 pending:2]" {
		t.Errorf("phases = %v; want one device notified and two pending", ro.Phases)
	}
	if len(ro.Stages) != 2 {
		t.Fatalf("stages = %+v", ro.Stages)
	}
	if s := ro.Stages[0]; s.Name != "canary" || s.State != "running" || s.Size != 1 || s.Notified != 1 || s.Offline != 0 || s.StartedAt == nil || s.PassedAt != nil {
		t.Errorf("canary = %+v; want one device notified, none offline", s)
	}
	if s := ro.Stages[1]; s.Name != "stage-2" || s.State != "pending" || s.Size != 3 || s.Notified != 0 || s.StartedAt != nil {
		t.Errorf("second stage = %+v; want stage-2, pending, size 3", s)
	}
	var ids []string
	canary := ""
	for _, d := range ro.Devices {
		ids = append(ids, d.ID)
		switch {
		case d.Phase == rollout.PhaseNotified:
			if canary != "" || d.ID == "dev-c" || d.Stage != "canary" || d.NotifiedAt == nil || d.Previous != "" {
				t.Errorf("device %+v; want one online device, notified by the canary", d)
			}
			canary = d.ID
		case d.Phase != rollout.PhasePending || d.Stage != "" || d.NotifiedAt != nil:
			t.Errorf("device %+v; want it pending, not notified", d)
		}
	}
	if strings.Join(ids, ",") != "dev-a,dev-b,dev-c" {
		t.Errorf("devices = %v; want those the selector lists, by id", ids)
	}
	if canary == "" {
		t.Fatalf("the canary notified no device: %+v", ro.Devices)
	}

	// The stored spec says everything the engine will do: the defaults
	// are filled in.
	sp := ro.Spec
	if sp.OnFailure != rollout.ActionPause || sp.Health == nil || sp.Health.Predictions != 50 || sp.Health.Seconds != 120 {
		t.Errorf("spec = %+v", sp)
	}
	c, all := sp.Stages[0], sp.Stages[1]
	if c.Timeout.D() != rollout.DefaultTimeout || c.Soak.String() != "5m0s" || *c.Success.MinHealthyPercent != 100 ||
		c.Failure.MaxCount == nil || *c.Failure.MaxCount != 0 || c.Failure.MaxPercent != nil ||
		c.Health.MinPredictions != rollout.DefaultMinPredictions || c.OnFailure != rollout.ActionPause {
		t.Errorf("canary's defaults = %+v", c)
	}
	if all.Failure.MaxCount != nil || *all.Failure.MaxPercent != 10 {
		t.Errorf("failure gate of stage-2 = %+v; want max_percent 10 and no max_count", all.Failure)
	}
	if !strings.Contains(string(r.body), `"timeout":"10m0s"`) {
		t.Errorf("durations are not written as strings: %s", r.body)
	}

	// Notified means the desired state: the signed manifest, carrying the
	// spec's health check. The devices not notified have none.
	for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
		want := ""
		if id == canary {
			want = "1"
		}
		if v := e.desiredVersion(id, "summer"); v != want {
			t.Errorf("desired version of summer on %s = %q; want %q", id, v, want)
		}
	}
	if v := e.desiredVersion("dev-d", "summer"); v != "" {
		t.Errorf("dev-d, outside the selector, was sent summer %s", v)
	}
	m := openManifest(t, e.signer.PublicKeyPEM(), watch[canary].next(t).GetDeployments()[0])
	if m.GetModelVersion() != "1" || m.GetReleaseSequence() != 1 ||
		m.GetHealthCheck().GetMinPredictions() != 50 || m.GetHealthCheck().GetMinSeconds() != 120 {
		t.Errorf("manifest sent to %s = %v; want summer 1 with the spec's health check", canary, m)
	}

	// An empty selector is the whole fleet; a group narrows it.
	ro = e.createRollout(`{"model":"winter","version":"1","stages":[{"percent":100}]}`)
	if ro.ID != "r2" || ro.Targets != 4 || ro.Stages[0].Name != "stage-1" {
		t.Errorf("rollout to every device = %+v", ro)
	}
	e.patchJSON("/api/v1/devices/dev-b", `{"group":"north"}`)
	e.patchJSON("/api/v1/devices/dev-d", `{"group":"north","labels":{"env":"prod"}}`)
	e.rolloutAction("r2", "abort").rollout(t, http.StatusOK)
	ro = e.createRollout(`{"model":"winter","version":"1","selector":{"group":"north","labels":{"env":"prod"}},"stages":[{"count":5}]}`)
	if ro.Targets != 1 || len(ro.Devices) != 1 || ro.Devices[0].ID != "dev-d" {
		t.Errorf("rollout to group north, env=prod = %+v; want dev-d alone", ro)
	}
}

func TestRolloutCreateErrors(t *testing.T) {
	e := rolloutEnv(t, "dev-a", "dev-b", "dev-c")
	for _, tc := range []struct {
		name, body string
		status     int
		code       shoalerr.Code
		text       []string
	}{
		{"no body", ``, http.StatusBadRequest, shoalerr.Invalid, []string{"JSON body"}},
		{"not JSON", `model: summer`, http.StatusBadRequest, shoalerr.Invalid, []string{"JSON"}},
		{"unknown field", `{"model":"summer","version":"1","stages":[{"percent":100,"failure":{"max_precent":5}}]}`,
			http.StatusBadRequest, shoalerr.Invalid, []string{`"max_precent"`}},
		{"unknown top-level field", `{"model":"summer","version":"1","stage":[{"percent":100}]}`,
			http.StatusBadRequest, shoalerr.Invalid, []string{`"stage"`}},
		{"version as a number", `{"model":"summer","version":1,"stages":[{"percent":100}]}`,
			http.StatusBadRequest, shoalerr.Invalid, []string{"version"}},
		{"no model", `{"version":"1","stages":[{"percent":100}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"model is missing"}},
		{"bad version", `{"model":"summer","version":"1 2","stages":[{"percent":100}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"version", `"1 2"`}},
		{"no stages", `{"model":"summer","version":"1"}`, http.StatusBadRequest, shoalerr.Invalid, []string{"stages", "at least one stage"}},
		{"no size", `{"model":"summer","version":"1","stages":[{"name":"all"}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{`stage "all"`, "count", "percent"}},
		{"count and percent", `{"model":"summer","version":"1","stages":[{"count":1,"percent":100}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"count or percent, not both"}},
		{"percent over 100", `{"model":"summer","version":"1","stages":[{"percent":150}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"percent 150"}},
		{"negative count", `{"model":"summer","version":"1","stages":[{"count":-1}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"count -1"}},
		{"bad soak", `{"model":"summer","version":"1","stages":[{"percent":100,"soak":"soon"}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{`"soon"`, "duration"}},
		{"negative timeout", `{"model":"summer","version":"1","stages":[{"percent":100,"timeout":"-1m"}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"timeout -1m0s"}},
		{"same stage name", `{"model":"summer","version":"1","stages":[{"name":"a","count":1},{"name":"a","percent":100}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{`stages[1].name "a"`}},
		{"bad on_failure", `{"model":"summer","version":"1","on_failure":"panic","stages":[{"percent":100}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{`on_failure "panic"`}},
		{"bad stage on_failure", `{"model":"summer","version":"1","stages":[{"percent":100,"on_failure":"retry"}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{`on_failure "retry"`}},
		{"bad success gate", `{"model":"summer","version":"1","stages":[{"percent":100,"success":{"min_healthy_percent":120}}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"success.min_healthy_percent 120"}},
		{"bad failure gate", `{"model":"summer","version":"1","stages":[{"percent":100,"failure":{"max_count":-2}}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"failure.max_count -2"}},
		{"bad error bound", `{"model":"summer","version":"1","stages":[{"percent":100,"health":{"max_error_percent":101}}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"health.max_error_percent 101"}},
		{"bad latency bound", `{"model":"summer","version":"1","stages":[{"percent":100,"health":{"max_p95_latency_ratio":0}}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"health.max_p95_latency_ratio 0"}},
		{"bad rate", `{"model":"summer","version":"1","stages":[{"percent":100,"rate":{"per_minute":0}}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"rate.per_minute 0"}},
		{"bad growth", `{"model":"summer","version":"1","stages":[{"percent":100,"rate":{"per_minute":1,"growth":0.5}}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"rate.growth 0.5"}},
		{"last stage too small", `{"model":"summer","version":"1","stages":[{"name":"few","count":2}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{`"few"`, "2 of the 3 devices", "percent: 100"}},
		{"selector matches nothing", `{"model":"summer","version":"1","selector":{"group":"nobody"},"stages":[{"percent":100}]}`, http.StatusBadRequest, shoalerr.Invalid, []string{"group=nobody", "no enrolled device"}},
		{"unknown device", `{"model":"summer","version":"1","selector":{"devices":["dev-a","ghost"]},"stages":[{"percent":100}]}`, http.StatusNotFound, shoalerr.NotFound, []string{"selector.devices", "ghost"}},
		{"unknown version", `{"model":"summer","version":"7","stages":[{"percent":100}]}`, http.StatusNotFound, shoalerr.NotFound, []string{`"7"`}},
		{"unknown model", `{"model":"autumn","version":"1","stages":[{"percent":100}]}`, http.StatusNotFound, shoalerr.NotFound, []string{"autumn"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.postJSON("/api/v1/rollouts", tc.body).wantError(t, tc.status, tc.code, tc.text...)
		})
	}
	// Nothing refused was created, and no device was sent anything.
	if r := e.get("/api/v1/rollouts"); strings.TrimSpace(string(r.body)) != `{"rollouts":[]}` {
		t.Errorf("after refused creations the list is %s", r.body)
	}
	if v := e.desiredVersion("dev-a", "summer"); v != "" {
		t.Errorf("a refused rollout sent summer %s to dev-a", v)
	}
	// The first rollout accepted is still r1: refusals use up no id.
	if ro := e.createRollout(`{"model":"summer","version":"1","stages":[{"percent":100}]}`); ro.ID != "r1" {
		t.Errorf("first rollout after refusals is %s; want r1", ro.ID)
	}
}

func TestRolloutOverlap(t *testing.T) {
	e := rolloutEnv(t, "dev-a", "dev-b", "dev-c")
	e.createRollout(`{"model":"summer","version":"1","selector":{"devices":["dev-a","dev-b"]},"stages":[{"percent":100}]}`)

	// Another rollout of the model to a device r1 holds is refused,
	// naming the holder and the shared device.
	overlap := `{"model":"summer","version":"2","selector":{"devices":["dev-b","dev-c"]},"stages":[{"percent":100}]%s}`
	e.postJSON("/api/v1/rollouts", fmt.Sprintf(overlap, "")).
		wantError(t, http.StatusConflict, shoalerr.Conflict, "rollout r1 of model summer already holds dev-b", "supersede")
	// Locks are per model: winter may go to the same devices.
	if ro := e.createRollout(`{"model":"winter","version":"1","selector":{"devices":["dev-b"]},"stages":[{"percent":100}]}`); ro.ID != "r2" {
		t.Errorf("rollout of another model = %s; want r2", ro.ID)
	}
	// A paused rollout still holds its devices.
	e.rolloutAction("r1", "pause").rollout(t, http.StatusOK)
	e.postJSON("/api/v1/rollouts", fmt.Sprintf(overlap, "")).wantError(t, http.StatusConflict, shoalerr.Conflict, "r1")

	// supersede aborts the holder instead.
	r3 := e.createRollout(fmt.Sprintf(overlap, `,"supersede":true`))
	if r3.ID != "r3" || r3.State != rollout.StateRunning || r3.Targets != 2 {
		t.Errorf("superseding rollout = %+v", r3)
	}
	r1 := e.get("/api/v1/rollouts/r1").rollout(t, http.StatusOK)
	if r1.State != rollout.StateAborted || r1.Reason != "superseded by rollout r3" || r1.EndedAt == nil {
		t.Errorf("superseded rollout: state %s, reason %q, ended %v", r1.State, r1.Reason, r1.EndedAt)
	}
	if last := r1.Events[len(r1.Events)-1]; last.Type != rollout.EventAborted || !strings.Contains(last.Message, "r3") {
		t.Errorf("last event of r1 = %+v; want it aborted by r3", last)
	}
	if v := e.desiredVersion("dev-b", "summer"); v != "2" {
		t.Errorf("dev-b's desired summer = %q; want the superseding rollout's 2", v)
	}
	// An ended rollout holds nothing: dev-a is free again.
	e.createRollout(`{"model":"summer","version":"1","selector":{"devices":["dev-a"]},"stages":[{"percent":100}]}`)
}

func TestRolloutListGetEvents(t *testing.T) {
	e := rolloutEnv(t, "dev-a", "dev-b")
	// Online, so that r1's canary notifies one of them.
	e.online("dev-a", "dev-b")
	e.createRollout(`{"model":"summer","version":"1","stages":[{"name":"canary","count":1},{"name":"all","percent":100}]}`)
	e.createRollout(`{"model":"winter","version":"1","stages":[{"percent":100}]}`)

	list := func(query string) []rollout.Rollout {
		t.Helper()
		r := e.get("/api/v1/rollouts" + query)
		var out struct {
			Rollouts []rollout.Rollout `json:"rollouts"`
		}
		r.json(t, &out)
		if r.status != http.StatusOK || out.Rollouts == nil {
			t.Fatalf("GET rollouts%s = %d %s", query, r.status, r.body)
		}
		if strings.Contains(string(r.body), `"events"`) {
			t.Errorf("the list holds events; only GET of one rollout does: %s", r.body)
		}
		return out.Rollouts
	}
	ids := func(rs []rollout.Rollout) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	all := list("")
	if ids(all) != "r2,r1" {
		t.Fatalf("list = %s; want newest first, r2,r1", ids(all))
	}
	if len(all[1].Devices) != 2 || fmt.Sprint(all[1].Phases) != "map[notified:1 pending:1]" || all[1].Stage != "canary" {
		t.Errorf("r1 in the list = %+v; want its devices and phases", all[1])
	}
	if got := ids(list("?model=summer")); got != "r1" {
		t.Errorf("list ?model=summer = %s; want r1", got)
	}
	if got := list("?model=autumn"); len(got) != 0 {
		t.Errorf("list ?model=autumn = %s; want none", ids(got))
	}

	ro := e.get("/api/v1/rollouts/r1").rollout(t, http.StatusOK)
	if ro.ID != "r1" || ro.Model != "summer" || len(ro.Devices) != 2 {
		t.Errorf("GET r1 = %+v", ro)
	}
	// created, stage_started, then the device the canary notified.
	var types []string
	for i, ev := range ro.Events {
		types = append(types, ev.Type)
		if ev.Seq != uint64(i+1) || ev.Time.IsZero() || ev.Message == "" {
			t.Errorf("event %d = %+v; want seq %d, a time and a message", i, ev, i+1)
		}
	}
	if strings.Join(types, ",") != "created,stage_started,device" {
		t.Fatalf("events of r1 = %v", types)
	}
	if ev := ro.Events[0]; !strings.Contains(ev.Message, "summer 1 to 2 devices in 2 stages") || !strings.Contains(ev.Message, "canary (1) → all (2)") {
		t.Errorf("created event = %q", ev.Message)
	}
	if ev := ro.Events[1]; ev.Stage != "canary" {
		t.Errorf("stage_started event = %+v; want stage canary", ev)
	}
	if ev := ro.Events[2]; ev.Stage != "canary" || ev.Phase != rollout.PhaseNotified || ev.Device == "" || ev.Message != "pending → notified" {
		t.Errorf("device event = %+v; want a device going pending → notified in the canary", ev)
	}

	events := func(query string) []rollout.Event {
		t.Helper()
		r := e.get("/api/v1/rollouts/r1/events" + query)
		var out struct {
			Events []rollout.Event `json:"events"`
		}
		r.json(t, &out)
		if r.status != http.StatusOK || out.Events == nil {
			t.Fatalf("GET events%s = %d %s", query, r.status, r.body)
		}
		return out.Events
	}
	if got := events(""); len(got) != 3 {
		t.Errorf("all events = %+v; want the 3 of GET", got)
	}
	if got := events("?after=0"); len(got) != 3 {
		t.Errorf("events after 0 = %d; want all 3", len(got))
	}
	if got := events("?after=1"); len(got) != 2 || got[0].Seq != 2 || got[1].Seq != 3 {
		t.Errorf("events after 1 = %+v; want seq 2 and 3", got)
	}
	if got := events("?after=3"); len(got) != 0 {
		t.Errorf("events after the last = %+v; want none", got)
	}
	// A follower sees what an action adds, and only that.
	e.rolloutAction("r1", "pause").rollout(t, http.StatusOK)
	if got := events("?after=3"); len(got) != 1 || got[0].Seq != 4 || got[0].Type != rollout.EventPaused || got[0].Stage != "canary" {
		t.Errorf("events after pausing = %+v; want one paused event, seq 4", got)
	}

	e.get("/api/v1/rollouts/r1/events?after=last").wantError(t, http.StatusBadRequest, shoalerr.Invalid, `"last"`)
	e.get("/api/v1/rollouts/r1/events?after=-1").wantError(t, http.StatusBadRequest, shoalerr.Invalid, `"-1"`)
	e.get("/api/v1/rollouts/r9").wantError(t, http.StatusNotFound, shoalerr.NotFound, `"r9"`, "shoal rollout list")
	e.get("/api/v1/rollouts/r9/events").wantError(t, http.StatusNotFound, shoalerr.NotFound, `"r9"`)
}

func TestRolloutActions(t *testing.T) {
	e := rolloutEnv(t, "dev-a", "dev-b")
	e.createRollout(`{"model":"summer","version":"1","stages":[{"name":"canary","count":1},{"name":"all","percent":100}]}`)

	// Each action answers with the rollout as it is afterwards; one the
	// state does not allow is a 409 that says which states do.
	e.rolloutAction("r1", "resume").wantError(t, http.StatusConflict, shoalerr.Conflict, "r1 is running", "cannot be resumed", "paused")
	ro := e.rolloutAction("r1", "pause").rollout(t, http.StatusOK)
	if ro.State != rollout.StatePaused || ro.Reason != "paused by an operator" || ro.EndedAt != nil {
		t.Errorf("after pause: state %s, reason %q", ro.State, ro.Reason)
	}
	e.rolloutAction("r1", "pause").wantError(t, http.StatusConflict, shoalerr.Conflict, "r1 is paused", "cannot be paused", "running")
	if ro = e.rolloutAction("r1", "resume").rollout(t, http.StatusOK); ro.State != rollout.StateRunning || ro.Reason != "" {
		t.Errorf("after resume: state %s, reason %q", ro.State, ro.Reason)
	}

	// Promote passes the canary although no device is healthy (both are
	// offline: the canary notified neither), then the last stage, which
	// notified them both, and completes the rollout.
	ro = e.rolloutAction("r1", "promote").rollout(t, http.StatusOK)
	if ro.State != rollout.StateRunning || ro.Stage != "all" || ro.Stages[0].State != "passed" || !ro.Stages[0].Promoted ||
		ro.Stages[0].PassedAt == nil || ro.Stages[1].State != "running" {
		t.Errorf("after promote: %+v", ro)
	}
	ro = e.rolloutAction("r1", "promote").rollout(t, http.StatusOK)
	if ro.State != rollout.StateCompleted || ro.EndedAt == nil || ro.Stages[1].State != "passed" {
		t.Errorf("after promoting the last stage: state %s, stages %+v", ro.State, ro.Stages)
	}
	for _, a := range []string{"pause", "resume", "promote", "abort"} {
		e.rolloutAction("r1", a).wantError(t, http.StatusConflict, shoalerr.Conflict, "r1 is completed")
	}

	// Rollback: the devices ran no earlier version, so summer leaves
	// their desired state.
	if v := e.desiredVersion("dev-a", "summer"); v != "1" {
		t.Fatalf("dev-a's desired summer = %q before the rollback; want 1", v)
	}
	ro = e.rolloutAction("r1", "rollback").rollout(t, http.StatusOK)
	if ro.State != rollout.StateRolledBack || ro.Reason != "rolled back by an operator" || ro.Phases[rollout.PhaseRolledBack] != 2 {
		t.Errorf("after rollback: state %s, reason %q, phases %v", ro.State, ro.Reason, ro.Phases)
	}
	for _, d := range ro.Devices {
		if !strings.Contains(d.Reason, "ran no earlier version") {
			t.Errorf("device %s rolled back with reason %q", d.ID, d.Reason)
		}
		if v := e.desiredVersion(d.ID, "summer"); v != "" {
			t.Errorf("%s's desired summer = %q after the rollback; want none", d.ID, v)
		}
	}
	e.rolloutAction("r1", "rollback").wantError(t, http.StatusConflict, shoalerr.Conflict, "r1 is rolled_back", "cannot be rolled back")

	var types []string
	for _, ev := range e.get("/api/v1/rollouts/r1").rollout(t, http.StatusOK).Events {
		if ev.Type != rollout.EventDevice {
			types = append(types, ev.Type)
		}
	}
	if want := "created,stage_started,paused,resumed,promoted,stage_passed,stage_started,promoted,stage_passed,completed,rollback"; strings.Join(types, ",") != want {
		t.Errorf("events = %s\nwant     %s", strings.Join(types, ","), want)
	}

	// Abort ends a rollout where it is; the devices keep the version.
	r2 := e.createRollout(`{"model":"summer","version":"2","stages":[{"percent":100}]}`)
	ro = e.rolloutAction(r2.ID, "abort").rollout(t, http.StatusOK)
	if ro.State != rollout.StateAborted || ro.Reason != "aborted by an operator" || ro.EndedAt == nil {
		t.Errorf("after abort: state %s, reason %q", ro.State, ro.Reason)
	}
	if v := e.desiredVersion("dev-b", "summer"); v != "2" {
		t.Errorf("dev-b's desired summer = %q after abort; want 2 kept", v)
	}
	e.rolloutAction(r2.ID, "resume").wantError(t, http.StatusConflict, shoalerr.Conflict, "is aborted", "cannot be resumed")
	e.rolloutAction(r2.ID, "abort").wantError(t, http.StatusConflict, shoalerr.Conflict, "is aborted", "cannot be aborted")

	// Wrong action, rollout or body.
	e.rolloutAction("r1", "explode").wantError(t, http.StatusNotFound, shoalerr.NotFound, `"explode"`, "pause, resume, promote, abort or rollback")
	e.rolloutAction("r9", "pause").wantError(t, http.StatusNotFound, shoalerr.NotFound, `"r9"`)
	e.postJSON("/api/v1/rollouts/"+r2.ID+"/rollback", `{"force":true}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "force")
	if ro = e.get("/api/v1/rollouts/"+r2.ID).rollout(t, http.StatusOK); ro.State != rollout.StateAborted {
		t.Errorf("a refused rollback changed the rollout to %s", ro.State)
	}
	e.get("/api/v1/rollouts/r1/pause").wantError(t, http.StatusMethodNotAllowed, shoalerr.Invalid, "GET")
	// An empty JSON object is a body actions accept.
	if ro = e.postJSON("/api/v1/rollouts/"+r2.ID+"/rollback", `{}`).rollout(t, http.StatusOK); ro.State != rollout.StateRolledBack {
		t.Errorf("rollback with {} = %s", ro.State)
	}
}

// TestRolloutOfflineDevicesWaitForTheLastStage: a stage before the last
// passes offline devices over, so that none installs the version before
// a gate has judged the stage; only the last stage takes every device
// left, notifying the offline ones, which converge when they return.
func TestRolloutOfflineDevicesWaitForTheLastStage(t *testing.T) {
	ids := []string{"dev-a", "dev-b", "dev-c"}
	e := rolloutEnv(t, ids...)
	watch := map[string]*desiredWatch{}
	for _, id := range ids {
		watch[id] = e.watchDesired(id)
	}
	ro := e.createRollout(`{"model":"summer","version":"1","stages":[{"name":"canary","count":1},{"name":"all","percent":100}]}`)

	// Every device is offline: the canary notifies none and waits, pass
	// after pass, for one to come online.
	waiting := func(ro rollout.Rollout, when string) {
		t.Helper()
		if ro.State != rollout.StateRunning || ro.Stage != "canary" || fmt.Sprint(ro.Phases) != "map[pending:3]" {
			t.Errorf("%s: state %s, stage %s, phases %v; want running in the canary, every device pending", when, ro.State, ro.Stage, ro.Phases)
		}
		if s := ro.Stages[0]; s.State != "running" || s.Notified != 0 || s.Offline != 0 || s.GateMetAt != nil || s.PassedAt != nil {
			t.Errorf("%s: canary = %+v; want running, no device notified", when, s)
		}
		for _, d := range ro.Devices {
			if d.Phase != rollout.PhasePending || d.Stage != "" || d.NotifiedAt != nil {
				t.Errorf("%s: device %+v; want pending, not notified", when, d)
			}
		}
		for _, id := range ids {
			if v := e.desiredVersion(id, "summer"); v != "" {
				t.Errorf("%s: %s's desired summer = %q; want none", when, id, v)
			}
		}
	}
	waiting(ro, "created")
	for range 3 {
		if err := e.rollouts.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ro = e.get("/api/v1/rollouts/r1").rollout(t, http.StatusOK)
	waiting(ro, "after three more passes")
	var types []string
	for _, ev := range ro.Events {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "created,stage_started" {
		t.Errorf("events while the canary waits = %v; want no device event", types)
	}

	// Promote: the last stage takes every device. Offline, they are
	// notified: their desired state holds the version, for when they
	// return.
	ro = e.rolloutAction("r1", "promote").rollout(t, http.StatusOK)
	if ro.State != rollout.StateRunning || ro.Stage != "all" || fmt.Sprint(ro.Phases) != "map[offline:3]" {
		t.Errorf("after promote: state %s, stage %s, phases %v; want running in all, every device offline", ro.State, ro.Stage, ro.Phases)
	}
	if c, a := ro.Stages[0], ro.Stages[1]; c.State != "passed" || c.Notified != 0 || a.State != "running" || a.Notified != 3 || a.Offline != 3 {
		t.Errorf("after promote: stages %+v; want the canary passed with none, all running with the 3 offline devices", ro.Stages)
	}
	for _, d := range ro.Devices {
		if d.Phase != rollout.PhaseOffline || d.Stage != "all" || d.NotifiedAt == nil {
			t.Errorf("device %+v; want offline, notified by the last stage", d)
		}
	}
	for _, id := range ids {
		if v := e.desiredVersion(id, "summer"); v != "1" {
			t.Errorf("%s's desired summer = %q after the last stage; want 1", id, v)
		}
		if m := openManifest(t, e.signer.PublicKeyPEM(), watch[id].next(t).GetDeployments()[0]); m.GetModelVersion() != "1" {
			t.Errorf("manifest sent to %s = %v; want summer 1", id, m)
		}
		if n := watch[id].count(); n != 1 {
			t.Errorf("%s was sent %d desired states; want the last stage's one", id, n)
		}
	}
}

// TestDeployToHeldDevices: a direct deployment to a device that a running
// or paused rollout of the model holds would fight the rollout; it is
// refused until the rollout ends.
func TestDeployToHeldDevices(t *testing.T) {
	e := rolloutEnv(t, "dev-a", "dev-b", "dev-c")
	e.createRollout(`{"model":"summer","version":"2","selector":{"devices":["dev-a","dev-b"]},"stages":[{"percent":100}]}`)

	deploy := func(body string) response {
		t.Helper()
		return e.postJSON("/api/v1/deployments", body)
	}
	deploy(`{"model":"summer","version":"1","devices":["dev-a"]}`).
		wantError(t, http.StatusConflict, shoalerr.Conflict, "dev-a", "rollout r1 of model summer", "--supersede")
	deploy(`{"model":"summer","version":"1","devices":["dev-c","dev-b"]}`).
		wantError(t, http.StatusConflict, shoalerr.Conflict, "1 device(s) (dev-b)", "r1")
	// Every device: two of them are held.
	deploy(`{"model":"summer","version":"1"}`).wantError(t, http.StatusConflict, shoalerr.Conflict, "2 device(s) (dev-a, dev-b)")
	if v := e.desiredVersion("dev-a", "summer"); v != "2" {
		t.Errorf("dev-a's desired summer = %q after refused deployments; want the rollout's 2", v)
	}

	// Devices the rollout does not hold, and other models, are free.
	if r := deploy(`{"model":"summer","version":"1","devices":["dev-c"]}`); r.status != http.StatusOK {
		t.Errorf("deploy to dev-c = %d %s", r.status, r.body)
	}
	if r := deploy(`{"model":"winter","version":"1","devices":["dev-a"]}`); r.status != http.StatusOK {
		t.Errorf("deploy of winter to dev-a = %d %s", r.status, r.body)
	}

	e.rolloutAction("r1", "pause").rollout(t, http.StatusOK)
	deploy(`{"model":"summer","version":"1","devices":["dev-a"]}`).wantError(t, http.StatusConflict, shoalerr.Conflict, "r1")

	e.rolloutAction("r1", "abort").rollout(t, http.StatusOK)
	if r := deploy(`{"model":"summer","version":"1","devices":["dev-a","dev-b"]}`); r.status != http.StatusOK {
		t.Fatalf("deploy after the rollout was aborted = %d %s", r.status, r.body)
	}
	if v := e.desiredVersion("dev-a", "summer"); v != "1" {
		t.Errorf("dev-a's desired summer = %q after the deployment; want 1", v)
	}
}
