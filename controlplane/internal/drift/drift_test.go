package drift

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

var ctx = context.Background()

var scheme = topics.New("")

// hour0 starts a drift window.
var hour0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// profiles is a Profiles of fixed profiles.
type profiles map[string]*shoalv1.ReferenceProfile

func (p profiles) ReferenceProfile(_ context.Context, name, version string) (*shoalv1.ReferenceProfile, bool, error) {
	prof, ok := p[name+"/"+version]
	return prof, ok, nil
}

type discard struct{}

func (discard) Publish(string, []byte, bool) error { return nil }

// env is a Badger store with a real monitor ingesting telemetry into it
// and a drift Service over both.
type env struct {
	clk    *shoaltest.Clock
	mon    *monitor.Monitor
	svc    *Service
	prof   *shoalv1.ReferenceProfile
	seq    uint64
	mu     sync.Mutex
	hooked []Alert
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := badgerstore.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{clk: shoaltest.NewClock(hour0), prof: testProfile(t)}
	e.mon = monitor.New(st, discard{}, scheme, nil, e.clk.Now)
	e.svc = New(st, e.mon, profiles{"m1/1": e.prof}, Options{
		Now: e.clk.Now,
		OnAlert: func(a Alert) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.hooked = append(e.hooked, a)
		},
	})
	return e
}

// testProfile is the reference profile of 1,000 rows of two numeric
// inputs and a three-class label (see rows).
func testProfile(t testing.TB) *shoalv1.ReferenceProfile {
	t.Helper()
	in := datastats.Table{Name: "x", Columns: []datastats.Column{{Name: "a"}, {Name: "b"}}}
	out := datastats.Table{Name: "label", Columns: []datastats.Column{{Name: "label", Classes: 3}}}
	xs, ys := rows(0, 1000, 0)
	for i := range 1000 {
		in.Rows = append(in.Rows, xs[2*i:2*i+2])
		out.Rows = append(out.Rows, ys[i:i+1])
	}
	p, err := datastats.NewProfile(in, out, datastats.ProfileOptions{Bins: 10})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rows returns n rows from row first: inputs (i mod 100 + shift, 7i mod
// 50) row-major, and labels i mod 3. Any 600 rows in a row have the
// training data's distribution (shift 0).
func rows(first, n int, shift float64) (xs, ys []float64) {
	for i := first; i < first+n; i++ {
		xs = append(xs, float64(i%100)+shift, float64((i*7)%50))
		ys = append(ys, float64(i%3))
	}
	return xs, ys
}

// sendWindow sends, from device d1, a record closing a statistics window
// in drift window k (hours from hour0) with n rows shifted by shift.
func (e *env) sendWindow(t *testing.T, k int, n int, shift float64) {
	t.Helper()
	a, err := datastats.NewAccumulator(e.prof)
	if err != nil {
		t.Fatal(err)
	}
	xs, ys := rows(k*1000, n, shift)
	if err := a.Observe(xs, ys); err != nil {
		t.Fatal(err)
	}
	in, out := a.Snapshot()
	e.seq++
	end := hour0.Add(time.Duration(k+1) * time.Hour)
	b := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "d1", FirstSeq: e.seq, LastSeq: e.seq, Records: []*shoalv1.TelemetryRecord{{
		Seq: e.seq, ModelName: "m1", ModelVersion: "1", Predictions: uint64(n),
		WindowStartUnixMs: end.Add(-time.Minute).UnixMilli(), WindowEndUnixMs: end.UnixMilli(),
		StatsWindowStartUnixMs: end.Add(-time.Hour).UnixMilli(), InputStats: in, OutputStats: out,
	}}}
	payload, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	e.mon.HandleTelemetry(scheme.Device("d1", topics.Telemetry), payload)
	if s := e.mon.Stats(); s.StatsMerged != e.seq {
		t.Fatalf("monitor merged %d records' statistics; want %d (%+v)", s.StatsMerged, e.seq, s)
	}
}

// evaluateAfter sets the clock to when window k has settled and evaluates.
func (e *env) evaluateAfter(t *testing.T, k int) {
	t.Helper()
	e.clk.Set(hour0.Add(time.Duration(k+1)*time.Hour + DefaultSettle))
	if err := e.svc.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
}

func (e *env) alerts(t *testing.T) []Alert {
	t.Helper()
	as, err := e.svc.Alerts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func (e *env) setPolicy(t *testing.T, p Policy) {
	t.Helper()
	if _, err := e.svc.SetPolicy(ctx, "m1", p); err != nil {
		t.Fatal(err)
	}
}

var psiPolicy = Policy{Metric: MetricPSI, Threshold: 0.2, MinSamples: 500, Windows: 3}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestCompareWindowHandComputed checks the drift of a window of a small
// profile against PSI, JS and KS computed by hand.
func TestCompareWindowHandComputed(t *testing.T) {
	p := &shoalv1.ReferenceProfile{
		Inputs: []*shoalv1.FeatureProfile{
			{Name: "x", Edges: []float64{1}, Reference: &shoalv1.FeatureStats{Name: "x", BinCounts: []uint64{50, 50}, Count: 100}},
			{Name: "empty", Edges: []float64{1}, Reference: &shoalv1.FeatureStats{Name: "empty", BinCounts: []uint64{1, 1}, Count: 2}},
		},
		Outputs: []*shoalv1.FeatureProfile{
			{Name: "label", Categorical: true, Classes: 3, Reference: &shoalv1.FeatureStats{Name: "label", BinCounts: []uint64{25, 25, 50}, Count: 100}},
		},
	}
	w := monitor.StatsWindow{
		Samples: 10,
		Inputs: []*shoalv1.FeatureStats{
			{Name: "x", BinCounts: []uint64{8, 2}, Count: 10, Min: 0, Max: 2, Mean: 1},
			{Name: "empty", BinCounts: []uint64{0, 0}, Nan: 10},
		},
		Outputs: []*shoalv1.FeatureStats{{Name: "label", BinCounts: []uint64{0, 5, 5}, Count: 10, Min: 1, Max: 2, Mean: 1.5, M2: 2.5}},
	}
	d := compareWindow(p, w, WindowDrift{})
	if d.Error != "" || len(d.Features) != 3 {
		t.Fatalf("drift = %+v", d)
	}
	// x: shares 0.5, 0.5 against 0.8, 0.2.
	x := d.Features[0]
	if !near(x.PSI, 0.3*math.Log(0.8/0.5)+0.3*math.Log(0.5/0.2)) || !near(x.PSI, 0.41588830833596724) ||
		!near(x.JS, 0.07310400793180985) || !near(x.KS, 0.3) {
		t.Errorf("x = %+v; want PSI 0.4159, JS 0.0731, KS 0.3", x)
	}
	if e := d.Features[1]; e.Error == "" || e.PSI != 0 {
		t.Errorf("empty = %+v; want an error and no drift", e)
	}
	// label: shares 0.25, 0.25, 0.5 against 0 (floored at 1e-4), 0.5, 0.5.
	l := d.Features[2]
	wantPSI := (1e-4-0.25)*math.Log(1e-4/0.25) + 0.25*math.Log(2)
	if l.Side != "output" || !near(l.PSI, wantPSI) || !near(l.JS, 0.15563906222956642) || !near(l.KS, 0.25) {
		t.Errorf("label = %+v; want PSI %v, JS 0.1556, KS 0.25", l, wantPSI)
	}
	// Overall: the largest of each.
	if !near(d.PSI, wantPSI) || !near(d.JS, 0.15563906222956642) || !near(d.KS, 0.3) {
		t.Errorf("overall = %v, %v, %v; want the largest of the features'", d.PSI, d.JS, d.KS)
	}
	if top := topFeatures(d, MetricKS, 3); len(top) != 2 || top[0].Name != "x" || top[1].Name != "label" {
		t.Errorf("top features by KS = %+v; want x, label", top)
	}

	// Statistics of another shape: an error, no drift.
	w.Inputs = w.Inputs[:1]
	if d := compareWindow(p, w, WindowDrift{}); d.Error == "" || d.PSI != 0 {
		t.Errorf("drift of a window missing a feature = %+v; want an error", d)
	}
}

func TestReport(t *testing.T) {
	e := newEnv(t)
	e.sendWindow(t, 0, 600, 0)
	e.sendWindow(t, 1, 600, 50)
	e.clk.Set(hour0.Add(3 * time.Hour))
	ds, err := e.svc.Report(ctx, "m1", Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Samples != 600 || ds[0].Cohort != monitor.CohortAll || ds[0].Error != "" {
		t.Fatalf("report = %+v", ds)
	}
	if ds[0].PSI > 0.01 || ds[1].PSI < 1 {
		t.Errorf("PSI = %v unshifted, %v shifted; want about 0 and above 1", ds[0].PSI, ds[1].PSI)
	}
	if ds[1].Features[0].Name != "a" || ds[1].Features[0].PSI != ds[1].PSI || ds[1].Features[1].PSI > 0.01 {
		t.Errorf("shifted features = %+v; want a drifting, b not", ds[1].Features)
	}
	if ds[0].Breach || ds[1].Breach {
		t.Error("a window breaches without a policy")
	}
	e.setPolicy(t, psiPolicy)
	ds, err = e.svc.Report(ctx, "m1", Query{Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Breach || !ds[1].Breach {
		t.Errorf("breaches = %v, %v; want false, true", ds[0].Breach, ds[1].Breach)
	}
	if ds, _ := e.svc.Report(ctx, "m1", Query{Cohort: "profile:none"}); len(ds) != 0 {
		t.Errorf("report of an empty cohort = %+v", ds)
	}
	if ds, _ := e.svc.Report(ctx, "m1", Query{Last: 2 * time.Hour}); len(ds) != 1 {
		t.Errorf("report since the first window's end = %+v; want the second", ds)
	}
	for _, q := range []Query{{Version: "a/b"}, {Cohort: "profile:"}, {Cohort: "rpi4"}} {
		if _, err := e.svc.Report(ctx, "m1", q); !shoalerr.Is(err, shoalerr.Invalid) {
			t.Errorf("Report(%+v) = %v; want Invalid", q, err)
		}
	}
	// A version without a profile: windows with an error.
	e.svc.profiles = profiles{}
	e.svc.cache = map[string]cachedProfile{}
	ds, err = e.svc.Report(ctx, "m1", Query{})
	if err != nil || len(ds) != 2 || ds[0].Error == "" {
		t.Errorf("report without a profile = %+v, %v; want windows with an error", ds, err)
	}
}

func TestShiftedDataRaisesOneAlertPerStreak(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(t, psiPolicy)
	for k := range 2 {
		e.sendWindow(t, k, 600, 50)
		e.evaluateAfter(t, k)
	}
	if as := e.alerts(t); len(as) != 0 {
		t.Fatalf("alerts after 2 shifted windows = %+v; want none", as)
	}
	// The third window, before it has settled: not judged yet.
	e.sendWindow(t, 2, 600, 50)
	e.clk.Set(hour0.Add(3*time.Hour + time.Minute))
	if err := e.svc.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	if as := e.alerts(t); len(as) != 0 {
		t.Fatalf("alert before the window settled: %+v", as)
	}
	e.evaluateAfter(t, 2)
	as := e.alerts(t)
	if len(as) != 1 {
		t.Fatalf("alerts after 3 shifted windows = %+v; want 1", as)
	}
	a := as[0]
	if a.Model != "m1" || a.Version != "1" || a.Cohort != monitor.CohortAll || len(a.Windows) != 3 ||
		!a.StreakStart.Equal(hour0) || !a.Windows[2].End.Equal(hour0.Add(3*time.Hour)) || a.Windows[2].PSI < psiPolicy.Threshold {
		t.Errorf("alert = %+v", a)
	}
	if len(a.TopFeatures) != 3 || a.TopFeatures[0].Name != "a" {
		t.Errorf("top features = %+v; want a first", a.TopFeatures)
	}
	// The streak goes on, and the evaluator runs again: no new alert.
	for k := 3; k < 6; k++ {
		e.sendWindow(t, k, 600, 50)
		e.evaluateAfter(t, k)
		e.evaluateAfter(t, k)
	}
	if as := e.alerts(t); len(as) != 1 {
		t.Fatalf("alerts as the streak goes on = %d; want 1", len(as))
	}
	// A calm window ends it; three more shifted windows are a new streak.
	e.sendWindow(t, 6, 600, 0)
	e.evaluateAfter(t, 6)
	for k := 7; k < 10; k++ {
		e.sendWindow(t, k, 600, 50)
		e.evaluateAfter(t, k)
	}
	as = e.alerts(t)
	if len(as) != 2 || !as[0].StreakStart.Equal(hour0.Add(7*time.Hour)) {
		t.Fatalf("alerts = %+v; want a second one for the streak from 07:00, newest first", as)
	}
	e.mu.Lock()
	hooked := len(e.hooked)
	e.mu.Unlock()
	if hooked != 2 {
		t.Errorf("hook called %d times; want 2", hooked)
	}
	if as, err := e.svc.Alerts(ctx, "other"); err != nil || len(as) != 0 {
		t.Errorf("alerts of another model = %+v, %v", as, err)
	}
}

func TestUnshiftedDataRaisesNoAlert(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(t, Policy{Metric: MetricPSI, Threshold: 0.1, MinSamples: 500, Windows: 1})
	for k := range 48 {
		e.sendWindow(t, k, 600, 0)
		e.evaluateAfter(t, k)
	}
	if as := e.alerts(t); len(as) != 0 {
		t.Fatalf("alerts on unshifted data = %+v", as)
	}
}

func TestNoAlertWithoutAStreak(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(e *env, t *testing.T, k int)
	}{
		{"too few samples", func(e *env, t *testing.T, k int) { e.sendWindow(t, k, 100, 50) }},
		{"a missing window", func(e *env, t *testing.T, k int) {
			if k != 2 {
				e.sendWindow(t, k, 600, 50)
			}
		}},
		{"a calm window", func(e *env, t *testing.T, k int) {
			shift := 50.0
			if k == 2 {
				shift = 0
			}
			e.sendWindow(t, k, 600, shift)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.setPolicy(t, psiPolicy)
			for k := range 5 {
				tc.send(e, t, k)
				e.evaluateAfter(t, k)
			}
			if as := e.alerts(t); len(as) != 0 {
				t.Errorf("alerts = %+v; want none", as)
			}
		})
	}
}

// TestCatchUpAndPolicyChange evaluates once after several windows, as
// after a restart, and then after a policy change: the one streak raises
// one alert.
func TestCatchUpAndPolicyChange(t *testing.T) {
	e := newEnv(t)
	for k := range 4 {
		e.sendWindow(t, k, 600, 50)
	}
	e.setPolicy(t, psiPolicy)
	e.evaluateAfter(t, 3)
	if as := e.alerts(t); len(as) != 1 || len(as[0].Windows) != 3 {
		t.Fatalf("alerts = %+v; want 1 at the third window", as)
	}
	e.setPolicy(t, Policy{Metric: MetricKS, Threshold: 0.2, MinSamples: 500, Windows: 2})
	e.evaluateAfter(t, 3)
	if as := e.alerts(t); len(as) != 1 {
		t.Errorf("alerts after a policy change = %d; want still 1 (the same streak)", len(as))
	}
}

func TestNoProfileJudgesNothing(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(t, Policy{Metric: MetricPSI, Threshold: 0.2, MinSamples: 500, Windows: 1})
	ref := e.svc.profiles
	e.svc.profiles = profiles{}
	e.sendWindow(t, 0, 600, 50)
	e.evaluateAfter(t, 0)
	if as := e.alerts(t); len(as) != 0 {
		t.Fatalf("alerts without a profile = %+v", as)
	}
	e.svc.profiles = ref // the profile is pushed: the window is judged now
	e.evaluateAfter(t, 0)
	if as := e.alerts(t); len(as) != 1 {
		t.Fatalf("alerts once the profile is there = %+v; want 1", as)
	}
}

func TestPolicyValidation(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.Policy(ctx, "m1"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("Policy before any = %v; want NotFound", err)
	}
	for _, tc := range []struct {
		model string
		p     Policy
	}{
		{"m1", Policy{Metric: "kl", Threshold: 0.2, Windows: 1}},
		{"m1", Policy{Metric: MetricPSI, Threshold: 0, Windows: 1}},
		{"m1", Policy{Metric: MetricPSI, Threshold: math.NaN(), Windows: 1}},
		{"m1", Policy{Metric: MetricJS, Threshold: 1.5, Windows: 1}},
		{"m1", Policy{Metric: MetricPSI, Threshold: 0.2, Windows: 0}},
		{"m1", Policy{Metric: MetricPSI, Threshold: 0.2, Windows: MaxPolicyWindows + 1}},
		{"a/b", psiPolicy},
	} {
		if _, err := e.svc.SetPolicy(ctx, tc.model, tc.p); !shoalerr.Is(err, shoalerr.Invalid) {
			t.Errorf("SetPolicy(%q, %+v) = %v; want Invalid", tc.model, tc.p, err)
		}
	}
	got, err := e.svc.SetPolicy(ctx, "m1", psiPolicy)
	if err != nil || !got.UpdatedAt.Equal(hour0) {
		t.Fatalf("SetPolicy = %+v, %v", got, err)
	}
	back, err := e.svc.Policy(ctx, "m1")
	if err != nil || back != got {
		t.Errorf("Policy = %+v, %v; want %+v", back, err, got)
	}
}

// TestLabelCohortReportedAndAlerted checks that a label cohort of the
// monitor is reported and judged like the others: a streak raises an
// alert in each of the device's cohorts.
func TestLabelCohortReportedAndAlerted(t *testing.T) {
	e := newEnv(t)
	if err := e.mon.ConfigureStats(monitor.StatsConfig{CohortLabels: []string{"region"}, Device: func(context.Context, string) (string, map[string]string, error) {
		return "rpi4", map[string]string{"region": "eu"}, nil
	}}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, psiPolicy)
	for k := range 3 {
		e.sendWindow(t, k, 600, 50)
		e.evaluateAfter(t, k)
	}
	ds, err := e.svc.Report(ctx, "m1", Query{Cohort: "label:region=eu", Last: 24 * time.Hour})
	if err != nil || len(ds) != 3 || ds[0].Cohort != "label:region=eu" || ds[0].Samples != 600 || !ds[2].Breach {
		t.Fatalf("report of label:region=eu = %+v, %v; want 3 breaching windows of 600 samples", ds, err)
	}
	if ds, err := e.svc.Report(ctx, "m1", Query{Cohort: "label:region=us"}); err != nil || len(ds) != 0 {
		t.Errorf("report of an empty label cohort = %+v, %v", ds, err)
	}
	for _, c := range []string{"label:region", "label:a/b=c", "label:region="} {
		if _, err := e.svc.Report(ctx, "m1", Query{Cohort: c}); !shoalerr.Is(err, shoalerr.Invalid) {
			t.Errorf("Report(cohort %q) = %v; want Invalid", c, err)
		}
	}
	cohorts := map[string]bool{}
	for _, a := range e.alerts(t) {
		cohorts[a.Cohort] = true
	}
	if len(cohorts) != 3 || !cohorts[monitor.CohortAll] || !cohorts["profile:rpi4"] || !cohorts["label:region=eu"] {
		t.Errorf("alerts in cohorts %v; want one each in all, profile:rpi4 and label:region=eu", cohorts)
	}
}
