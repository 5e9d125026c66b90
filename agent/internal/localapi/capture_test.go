package localapi

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/telemetry"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

var _ Capturer = (*telemetry.Aggregator)(nil)

// recordSink keeps the records an aggregator appends.
type recordSink struct {
	mu   sync.Mutex
	recs []*shoalv1.TelemetryRecord
}

func (s *recordSink) Append(r *shoalv1.TelemetryRecord) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	return uint64(len(s.recs)), nil
}

// captureServer serves an identity model "rows" of width 3 with the given
// capture share, capturing into a real aggregator.
func captureServer(t *testing.T, share float64) (*httptest.Server, *telemetry.Aggregator, *recordSink) {
	t.Helper()
	set := inference.NewSet()
	m := load(t, identityModel(t, onnxrt.FP32, []int64{-1, 3}, "features", "scores"), "rows", "1")
	m.SetCaptureShare(share)
	set.Swap(m)
	t.Cleanup(func() { set.Close() })
	sink := &recordSink{}
	agg := telemetry.NewAggregator(telemetry.Config{StatsWindow: -1}, sink, nil)
	srv := httptest.NewServer(New(set, agg, Config{Capture: agg}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv, agg, sink
}

func TestCaptureShare(t *testing.T) {
	for _, c := range []struct {
		share float64
		want  int
	}{{0, 0}, {1, 10}} {
		t.Run(fmt.Sprint(c.share), func(t *testing.T) {
			srv, agg, sink := captureServer(t, c.share)
			var ids []string
			for i := range 10 {
				body := fmt.Sprintf(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[%d,2,3]}]}`, i)
				r := do(t, srv, "POST", "/v2/models/rows/infer", body)
				id, _ := r.body["id"].(string)
				if r.status != 200 || len(id) != 16 {
					t.Fatalf("status %d, id %q: %s", r.status, id, r.raw)
				}
				ids = append(ids, id)
			}
			if err := agg.Flush(); err != nil {
				t.Fatal(err)
			}
			var rows []*shoalv1.CapturedRow
			for _, r := range sink.recs {
				rows = append(rows, r.GetCaptures()...)
			}
			if len(rows) != c.want {
				t.Fatalf("%d captured rows; want %d", len(rows), c.want)
			}
			for i, row := range rows {
				if row.GetId() != ids[i] || row.GetInputName() != "features" || fmt.Sprint(row.GetInputs()) != fmt.Sprintf("[%d 2 3]", i) || fmt.Sprint(row.GetOutputs()) != fmt.Sprintf("[%d 2 3]", i) {
					t.Fatalf("row %d = %v; want id %s, inputs and outputs [%d 2 3]", i, row, ids[i], i)
				}
			}
		})
	}
}

func TestCaptureBatchRows(t *testing.T) {
	srv, agg, sink := captureServer(t, 1)
	r := do(t, srv, "POST", "/v2/models/rows/infer", `{"id":"b","inputs":[{"name":"features","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]}]}`)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	if err := agg.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(sink.recs) != 1 || len(sink.recs[0].GetCaptures()) != 2 {
		t.Fatalf("records %v; want one with 2 captures", sink.recs)
	}
	for i, row := range sink.recs[0].GetCaptures() {
		if want := fmt.Sprintf("b:%d", i); row.GetId() != want || len(row.GetInputs()) != 3 || row.GetInputs()[0] != float32(1+3*i) {
			t.Fatalf("capture %d = %v; want id %s and its row", i, row, want)
		}
	}
}

func TestFeedback(t *testing.T) {
	srv, agg, sink := captureServer(t, 1)
	r := do(t, srv, "POST", "/v2/models/rows/infer", `{"id":"p1","inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	if r := do(t, srv, "POST", "/v1/feedback", `{"id":"p1","label":"cat"}`); r.status != 202 {
		t.Fatalf("feedback: status %d: %s", r.status, r.raw)
	}
	// Not captured here, but its model is named.
	if r := do(t, srv, "POST", "/v1/feedback", `[{"id":"old","label":"dog","model":"rows"}]`); r.status != 202 {
		t.Fatalf("feedback list: status %d: %s", r.status, r.raw)
	}
	if err := agg.Flush(); err != nil {
		t.Fatal(err)
	}
	var fbs []string
	for _, rec := range sink.recs {
		if rec.GetModelName() != "rows" || rec.GetModelVersion() != "1" {
			t.Fatalf("record of %s@%s; want rows@1", rec.GetModelName(), rec.GetModelVersion())
		}
		for _, f := range rec.GetFeedback() {
			fbs = append(fbs, f.GetPredictionId()+"="+f.GetLabel())
		}
	}
	if got := strings.Join(fbs, ","); got != "p1=cat,old=dog" {
		t.Fatalf("feedback %s; want p1=cat,old=dog", got)
	}

	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`nope`, 400, "JSON object"},
		{`{"label":"x"}`, 400, `"id" is missing`},
		{`{"id":"p1"}`, 400, `"label" is missing`},
		{`[{"id":"p1","label":"x"},{"id":"","label":"y"}]`, 400, `[1]"id" is missing`},
		{`[]`, 400, "0 feedback items"},
		{`{"id":"` + strings.Repeat("x", 129) + `","label":"x"}`, 400, `"id" is 129 bytes`},
		{`{"id":"unknown","label":"x"}`, 404, `prediction "unknown" is not among`},
	} {
		r := do(t, srv, "POST", "/v1/feedback", c.body)
		if r.status != c.status || !strings.Contains(r.errMsg(), c.want) {
			t.Errorf("%s: status %d %q; want %d with %q", c.body, r.status, r.errMsg(), c.status, c.want)
		}
	}
}
