package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/drift"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// driftProfiles is a drift.Profiles of one profile, of m1 version 1.
type driftProfiles struct{ p *shoalv1.ReferenceProfile }

func (d driftProfiles) ReferenceProfile(_ context.Context, name, version string) (*shoalv1.ReferenceProfile, bool, error) {
	return d.p, name == "m1" && version == "1", nil
}

type nopPublisher struct{}

func (nopPublisher) Publish(string, []byte, bool) error { return nil }

// driftEnv serves the drift routes of a drift.Service over a monitor that
// has ingested two windows of m1 version 1 from hour0: one like the
// training data, one with input "a" shifted.
func driftEnv(t *testing.T) (*drift.Service, *env) {
	t.Helper()
	st, err := badgerstore.Open(filepath.Join(t.TempDir(), "store"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hour0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return hour0.Add(3 * time.Hour) }
	scheme := topics.New(testPrefix)
	mon := monitor.New(st, nopPublisher{}, scheme, nil, now)

	in := datastats.Table{Name: "x", Columns: []datastats.Column{{Name: "a"}, {Name: "b"}}}
	out := datastats.Table{Name: "y", Columns: []datastats.Column{{Name: "label", Classes: 3}}}
	row := func(i int, shift float64) ([]float64, []float64) {
		return []float64{float64(i%100) + shift, float64(i * 7 % 50)}, []float64{float64(i % 3)}
	}
	for i := range 1000 {
		x, y := row(i, 0)
		in.Rows, out.Rows = append(in.Rows, x), append(out.Rows, y)
	}
	prof, err := datastats.NewProfile(in, out, datastats.ProfileOptions{Bins: 10})
	if err != nil {
		t.Fatal(err)
	}
	for k, shift := range []float64{0, 50} {
		acc, err := datastats.NewAccumulator(prof)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 600 {
			if err := acc.Observe(row(i, shift)); err != nil {
				t.Fatal(err)
			}
		}
		is, os := acc.Snapshot()
		end := hour0.Add(time.Duration(k+1) * time.Hour)
		seq := uint64(k + 1)
		b, err := proto.Marshal(&shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "d1", FirstSeq: seq, LastSeq: seq, Records: []*shoalv1.TelemetryRecord{{
			Seq: seq, ModelName: "m1", ModelVersion: "1", WindowStartUnixMs: end.Add(-time.Minute).UnixMilli(), WindowEndUnixMs: end.UnixMilli(),
			InputStats: is, OutputStats: os,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		mon.HandleTelemetry(scheme.Device("d1", topics.Telemetry), b)
	}
	if s := mon.Stats(); s.StatsMerged != 2 {
		t.Fatalf("monitor stats = %+v; want 2 merged", s)
	}
	svc := drift.New(st, mon, driftProfiles{prof}, drift.Options{Now: now})
	srv := httptest.NewServer(mustNew(t, Deps{Drift: svc}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return svc, &env{t: t, srv: srv}
}

func (e *env) putJSON(path, body string) response {
	e.t.Helper()
	return e.do(http.MethodPut, path, strings.NewReader(body), "Content-Type", "application/json")
}

func TestDriftRoutes(t *testing.T) {
	svc, e := driftEnv(t)

	e.get("/api/v1/drift/m1/policy").wantError(t, http.StatusNotFound, shoalerr.NotFound, "no drift policy")
	var rep struct {
		Model   string              `json:"model"`
		Policy  *drift.Policy       `json:"policy"`
		Windows []drift.WindowDrift `json:"windows"`
	}
	r := e.get("/api/v1/drift/m1")
	if r.status != http.StatusOK {
		t.Fatalf("GET drift = %d %s", r.status, r.body)
	}
	r.json(t, &rep)
	if rep.Model != "m1" || rep.Policy != nil || len(rep.Windows) != 2 {
		t.Fatalf("drift = %s", r.body)
	}
	if w := rep.Windows[1]; w.Samples != 600 || w.PSI < 1 || len(w.Features) != 3 || w.Features[0].Name != "a" || w.Breach {
		t.Errorf("shifted window = %+v", w)
	}

	e.putJSON("/api/v1/drift/m1/policy", `{"metric":"kl","threshold":0.2,"windows":1}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "metric")
	e.putJSON("/api/v1/drift/m1/policy", `{"metric":"psi","threshold":0.2,"windoes":1}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "windoes")
	r = e.putJSON("/api/v1/drift/m1/policy", `{"metric":"psi","threshold":0.2,"min_samples":500,"windows":1}`)
	if r.status != http.StatusOK {
		t.Fatalf("PUT policy = %d %s", r.status, r.body)
	}
	var p drift.Policy
	if e.get("/api/v1/drift/m1/policy").json(t, &p); p.Metric != "psi" || p.Threshold != 0.2 || p.MinSamples != 500 || p.Windows != 1 {
		t.Errorf("policy = %+v", p)
	}
	e.get("/api/v1/drift/m1?version=1&cohort=all&last=90m").json(t, &rep)
	if rep.Policy == nil || len(rep.Windows) != 1 || !rep.Windows[0].Breach {
		t.Errorf("drift with a policy over 90m = %+v; want the shifted window, breaching", rep)
	}
	e.get("/api/v1/drift/m1?last=forever").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "last")
	e.get("/api/v1/drift/m1?cohort=rpi4").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "cohort")

	var as struct {
		Alerts []drift.Alert `json:"alerts"`
	}
	if e.get("/api/v1/alerts").json(t, &as); len(as.Alerts) != 0 {
		t.Fatalf("alerts before evaluation = %+v", as)
	}
	if err := svc.Evaluate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.get("/api/v1/alerts?model=m1").json(t, &as); len(as.Alerts) != 1 || as.Alerts[0].Version != "1" || len(as.Alerts[0].TopFeatures) == 0 {
		t.Errorf("alerts of m1 = %+v; want 1", as)
	}
	if e.get("/api/v1/alerts?model=m2").json(t, &as); len(as.Alerts) != 0 {
		t.Errorf("alerts of m2 = %+v", as)
	}
	e.get("/api/v1/alerts?model=a%2Fb").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "model name")
}
