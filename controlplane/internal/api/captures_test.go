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

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// captureRegistry has versions 1 and 2 of m1; version 2's reference
// profile names its inputs.
type captureRegistry struct{ Registry }

func (captureRegistry) Versions(_ context.Context, name string) ([]registry.ModelVersion, error) {
	return []registry.ModelVersion{{Name: name, Version: "1"}, {Name: name, Version: "2"}}, nil
}

func (captureRegistry) ReferenceProfile(_ context.Context, name, version string) (*shoalv1.ReferenceProfile, bool, error) {
	if version != "2" {
		return nil, false, nil
	}
	return &shoalv1.ReferenceProfile{Inputs: []*shoalv1.FeatureProfile{{Name: "temp"}, {Name: "hum"}}}, true, nil
}

type discard struct{}

func (discard) Publish(string, []byte, bool) error { return nil }

func TestCaptures(t *testing.T) {
	dir := t.TempDir()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	st, err := badgerstore.Open(filepath.Join(dir, "store"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ds, err := dataset.NewStore(st, filepath.Join(dir, "datasets"), log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	scheme := topics.New("")
	mon := monitor.New(st, discard{}, scheme, log, time.Now)
	e := &env{t: t, logs: logs}
	e.srv = httptest.NewServer(mustNew(t, Deps{Registry: captureRegistry{}, Datasets: ds, Captures: mon}, log))
	t.Cleanup(e.srv.Close)

	r := e.do(http.MethodPost, "/api/v1/captures/m1/dataset?name=m1-captures", nil)
	if r.status != http.StatusNotFound || !strings.Contains(string(r.body), "no labelled captured rows") {
		t.Errorf("export with no captures = %d %s; want 404 saying there are no labelled rows", r.status, r.body)
	}

	b := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "dev-1", FirstSeq: 1, LastSeq: 2, Records: []*shoalv1.TelemetryRecord{
		{Seq: 1, ModelName: "m1", ModelVersion: "1", Predictions: 3, Captures: []*shoalv1.CapturedRow{
			{Id: "a", Inputs: []float32{20, 0.5}}, {Id: "b", Inputs: []float32{21, 0.6}}, {Id: "c", Inputs: []float32{22, 0.7}},
		}},
		{Seq: 2, ModelName: "m1", ModelVersion: "2", Predictions: 2, Captures: []*shoalv1.CapturedRow{
			{Id: "d", Inputs: []float32{23, 0.8}}, {Id: "e", Inputs: []float32{1, 2, 3}},
		}, Feedback: []*shoalv1.Feedback{
			{PredictionId: "a", Label: "dry"}, {PredictionId: "c", Label: "wet"}, {PredictionId: "d", Label: "wet"}, {PredictionId: "e", Label: "dry"},
		}},
	}}
	payload, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	mon.HandleTelemetry(scheme.Device("dev-1", topics.Telemetry), payload)

	var counts apiv1.CaptureCounts
	r = e.get("/api/v1/captures/m1")
	r.json(t, &counts)
	if r.status != http.StatusOK || counts.Rows != 5 || counts.Labelled != 4 || counts.ByVersion["1"] != 3 || counts.ByVersion["2"] != 2 {
		t.Errorf("GET captures = %d %s; want 5 rows, 4 labelled, 3 of version 1 and 2 of version 2", r.status, r.body)
	}

	for _, tc := range []struct {
		query  string
		status int
		want   string
	}{
		{"name=m1-captures&lable=y", http.StatusBadRequest, "unknown query parameter"},
		{"name=a/b", http.StatusBadRequest, "dataset name"},
		{"name=m1-captures&label=condition", http.StatusCreated, ""},
	} {
		r = e.do(http.MethodPost, "/api/v1/captures/m1/dataset?"+tc.query, nil)
		if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("POST ?%s = %d %s; want %d with %q", tc.query, r.status, r.body, tc.status, tc.want)
		}
	}
	var v dataset.Version
	r.json(t, &v)
	if v.Name != "m1-captures" || v.Version != 1 || v.Rows != 3 || v.Label != "condition" || v.Task != dataset.Classification ||
		len(v.Features) != 2 || v.Features[0].Name != "temp" || v.Features[1].Name != "hum" || strings.Join(v.Classes, ",") != "dry,wet" {
		t.Errorf("dataset version = %+v; want 3 rows of temp, hum and the label condition (dry, wet)", v)
	}
	r = e.get("/api/v1/datasets/m1-captures/versions/1/csv")
	if want := "temp,hum,condition\n20,0.5,dry\n22,0.7,wet\n23,0.8,wet\n"; string(r.body) != want {
		t.Errorf("CSV = %q; want %q", r.body, want)
	}
	if r = e.get("/api/v1/captures/a%2Fb"); r.status != http.StatusNotFound && r.status != http.StatusBadRequest {
		t.Errorf("GET captures of a/b = %d %s", r.status, r.body)
	}
}
