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
	if !strings.Contains(string(b), `"last_seen":null`) || !strings.Contains(string(b), `"models":[]`) {
		t.Errorf("fresh device JSON = %s", b)
	}
	if _, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), nil); err != nil {
		t.Fatal(err)
	}
	d, _ = e.svc.Get(ctx, "a")
	b, _ = json.Marshal(d)
	var top map[string]json.RawMessage
	json.Unmarshal(b, &top)
	want := []string{"id", "online", "last_seen", "enrolled_at", "agent_version", "profile", "phase", "error", "desired_generation", "applied_generation", "models"}
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
	mkeys := []string{"name", "active_version", "previous_version", "desired_version", "phase", "error"}
	if len(models) != 1 || len(models[0]) != len(mkeys) {
		t.Fatalf("models JSON = %s", top["models"])
	}
	for _, k := range mkeys {
		if _, ok := models[0][k]; !ok {
			t.Errorf("model JSON lacks %q", k)
		}
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
