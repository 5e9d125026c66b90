package localapi

import (
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// profileOf makes the reference profile of rows random rows of width
// features for input in, and of a categorical output out with classes
// classes (or a numeric one of width features when classes is 0).
func profileOf(t testing.TB, in string, features int, out string, classes int) *shoalv1.ReferenceProfile {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 6))
	ti := datastats.Table{Name: in}
	for j := range features {
		ti.Columns = append(ti.Columns, datastats.Column{Name: in + strconv.Itoa(j)})
	}
	to := datastats.Table{Name: out}
	if classes > 0 {
		to.Columns = []datastats.Column{{Name: out, Classes: classes}}
	} else {
		to.Columns = ti.Columns
	}
	for range 50 {
		row := make([]float64, features)
		for j := range row {
			row[j] = r.Float64()
		}
		ti.Rows = append(ti.Rows, row)
		if classes > 0 {
			to.Rows = append(to.Rows, []float64{float64(r.IntN(classes))})
		} else {
			to.Rows = append(to.Rows, row)
		}
	}
	p, err := datastats.NewProfile(ti, to, datastats.ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// withStats loads a model that keeps data statistics of profile p.
func withStats(t testing.TB, data []byte, name string, p *shoalv1.ReferenceProfile) (*inference.Model, *inference.DataStats) {
	t.Helper()
	m := load(t, data, name, "1")
	st, err := inference.NewDataStats(p, m)
	if err != nil {
		t.Fatal(err)
	}
	if !m.SetStats(st) {
		t.Fatal("SetStats refused the first statistics")
	}
	return m, st
}

func TestPredictionsFeedDataStats(t *testing.T) {
	set := inference.NewSet()
	t.Cleanup(set.Close)
	mnist, mnistStats := withStats(t, mnistModel(t), "mnist", profileOf(t, "input", 784, "label", 10))
	set.Swap(mnist)
	grid, gridStats := withStats(t, identityModel(t, onnxrt.FP32, []int64{-1, -1}, "x", "y"), "grid", profileOf(t, "x", 3, "y", 0))
	set.Swap(grid)
	set.Swap(load(t, mnistModel(t), "plain", "1"))
	srv := httptest.NewServer(New(set, nil, Config{}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)

	// Three predictions of 1, 2 and 3 rows.
	labels := make([]uint64, 10)
	rows := 0
	for n := 1; n <= 3; n++ {
		x := pixels(784 * n)
		r := do(t, srv, "POST", "/v2/models/mnist/infer", `{"inputs":[{"name":"input","shape":[`+strconv.Itoa(n)+`,784],"datatype":"FP32","data":[`+floatsJSON(x)+`]}]}`)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
		for _, l := range numbers(t, outputs(t, r)["label"]["data"]) {
			labels[int(l)]++
		}
		rows += n
	}
	if r := do(t, srv, "POST", "/v2/models/plain/infer", in784("["+floatsJSON(pixels(784))+"]")); r.status != 200 {
		t.Fatalf("model without statistics: status %d: %s", r.status, r.raw)
	}
	ins, outs := mnistStats.Snapshot()
	if len(ins) != 784 || len(outs) != 1 {
		t.Fatalf("statistics of %d inputs and %d outputs; want 784 and 1", len(ins), len(outs))
	}
	for _, s := range ins {
		if s.GetCount()+s.GetNan()+s.GetMissing() != uint64(rows) {
			t.Fatalf("input %s saw %d values; want %d", s.GetName(), s.GetCount()+s.GetNan()+s.GetMissing(), rows)
		}
	}
	if got := outs[0].GetBinCounts(); outs[0].GetCount() != uint64(rows) || !equalCounts(got, labels) {
		t.Errorf("label statistics: count %d, bins %v; want %d, %v", outs[0].GetCount(), got, rows, labels)
	}

	// Rows that do not fit the profile (2 values, not 3): the prediction
	// stands, the statistics are left alone, the refusal is counted.
	before := scrape(t, srv.URL)["shoal_agent_data_stats_rejected_total"]
	r := do(t, srv, "POST", "/v2/models/grid/infer", `{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}`)
	if r.status != 200 {
		t.Fatalf("a prediction that does not fit the profile: status %d: %s", r.status, r.raw)
	}
	if got := scrape(t, srv.URL)["shoal_agent_data_stats_rejected_total"]; got != before+1 {
		t.Errorf("shoal_agent_data_stats_rejected_total = %v; want %v", got, before+1)
	}
	if r := do(t, srv, "POST", "/v2/models/grid/infer", `{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[0.5,0.5,0.5]}]}`); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	ins, outs = gridStats.Snapshot()
	if ins[0].GetCount() != 1 || outs[0].GetCount() != 1 || ins[0].GetMean() != 0.5 {
		t.Errorf("grid statistics = %v / %v; want the one fitting row only", ins[0], outs[0])
	}
}

func equalCounts(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
