package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const day = 24 * time.Hour

// expiringEnvelope signs a manifest for model/version that expires at exp.
func expiringEnvelope(t *testing.T, model, version string, exp time.Time) []byte {
	t.Helper()
	return seal(t, &shoalv1.DeploymentManifest{
		SchemaVersion: 1, ModelName: model, ModelVersion: version,
		Artifact:        &shoalv1.Artifact{Sha256: strings.Repeat("cd", 32), Size: 10, Url: "/v1/artifacts/x"},
		ReleaseSequence: 4, IssuedAtUnixMs: exp.Add(-30 * day).UnixMilli(), ExpiresAtUnixMs: exp.UnixMilli(),
	})
}

func seal(t *testing.T, m *shoalv1.DeploymentManifest) []byte {
	t.Helper()
	payload, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	env, err := testSigner.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// resigner re-signs envelopes as the registry would (30 more days from
// its clock) and records what it was given.
type resigner struct {
	t     *testing.T
	clk   *shoaltest.Clock
	given [][]byte
	// edit, if set, changes the manifest before it is signed again.
	edit func(m *shoalv1.DeploymentManifest) error
}

func (r *resigner) reissue(env []byte) ([]byte, error) {
	r.given = append(r.given, env)
	m, err := openManifest(env)
	if err != nil {
		r.t.Errorf("Refresh gave reissue something that is not a manifest envelope: %v", err)
		return nil, err
	}
	m.IssuedAtUnixMs = r.clk.Now().UnixMilli()
	m.ExpiresAtUnixMs = r.clk.Now().Add(30 * day).UnixMilli()
	if r.edit != nil {
		if err := r.edit(m); err != nil {
			return nil, err
		}
	}
	return seal(r.t, m), nil
}

func (e *env) countEnvelopes(t *testing.T) int {
	t.Helper()
	n := 0
	err := e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(envelopePrefix), func(_, _ []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// generations returns each device's desired generation.
func (e *env) generations(t *testing.T) map[string]uint64 {
	t.Helper()
	devs, err := e.svc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, d := range devs {
		out[d.ID] = d.DesiredGeneration
	}
	return out
}

// publishedTo lists the devices whose desired state was published since
// the first n messages.
func (e *env) publishedTo(n int) []string {
	var ids []string
	for _, m := range e.pub.all()[n:] {
		id, kind, _ := scheme.Parse(m.topic)
		if kind == topics.Desired {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestRefresh(t *testing.T) {
	defer func(n int) { desiredChunk = n }(desiredChunk)
	desiredChunk = 2 // chunks in which some devices change and some do not
	e := newEnv(t)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		e.enroll(t, id)
	}
	t0 := e.clk.Now()
	soon := expiringEnvelope(t, "m1", "1", t0.Add(5*day))   // on a, b, e
	later := expiringEnvelope(t, "m2", "1", t0.Add(25*day)) // on a, c
	gone := expiringEnvelope(t, "m3", "1", t0.Add(3*day))   // replaced on d: in no desired state
	for _, dep := range []struct {
		model string
		env   []byte
		ids   []string
	}{
		{"m1", soon, []string{"a", "b", "e"}},
		{"m2", later, []string{"a", "c"}},
		{"m3", gone, []string{"d"}},
		{"m3", envelope(t, "m3", "2"), []string{"d"}},
	} {
		if _, err := e.svc.SetDesired(ctx, dep.model, dep.env, dep.ids); err != nil {
			t.Fatal(err)
		}
	}
	gens := e.generations(t)
	before := map[string]*shoalv1.DesiredState{}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		before[id] = desiredOf(t, e.pub, id)
	}
	// Persist first, then publish, as SetDesired.
	e.pub.before = func(topic string, payload []byte) {
		id, _, _ := scheme.Parse(topic)
		var ds shoalv1.DesiredState
		proto.Unmarshal(payload, &ds)
		d, err := e.svc.Get(ctx, id)
		if err != nil || d.DesiredGeneration != ds.GetGeneration() {
			t.Errorf("published generation %d of %s before storing it (stored: %d, %v)", ds.GetGeneration(), id, d.DesiredGeneration, err)
		}
	}

	// 10 days before now + 10 days: only m1 version 1 expires by then.
	rs := &resigner{t: t, clk: e.clk}
	e.clk.Advance(time.Hour)
	published := len(e.pub.all())
	res, err := e.svc.Refresh(ctx, e.clk.Now().Add(10*day), rs.reissue)
	if err != nil {
		t.Fatal(err)
	}
	if res != (RefreshResult{Envelopes: 1, Devices: 3}) {
		t.Errorf("result = %+v; want 1 envelope, 3 devices", res)
	}
	if len(rs.given) != 1 || !bytes.Equal(rs.given[0], soon) {
		t.Fatalf("reissue was given %d envelopes; want the one of m1 1 once", len(rs.given))
	}
	if got := e.publishedTo(published); fmt.Sprint(got) != "[a b e]" {
		t.Errorf("desired state published to %v; want [a b e], the devices using m1 1", got)
	}
	want := map[string]uint64{"a": gens["a"] + 1, "b": gens["b"] + 1, "c": gens["c"], "d": gens["d"], "e": gens["e"] + 1}
	if got := e.generations(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("generations = %v; want %v", got, want)
	}
	a := desiredOf(t, e.pub, "a")
	if a.GetIssuedAtUnixMs() != e.clk.Now().UnixMilli() || len(a.GetDeployments()) != 2 {
		t.Fatalf("desired state of a = %v", a)
	}
	m1, err := openManifest(a.GetDeployments()[0])
	if err != nil {
		t.Fatal(err)
	}
	if m1.GetModelName() != "m1" || m1.GetExpiresAtUnixMs() != e.clk.Now().Add(30*day).UnixMilli() {
		t.Errorf("m1 deployment of a = %v; want the re-signed manifest", m1)
	}
	if !bytes.Equal(a.GetDeployments()[1], later) {
		t.Error("the m2 deployment of a changed; it does not expire within the window")
	}
	for _, id := range []string{"b", "e"} {
		if ds := desiredOf(t, e.pub, id); !bytes.Equal(ds.GetDeployments()[0], a.GetDeployments()[0]) {
			t.Errorf("device %s got another envelope than a; one re-signing serves every device", id)
		}
	}
	// The replaced envelope and the one no device used are deleted.
	if n := e.countEnvelopes(t); n != 3 {
		t.Errorf("%d envelopes stored; want 3 (re-signed m1, m2, m3 2)", n)
	}

	// A second pass finds nothing to do.
	published = len(e.pub.all())
	if res, err := e.svc.Refresh(ctx, e.clk.Now().Add(10*day), rs.reissue); err != nil || res != (RefreshResult{}) {
		t.Errorf("second pass = %+v, %v; want nothing done", res, err)
	}
	if n := len(e.pub.all()) - published; n != 0 || len(rs.given) != 1 {
		t.Errorf("second pass published %d and re-signed %d; want nothing", n, len(rs.given)-1)
	}

	// After a restart the refreshed state is what is stored.
	e.reopen(t)
	if err := e.svc.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	if got := desiredOf(t, e.pub, "a"); !proto.Equal(got, a) {
		t.Errorf("desired state of a after restart = %v; want %v", got, a)
	}
	if got := desiredOf(t, e.pub, "d"); !proto.Equal(got, before["d"]) {
		t.Error("desired state of d changed")
	}
	// 20 days on, m2 expires within 10 days; the re-signed m1 does not.
	e.clk.Advance(20 * day)
	published = len(e.pub.all())
	res, err = e.svc.Refresh(ctx, e.clk.Now().Add(10*day), rs.reissue)
	if err != nil || res != (RefreshResult{Envelopes: 1, Devices: 2}) {
		t.Fatalf("pass after restart = %+v, %v; want 1 envelope, 2 devices", res, err)
	}
	if !bytes.Equal(rs.given[1], later) {
		t.Error("the pass after restart did not re-sign m2 1")
	}
	if got := e.publishedTo(published); fmt.Sprint(got) != "[a c]" {
		t.Errorf("desired state published to %v; want [a c]", got)
	}
	if got := e.generations(t); got["a"] != gens["a"]+2 || got["c"] != gens["c"]+1 || got["b"] != gens["b"]+1 {
		t.Errorf("generations = %v", got)
	}
}

func TestRefreshFailures(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a", "b", "c"} {
		e.enroll(t, id)
	}
	exp := e.clk.Now().Add(day)
	for _, dep := range []struct {
		model string
		id    string
	}{{"bad", "a"}, {"odd", "b"}, {"good", "c"}} {
		if _, err := e.svc.SetDesired(ctx, dep.model, expiringEnvelope(t, dep.model, "1", exp), []string{dep.id}); err != nil {
			t.Fatal(err)
		}
	}
	gens := e.generations(t)
	// bad cannot be re-signed; odd comes back as another release.
	rs := &resigner{t: t, clk: e.clk, edit: func(m *shoalv1.DeploymentManifest) error {
		switch m.GetModelName() {
		case "bad":
			return shoalerr.E(shoalerr.Invalid, "registry.Reissue", "refusing to re-sign: not signed with this key")
		case "odd":
			m.ReleaseSequence++
		}
		return nil
	}}
	published := len(e.pub.all())
	res, err := e.svc.Refresh(ctx, e.clk.Now().Add(10*day), rs.reissue)
	wantCode(t, err, shoalerr.Internal, "2 manifest envelopes could not be re-signed (1 were)")
	for _, text := range []string{"manifest of bad 1", "not signed with this key", "manifest of odd 1", "want the same release"} {
		if !strings.Contains(err.Error(), text) {
			t.Errorf("error %q does not say %q", err, text)
		}
	}
	if res != (RefreshResult{Envelopes: 1, Devices: 1}) {
		t.Errorf("result = %+v; want good re-signed on c", res)
	}
	if got := e.publishedTo(published); fmt.Sprint(got) != "[c]" {
		t.Errorf("published to %v; want [c]", got)
	}
	if got := e.generations(t); got["a"] != gens["a"] || got["b"] != gens["b"] || got["c"] != gens["c"]+1 {
		t.Errorf("generations = %v (before: %v)", got, gens)
	}

	// Stored but not published: Unavailable, and the next republish sends it.
	rs.edit = nil
	e.pub.fail = func(topic string) error {
		if strings.Contains(topic, "/d/a/") {
			return errBoom
		}
		return nil
	}
	res, err = e.svc.Refresh(ctx, e.clk.Now().Add(10*day), rs.reissue)
	wantCode(t, err, shoalerr.Unavailable, "not published to 1 of them (a)")
	if res != (RefreshResult{Envelopes: 2, Devices: 2}) {
		t.Errorf("result = %+v; want bad and odd re-signed for a and b", res)
	}
	e.pub.fail = nil
	if err := e.svc.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := desiredOf(t, e.pub, "a"); ds.GetGeneration() != gens["a"]+1 {
		t.Errorf("republished generation of a = %d; want %d", ds.GetGeneration(), gens["a"]+1)
	}

	// A store failure: nothing is published, nothing counted as changed.
	e.clk.Advance(25 * day)
	e.svc = New(&flakyStore{Store: e.st, failAt: 1}, e.pub, scheme, e.svc.log, e.clk.Now)
	published = len(e.pub.all())
	res, err = e.svc.Refresh(ctx, e.clk.Now().Add(10*day), rs.reissue)
	wantCode(t, err, shoalerr.Internal, "store desired state")
	if !errors.Is(err, errBoom) || res.Devices != 0 || len(e.pub.all()) != published {
		t.Errorf("after a store failure: %+v, %v, %d published", res, err, len(e.pub.all())-published)
	}

	// A cancelled context stops before anything is re-signed.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	n := len(rs.given)
	if _, err := e.svc.Refresh(cctx, e.clk.Now().Add(10*day), rs.reissue); !errors.Is(err, context.Canceled) || len(rs.given) != n {
		t.Errorf("cancelled Refresh = %v after %d re-signings", err, len(rs.given)-n)
	}
}

// TestApplyDesiredSkipsUnchanged: a device the edit leaves alone is
// neither stored with a new generation nor published, whatever the caller
// passed in; it is still listed, with its current generation, but not
// counted as changed.
func TestApplyDesiredSkipsUnchanged(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	e.enroll(t, "b")
	env := envelope(t, "m1", "1")
	sum := sha256.Sum256(env)
	e.svc.desiredMu.Lock()
	res, changed, err := e.svc.applyDesired(ctx, "test", []string{"a", "b"}, map[string][]byte{hex.EncodeToString(sum[:]): env}, "",
		func(rec *deviceRecord) bool {
			if rec.ID != "a" {
				return false
			}
			rec.Desired = map[string]desiredModel{"m1": {Version: "1", EnvelopeSHA256: hex.EncodeToString(sum[:])}}
			return true
		})
	e.svc.desiredMu.Unlock()
	if err != nil || fmt.Sprint(res) != "[{a 1} {b 0}]" || changed != 1 {
		t.Fatalf("results = %v, %d changed, %v; want a at 1 (changed), b at 0", res, changed, err)
	}
	if got := e.publishedTo(0); fmt.Sprint(got) != "[a]" {
		t.Errorf("published to %v; want [a]", got)
	}
	if got := e.generations(t); got["b"] != 0 {
		t.Errorf("generation of b = %d; want 0", got["b"])
	}
}
