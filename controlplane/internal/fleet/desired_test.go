package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// desiredOf decodes the last DesiredState published for id.
func desiredOf(t *testing.T, r *recorder, id string) *shoalv1.DesiredState {
	t.Helper()
	m := r.last(t, scheme.Device(id, topics.Desired))
	if !m.retained {
		t.Errorf("desired state of %s not retained", id)
	}
	var ds shoalv1.DesiredState
	if err := proto.Unmarshal(m.payload, &ds); err != nil {
		t.Fatal(err)
	}
	return &ds
}

func TestSetDesired(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	e.enroll(t, "b")
	m1 := envelope(t, "m1", "1")
	m0 := envelope(t, "m0", "7")

	// Persist first, then publish: whatever is published is already in the
	// store.
	e.pub.before = func(topic string, payload []byte) {
		id, _, _ := scheme.Parse(topic)
		var ds shoalv1.DesiredState
		proto.Unmarshal(payload, &ds)
		d, err := e.svc.Get(ctx, id)
		if err != nil || d.DesiredGeneration != ds.GetGeneration() {
			t.Errorf("published generation %d of %s before storing it (stored: %d, %v)", ds.GetGeneration(), id, d.DesiredGeneration, err)
		}
	}

	res, err := e.svc.SetDesired(ctx, "m1", m1, []string{"a", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res) != "[{a 1}]" {
		t.Fatalf("results = %v", res)
	}
	ds := desiredOf(t, e.pub, "a")
	if ds.GetSchemaVersion() != 1 || ds.GetGeneration() != 1 || ds.GetIssuedAtUnixMs() != e.clk.Now().UnixMilli() ||
		len(ds.GetDeployments()) != 1 || !bytes.Equal(ds.GetDeployments()[0], m1) {
		t.Fatalf("desired state = %v", ds)
	}

	e.clk.Advance(time.Minute)
	res, err = e.svc.SetDesired(ctx, "m0", m0, nil) // every device
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res) != "[{a 2} {b 1}]" {
		t.Fatalf("results = %v", res)
	}
	ds = desiredOf(t, e.pub, "a")
	if ds.GetGeneration() != 2 || len(ds.GetDeployments()) != 2 ||
		!bytes.Equal(ds.GetDeployments()[0], m0) || !bytes.Equal(ds.GetDeployments()[1], m1) {
		t.Fatalf("desired state of a = %v; want m0 then m1", ds)
	}
	if ds := desiredOf(t, e.pub, "b"); ds.GetGeneration() != 1 || len(ds.GetDeployments()) != 1 {
		t.Fatalf("desired state of b = %v", ds)
	}
	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if d.DesiredGeneration != 2 || len(d.Models) != 2 || d.Models[0].DesiredVersion != "7" || d.Models[1].DesiredVersion != "1" {
		t.Fatalf("device = %+v", d)
	}

	// Refusals change nothing and publish nothing.
	published := len(e.pub.all())
	for _, tc := range []struct {
		name  string
		model string
		env   []byte
		ids   []string
		code  shoalerr.Code
		text  string
	}{
		{"unknown device", "m1", m1, []string{"a", "zz"}, shoalerr.NotFound, `"zz" is not enrolled`},
		{"invalid device id", "m1", m1, []string{"a/b"}, shoalerr.NotFound, `"a/b"`},
		{"several unknown", "m1", m1, []string{"x", "y"}, shoalerr.NotFound, "x, y"},
		{"model mismatch", "m2", m1, nil, shoalerr.Invalid, `for model "m1", not "m2"`},
		{"bad model name", "m 1", m1, nil, shoalerr.Invalid, "model name"},
		{"model name ..", "..", m1, nil, shoalerr.Invalid, `model name ".." is not allowed`},
		{"not JSON", "m1", []byte("nope"), nil, shoalerr.Invalid, "not DSSE"},
		{"wrong payload type", "m1", []byte(`{"payloadType":"x","payload":"","signatures":[{"sig":"x"}]}`), nil, shoalerr.Invalid, "payload type"},
		{"unsigned", "m1", bytes.Replace(m1, []byte(`"signatures"`), []byte(`"other"`), 1), nil, shoalerr.Invalid, "not signed"},
		{"oversize", "m1", make([]byte, 5<<20), nil, shoalerr.TooLarge, "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.SetDesired(ctx, tc.model, tc.env, tc.ids)
			wantCode(t, err, tc.code, tc.text)
		})
	}
	if n := len(e.pub.all()); n != published {
		t.Errorf("%d publishes after refused calls", n-published)
	}
	if d, _ := e.svc.Get(ctx, "a"); d.DesiredGeneration != 2 {
		t.Errorf("generation of a = %d after refused calls; want 2", d.DesiredGeneration)
	}
}

func TestSetDesiredPublishFailureThenRepublish(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	e.enroll(t, "b")
	e.pub.fail = func(topic string) error {
		if strings.Contains(topic, "/d/b/") {
			return errBoom
		}
		return nil
	}
	res, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), nil)
	wantCode(t, err, shoalerr.Unavailable, "not published to 1 of them (b)")
	if fmt.Sprint(res) != "[{a 1} {b 1}]" {
		t.Fatalf("results = %v; want both devices (both stored)", res)
	}
	e.pub.fail = nil
	if err := e.svc.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := desiredOf(t, e.pub, "b"); ds.GetGeneration() != 1 {
		t.Fatalf("republished desired state of b = %v", ds)
	}
}

func TestRepublishAfterRestart(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a", "b", "c"} {
		e.enroll(t, id)
	}
	if _, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), nil); err != nil {
		t.Fatal(err)
	}
	// Version 2 replaces version 1 on a and b; c keeps 1.
	v2 := envelope(t, "m1", "2")
	if _, err := e.svc.SetDesired(ctx, "m1", v2, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	for _, id := range []string{"a", "b", "c"} {
		before[id] = e.pub.last(t, scheme.Device(id, topics.Desired)).payload
	}

	e.reopen(t)
	if err := e.svc.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := e.pub.all()
	if len(msgs) != 3 {
		t.Fatalf("%d messages republished; want 3", len(msgs))
	}
	for _, id := range []string{"a", "b", "c"} {
		if got := e.pub.last(t, scheme.Device(id, topics.Desired)); !bytes.Equal(got.payload, before[id]) || !got.retained {
			t.Errorf("republished desired state of %s differs from the last one published", id)
		}
	}
	countEnvelopes := func() int {
		n := 0
		e.st.View(func(tx store.Tx) error {
			return tx.Scan([]byte(envelopePrefix), func(_, _ []byte) error { n++; return nil })
		})
		return n
	}
	if n := countEnvelopes(); n != 2 {
		t.Errorf("%d envelopes stored; want 2 (c still uses version 1)", n)
	}
	if _, err := e.svc.SetDesired(ctx, "m1", v2, []string{"c"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countEnvelopes(); n != 1 {
		t.Errorf("%d envelopes stored; want 1 (version 1 is no longer used)", n)
	}
}

func TestDeviceJSONShape(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if d.Phase != "unknown" || d.LastSeen != nil || d.Online || d.AgentVersion != "0.1.0" || d.Profile != "rpi4" {
		t.Errorf("fresh device = %+v", d)
	}
	b, _ := json.Marshal(d)
	if !strings.Contains(string(b), `"last_seen":null`) || !strings.Contains(string(b), `"models":[]`) ||
		!strings.Contains(string(b), `"labels":{}`) || !strings.Contains(string(b), `"group":""`) {
		t.Errorf("fresh device JSON = %s", b)
	}
	if _, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), nil); err != nil {
		t.Fatal(err)
	}
	d, _ = e.svc.Get(ctx, "a")
	b, _ = json.Marshal(d)
	var top map[string]json.RawMessage
	json.Unmarshal(b, &top)
	want := []string{"id", "online", "last_seen", "enrolled_at", "agent_version", "profile", "labels", "group", "phase", "error", "desired_generation", "applied_generation", "models"}
	if len(top) != len(want) {
		t.Errorf("Device JSON has %d keys; want %d: %s", len(top), len(want), b)
	}
	for _, k := range want {
		if _, ok := top[k]; !ok {
			t.Errorf("Device JSON lacks %q: %s", k, b)
		}
	}
	var models []map[string]json.RawMessage
	json.Unmarshal(top["models"], &models)
	mkeys := []string{"name", "active_version", "previous_version", "desired_version", "target_version", "phase", "error", "healthy", "active_since"}
	if len(models) != 1 || len(models[0]) != len(mkeys) {
		t.Fatalf("models JSON = %s", top["models"])
	}
	for _, k := range mkeys {
		if _, ok := models[0][k]; !ok {
			t.Errorf("model JSON lacks %q", k)
		}
	}
	if string(models[0]["active_since"]) != "null" || string(models[0]["healthy"]) != "false" {
		t.Errorf("model not yet reported = %s; want active_since null, healthy false", top["models"])
	}

	_, err = e.svc.Get(ctx, "nobody")
	wantCode(t, err, shoalerr.NotFound, `"nobody" is not enrolled`)
}

func TestPhaseName(t *testing.T) {
	for p, want := range map[shoalv1.Phase]string{
		shoalv1.Phase_PHASE_UNSPECIFIED: "unknown",
		shoalv1.Phase_PHASE_IDLE:        "idle",
		shoalv1.Phase_PHASE_SELF_TEST:   "self_test",
		shoalv1.Phase_PHASE_ACTIVE:      "active",
		shoalv1.Phase_PHASE_FAILED:      "failed",
		shoalv1.Phase(99):               "unknown",
	} {
		if got := PhaseName(p); got != want {
			t.Errorf("PhaseName(%v) = %q; want %q", p, got, want)
		}
	}
}

func TestSetDesiredInChunks(t *testing.T) {
	defer func(n int) { desiredChunk = n }(desiredChunk)
	desiredChunk = 2
	e := newEnv(t)
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		e.enroll(t, id)
	}
	res, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), []string{"e", "d", "c", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res) != "[{a 1} {b 1} {c 1} {d 1} {e 1}]" {
		t.Fatalf("results = %v", res)
	}
	for _, id := range ids {
		if ds := desiredOf(t, e.pub, id); ds.GetGeneration() != 1 || len(ds.GetDeployments()) != 1 {
			t.Errorf("desired state of %s = %v", id, ds)
		}
	}
	// A store failure in the second chunk: the first chunk stays stored and
	// published, and is reported with the error.
	fl := &flakyStore{Store: e.st, failAt: 2}
	e.svc = New(fl, e.pub, scheme, slog.New(e.logs), e.clk.Now)
	before := len(e.pub.all())
	res, err = e.svc.SetDesired(ctx, "m2", envelope(t, "m2", "1"), ids)
	wantCode(t, err, shoalerr.Internal, "store desired state")
	if fmt.Sprint(res) != "[{a 2} {b 2}]" {
		t.Errorf("results = %v; want the first chunk", res)
	}
	if n := len(e.pub.all()) - before; n != 2 {
		t.Errorf("%d publishes; want 2 (the stored chunk)", n)
	}
	for id, gen := range map[string]uint64{"a": 2, "b": 2, "c": 1, "d": 1, "e": 1} {
		if d, _ := e.svc.Get(ctx, id); d.DesiredGeneration != gen {
			t.Errorf("generation of %s = %d; want %d", id, d.DesiredGeneration, gen)
		}
	}
}

// flakyStore fails its failAt-th Update.
type flakyStore struct {
	store.Store
	failAt, n int
}

func (f *flakyStore) Update(fn func(store.Tx) error) error {
	f.n++
	if f.n == f.failAt {
		return errBoom
	}
	return f.Store.Update(fn)
}

// rawDevice returns a device's stored record, as bytes.
func (e *env) rawDevice(t *testing.T, id string) []byte {
	t.Helper()
	var b []byte
	err := e.st.View(func(tx store.Tx) error {
		var err error
		b, err = tx.Get(deviceKey(id))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSetDesiredSameEnvelope: deploying the envelope a device already has
// for the model leaves that device alone (no generation, no store write,
// no publish) and lists it with its current generation; the others change.
func TestSetDesiredSameEnvelope(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a", "b", "c"} {
		e.enroll(t, id)
	}
	v1 := envelope(t, "m1", "1")
	if _, err := e.svc.SetDesired(ctx, "m1", v1, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetDesired(ctx, "m0", envelope(t, "m0", "1"), []string{"b"}); err != nil {
		t.Fatal(err)
	}
	storedA := e.rawDevice(t, "a")
	published := len(e.pub.all())

	e.clk.Advance(time.Minute)
	res, err := e.svc.SetDesired(ctx, "m1", v1, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res) != "[{a 1} {b 2} {c 1}]" {
		t.Fatalf("results = %v; want a left at 1, b and c bumped", res)
	}
	if got := e.publishedTo(published); fmt.Sprint(got) != "[b c]" {
		t.Errorf("published to %v; want [b c]", got)
	}
	if !bytes.Equal(e.rawDevice(t, "a"), storedA) {
		t.Error("the stored record of a changed, though its desired state did not")
	}

	// Again, to every device: nothing to do anywhere.
	published = len(e.pub.all())
	res, err = e.svc.SetDesired(ctx, "m1", v1, nil)
	if err != nil || fmt.Sprint(res) != "[{a 1} {b 2} {c 1}]" {
		t.Fatalf("repeated deployment = %v, %v; want the current generations", res, err)
	}
	if n := len(e.pub.all()) - published; n != 0 {
		t.Errorf("%d publishes for a deployment that changes nothing", n)
	}

	// Another envelope of the same version (say, signed again) is a change.
	res, err = e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), []string{"a"})
	if err != nil || fmt.Sprint(res) != "[{a 2}]" {
		t.Fatalf("new envelope of the same version = %v, %v; want a bumped to 2", res, err)
	}
}

// TestClearDesired: the model leaves the desired state of the devices that
// had it (new generation, stored, then published with what remains), the
// others are listed but untouched, and the envelope no device uses any more
// is deleted.
func TestClearDesired(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		e.enroll(t, id)
	}
	m1, m0 := envelope(t, "m1", "1"), envelope(t, "m0", "1")
	for _, dep := range []struct {
		model string
		env   []byte
		ids   []string
	}{
		{"m1", m1, []string{"a", "b"}},
		{"m0", m0, []string{"a"}},
	} {
		if _, err := e.svc.SetDesired(ctx, dep.model, dep.env, dep.ids); err != nil {
			t.Fatal(err)
		}
	}
	e.pub.before = func(topic string, payload []byte) {
		id, _, _ := scheme.Parse(topic)
		var ds shoalv1.DesiredState
		proto.Unmarshal(payload, &ds)
		d, err := e.svc.Get(ctx, id)
		if err != nil || d.DesiredGeneration != ds.GetGeneration() {
			t.Errorf("published generation %d of %s before storing it (stored: %d, %v)", ds.GetGeneration(), id, d.DesiredGeneration, err)
		}
	}

	// Refusals change nothing.
	published := len(e.pub.all())
	_, err := e.svc.ClearDesired(ctx, "m1", []string{"a", "zz"})
	wantCode(t, err, shoalerr.NotFound, `"zz" is not enrolled; nothing was removed`)
	_, err = e.svc.ClearDesired(ctx, "m 1", []string{"a"})
	wantCode(t, err, shoalerr.Invalid, "model name")
	if n := len(e.pub.all()) - published; n != 0 {
		t.Errorf("%d publishes after refused calls", n)
	}

	res, err := e.svc.ClearDesired(ctx, "m1", []string{"c", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res) != "[{a 3} {b 2} {c 0}]" {
		t.Fatalf("results = %v; want a and b bumped, c at 0", res)
	}
	if got := e.publishedTo(published); fmt.Sprint(got) != "[a b]" {
		t.Errorf("published to %v; want [a b]", got)
	}
	if ds := desiredOf(t, e.pub, "a"); ds.GetGeneration() != 3 || len(ds.GetDeployments()) != 1 || !bytes.Equal(ds.GetDeployments()[0], m0) {
		t.Errorf("desired state of a = %v; want generation 3 with m0 only", ds)
	}
	if ds := desiredOf(t, e.pub, "b"); ds.GetGeneration() != 2 || len(ds.GetDeployments()) != 0 {
		t.Errorf("desired state of b = %v; want generation 2 with no deployments", ds)
	}
	if d, _ := e.svc.Get(ctx, "a"); len(d.Models) != 1 || d.Models[0].Name != "m0" {
		t.Errorf("models of a = %+v; want m0 only", d.Models)
	}
	if n := e.countEnvelopes(t); n != 1 {
		t.Errorf("%d envelopes stored; want 1 (m0's; m1's is used by no device)", n)
	}

	// An envelope still used elsewhere is kept; clearing every device.
	if _, err := e.svc.SetDesired(ctx, "m1", m1, []string{"c", "d"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ClearDesired(ctx, "m1", []string{"c"}); err != nil {
		t.Fatal(err)
	}
	if n := e.countEnvelopes(t); n != 2 {
		t.Errorf("%d envelopes stored; want 2 (d still uses m1's)", n)
	}
	published = len(e.pub.all())
	res, err = e.svc.ClearDesired(ctx, "m1", nil)
	if err != nil || fmt.Sprint(res) != "[{a 3} {b 2} {c 2} {d 2}]" {
		t.Fatalf("clear everywhere = %v, %v", res, err)
	}
	if got := e.publishedTo(published); fmt.Sprint(got) != "[d]" {
		t.Errorf("published to %v; want [d] (the only device with m1)", got)
	}
	if n := e.countEnvelopes(t); n != 1 {
		t.Errorf("%d envelopes stored; want 1", n)
	}

	// Survives a restart, and Republish sends what is stored.
	e.reopen(t)
	if err := e.svc.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := desiredOf(t, e.pub, "d"); ds.GetGeneration() != 2 || len(ds.GetDeployments()) != 0 {
		t.Errorf("republished desired state of d = %v", ds)
	}
}

// TestClearDesiredPublishFailure: stored for all, not published to one:
// Unavailable naming it, with every device in the results.
func TestClearDesiredPublishFailure(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	e.enroll(t, "b")
	if _, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), nil); err != nil {
		t.Fatal(err)
	}
	e.pub.fail = func(topic string) error {
		if strings.Contains(topic, "/d/b/") {
			return errBoom
		}
		return nil
	}
	res, err := e.svc.ClearDesired(ctx, "m1", nil)
	wantCode(t, err, shoalerr.Unavailable, "not published to 1 of them (b)")
	if fmt.Sprint(res) != "[{a 2} {b 2}]" {
		t.Errorf("results = %v; want both (both stored)", res)
	}
}
