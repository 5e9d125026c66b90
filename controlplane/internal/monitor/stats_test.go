package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// hour0 is the start of a drift window (of the default hour).
var hour0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// testProfile is the reference profile of two numeric inputs and a
// three-class label, made from 1,000 synthetic rows.
func testProfile(t testing.TB) *shoalv1.ReferenceProfile {
	t.Helper()
	in := datastats.Table{Name: "x", Columns: []datastats.Column{{Name: "a"}, {Name: "b"}}}
	out := datastats.Table{Name: "label", Columns: []datastats.Column{{Name: "label", Classes: 3}}}
	for i := range 1000 {
		in.Rows = append(in.Rows, []float64{float64(i % 100), float64((i * 7) % 50)})
		out.Rows = append(out.Rows, []float64{float64(i % 3)})
	}
	p, err := datastats.NewProfile(in, out, datastats.ProfileOptions{Bins: 10})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// statsOf returns the statistics of n rows starting at row first (row i
// is (i mod 100 + shift, 7i mod 50, i mod 3)) binned with p.
func statsOf(t testing.TB, p *shoalv1.ReferenceProfile, first, n int, shift float64) (in, out []*shoalv1.FeatureStats) {
	t.Helper()
	a, err := datastats.NewAccumulator(p)
	if err != nil {
		t.Fatal(err)
	}
	var xs, ys []float64
	for i := first; i < first+n; i++ {
		xs = append(xs, float64(i%100)+shift, float64((i*7)%50))
		ys = append(ys, float64(i%3))
	}
	if err := a.Observe(xs, ys); err != nil {
		t.Fatal(err)
	}
	return a.Snapshot()
}

// statsRecord is a record of model m1 version 1 closing a statistics
// window at end.
func statsRecord(seq uint64, end time.Time, in, out []*shoalv1.FeatureStats) *shoalv1.TelemetryRecord {
	return &shoalv1.TelemetryRecord{
		Seq: seq, ModelName: "m1", ModelVersion: "1", Predictions: 10,
		WindowStartUnixMs: end.Add(-time.Minute).UnixMilli(), WindowEndUnixMs: end.UnixMilli(),
		StatsWindowStartUnixMs: end.Add(-10 * time.Minute).UnixMilli(),
		InputStats:             in, OutputStats: out,
	}
}

func recordsBatch(id string, recs ...*shoalv1.TelemetryRecord) *shoalv1.TelemetryBatch {
	b := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: id, FirstSeq: recs[0].GetSeq(), LastSeq: recs[len(recs)-1].GetSeq(), Records: recs}
	return b
}

// profiles is a device→profile and labels table that counts its
// lookups.
type profiles struct {
	mu      sync.Mutex
	of      map[string]string
	labels  map[string]map[string]string
	lookups int
}

func (p *profiles) get(_ context.Context, id string) (string, map[string]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lookups++
	prof, ok := p.of[id]
	if !ok {
		return "", nil, errors.New("no such device")
	}
	return prof, maps.Clone(p.labels[id]), nil
}

func (p *profiles) setLabels(id string, labels map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.labels[id] = labels
}

// newStatsEnv is newEnv with a clock, cohort labels region and site, and
// devices d1, d2 (profile rpi4) and d3 (profile jetson), none labelled.
func newStatsEnv(t *testing.T) (*env, *shoaltest.Clock, *profiles) {
	t.Helper()
	e := newEnv(t)
	clk := shoaltest.NewClock(hour0.Add(3 * time.Hour))
	profs := &profiles{of: map[string]string{"d1": "rpi4", "d2": "rpi4", "d3": "jetson"}, labels: map[string]map[string]string{}}
	e.mon = New(e.st, e.pub, scheme, slog.New(e.logs), clk.Now)
	if err := e.mon.ConfigureStats(StatsConfig{Device: profs.get, CohortLabels: []string{"region", "site"}}); err != nil {
		t.Fatal(err)
	}
	return e, clk, profs
}

// windows returns the statistics windows of m1 version 1 by cohort.
func (e *env) windows(t *testing.T) map[string][]StatsWindow {
	t.Helper()
	ws, err := e.mon.StatsWindows(ctx, "m1", "1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]StatsWindow{}
	for _, w := range ws {
		out[w.Cohort] = append(out[w.Cohort], w)
	}
	return out
}

func mergeAll(t *testing.T, parts ...[]*shoalv1.FeatureStats) []*shoalv1.FeatureStats {
	t.Helper()
	out := cloneStats(parts[0])
	for _, p := range parts[1:] {
		if err := datastats.MergeAllInto(out, p); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func sameStats(t *testing.T, what string, got, want []*shoalv1.FeatureStats) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d features; want %d", what, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("%s[%d] = %v\nwant %v", what, i, got[i], want[i])
		}
	}
}

func TestStatsMergedByWindowAndCohort(t *testing.T) {
	e, _, _ := newStatsEnv(t)
	p := testProfile(t)
	in1, out1 := statsOf(t, p, 0, 300, 0)
	in2, out2 := statsOf(t, p, 300, 200, 5)
	in3, out3 := statsOf(t, p, 500, 100, 0)
	in4, out4 := statsOf(t, p, 600, 50, 0)

	// d1's and d3's records end within the first hour (one at its very
	// end, which is exclusive); d2's second record in the next.
	e.send(t, recordsBatch("d1", statsRecord(1, hour0.Add(20*time.Minute), in1, out1), statsRecord(2, hour0.Add(time.Hour), in2, out2)))
	e.send(t, recordsBatch("d3", statsRecord(1, hour0.Add(30*time.Minute), in3, out3)))
	e.send(t, recordsBatch("d2", statsRecord(7, hour0.Add(time.Hour+time.Millisecond), in4, out4)))

	ws := e.windows(t)
	if len(ws[CohortAll]) != 2 || len(ws["profile:rpi4"]) != 2 || len(ws["profile:jetson"]) != 1 || len(ws) != 3 {
		t.Fatalf("windows = %+v", ws)
	}
	all := ws[CohortAll][0]
	if !all.Start.Equal(hour0) || !all.End.Equal(hour0.Add(time.Hour)) || all.Records != 3 || all.Samples != 600 {
		t.Errorf("first window of all = %v–%v, %d records, %d samples; want %v–%v, 3, 600", all.Start, all.End, all.Records, all.Samples, hour0, hour0.Add(time.Hour))
	}
	sameStats(t, "all inputs", all.Inputs, mergeAll(t, in1, in2, in3))
	sameStats(t, "all outputs", all.Outputs, mergeAll(t, out1, out2, out3))
	rpi := ws["profile:rpi4"]
	sameStats(t, "rpi4 inputs", rpi[0].Inputs, mergeAll(t, in1, in2))
	sameStats(t, "rpi4 second window", rpi[1].Inputs, in4)
	if !rpi[1].Start.Equal(hour0.Add(time.Hour)) || rpi[1].Samples != 50 {
		t.Errorf("second rpi4 window starts %v with %d samples; want %v, 50", rpi[1].Start, rpi[1].Samples, hour0.Add(time.Hour))
	}
	sameStats(t, "jetson outputs", ws["profile:jetson"][0].Outputs, out3)
	if s := e.mon.Stats(); s.StatsMerged != 4 || s.StatsInvalid+s.StatsMismatched+s.StatsOverLimit != 0 {
		t.Errorf("stats = %+v; want 4 merged, nothing else", s)
	}

	// The batches again: acknowledged, not counted twice.
	e.send(t, recordsBatch("d1", statsRecord(1, hour0.Add(20*time.Minute), in1, out1), statsRecord(2, hour0.Add(time.Hour), in2, out2)))
	e.send(t, recordsBatch("d2", statsRecord(7, hour0.Add(time.Hour+time.Millisecond), in4, out4)))
	again := e.windows(t)
	sameStats(t, "all inputs after resend", again[CohortAll][0].Inputs, all.Inputs)
	if again[CohortAll][0].Records != 3 || again["profile:rpi4"][1].Records != 1 {
		t.Errorf("records after resend = %d, %d; want 3, 1", again[CohortAll][0].Records, again["profile:rpi4"][1].Records)
	}
	if s := e.mon.Stats(); s.StatsMerged != 4 || s.DuplicateRecords != 3 {
		t.Errorf("after resend stats = %+v; want 4 merged, 3 duplicates", s)
	}
	if n := len(e.pub.acks(t)); n != 5 {
		t.Errorf("%d acks; want 5", n)
	}

	// Since filters by window end.
	ws2, err := e.mon.StatsWindows(ctx, "m1", "", hour0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ws2) != 2 { // all and rpi4 of the second hour
		t.Errorf("windows since the first hour's end = %+v; want 2", ws2)
	}
}

func TestStatsSurviveRestart(t *testing.T) {
	e, _, _ := newStatsEnv(t)
	p := testProfile(t)
	in, out := statsOf(t, p, 0, 100, 0)
	e.send(t, recordsBatch("d1", statsRecord(1, hour0.Add(time.Minute), in, out)))
	e.reopen(t) // a Monitor without ConfigureStats: default window, "all" only
	e.send(t, recordsBatch("d1", statsRecord(2, hour0.Add(2*time.Minute), in, out)))
	ws := e.windows(t)
	if len(ws[CohortAll]) != 1 || ws[CohortAll][0].Records != 2 || ws["profile:rpi4"][0].Records != 1 {
		t.Fatalf("windows = %+v", ws)
	}
	sameStats(t, "all inputs", ws[CohortAll][0].Inputs, mergeAll(t, in, in))
}

func TestStatsBadShapesSkippedAndCounted(t *testing.T) {
	e, _, _ := newStatsEnv(t)
	p := testProfile(t)
	in, out := statsOf(t, p, 0, 100, 0)
	at := hour0.Add(time.Minute)
	e.send(t, recordsBatch("d1", statsRecord(1, at, in, out)))

	fewerBins := cloneStats(in)
	fewerBins[0].BinCounts = fewerBins[0].BinCounts[1:]
	fewerBins[0].Count -= in[0].BinCounts[0]
	renamed := cloneStats(in)
	renamed[1].Name = "c"
	badSum := cloneStats(in)
	badSum[0].Count++
	tooMany := make([]*shoalv1.FeatureStats, MaxStatsFeatures+1)
	for i := range tooMany {
		tooMany[i] = &shoalv1.FeatureStats{Name: fmt.Sprint("f", i), BinCounts: []uint64{0}}
	}
	tooManyBins := []*shoalv1.FeatureStats{{Name: "wide", BinCounts: make([]uint64, datastats.MaxBins+1)}}
	badName := statsRecord(7, at, in, out)
	badName.ModelVersion = "no/slash"

	e.send(t, recordsBatch("d1",
		statsRecord(2, at, fewerBins, out), // mismatched
		statsRecord(3, at, renamed, out),   // mismatched
		statsRecord(4, at, badSum, out),    // invalid
		statsRecord(5, at, tooMany, nil),   // invalid
		statsRecord(6, at, tooManyBins, nil),
		badName,                         // invalid: no version to key it
		statsRecord(8, at, in, out[:0]), // mismatched: no outputs
		statsRecord(9, at, in, out),     // merged
	))
	s := e.mon.Stats()
	if s.StatsMerged != 2 || s.StatsMismatched != 3 || s.StatsInvalid != 4 || s.Records != 9 {
		t.Errorf("stats = %+v; want 2 merged, 3 mismatched, 4 invalid, 9 records", s)
	}
	if n := len(e.pub.acks(t)); n != 2 {
		t.Errorf("%d acks; want 2", n)
	}
	ws := e.windows(t)
	if w := ws[CohortAll][0]; w.Records != 2 {
		t.Errorf("all window merged %d records; want 2", w.Records)
	}
	sameStats(t, "all inputs", ws[CohortAll][0].Inputs, mergeAll(t, in, in))
	if got := e.summary(t, "d1").Records; got != 9 {
		t.Errorf("device records = %d; want 9 (every record is stored)", got)
	}
	if e.logs.count("data statistics left out") == 0 {
		t.Error("no warning logged")
	}
}

func TestStatsProfileCachedAndUnknownDevice(t *testing.T) {
	e, clk, profs := newStatsEnv(t)
	p := testProfile(t)
	in, out := statsOf(t, p, 0, 10, 0)
	for seq := uint64(1); seq <= 3; seq++ {
		e.send(t, recordsBatch("d1", statsRecord(seq, hour0.Add(time.Minute), in, out)))
	}
	if profs.lookups != 1 {
		t.Errorf("%d profile lookups for 3 batches; want 1", profs.lookups)
	}
	clk.Advance(profileTTL)
	e.send(t, recordsBatch("d1", statsRecord(4, hour0.Add(time.Minute), in, out)))
	if profs.lookups != 2 {
		t.Errorf("%d profile lookups after the cache expired; want 2", profs.lookups)
	}
	// A device the profile lookup fails for is in "all" only.
	e.send(t, recordsBatch("stranger", statsRecord(1, hour0.Add(time.Minute), in, out)))
	ws := e.windows(t)
	if ws[CohortAll][0].Records != 5 || ws["profile:rpi4"][0].Records != 4 || len(ws) != 2 {
		t.Errorf("windows = %+v", ws)
	}
}

func TestConfigureStatsWindow(t *testing.T) {
	e := newEnv(t)
	for _, w := range []time.Duration{-time.Hour, 7 * time.Minute, time.Microsecond, 25 * time.Hour} {
		if err := e.mon.ConfigureStats(StatsConfig{Window: w}); err == nil {
			t.Errorf("ConfigureStats(%v) = nil; want an error", w)
		}
	}
	if err := e.mon.ConfigureStats(StatsConfig{Window: 15 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	p := testProfile(t)
	in, out := statsOf(t, p, 0, 10, 0)
	e.send(t, recordsBatch("d1", statsRecord(1, hour0.Add(20*time.Minute), in, out)))
	ws := e.windows(t)[CohortAll]
	if len(ws) != 1 || !ws[0].Start.Equal(hour0.Add(15*time.Minute)) || !ws[0].End.Equal(hour0.Add(30*time.Minute)) {
		t.Errorf("windows = %+v; want one from 10:15 to 10:30", ws)
	}
}

// TestMaxStatsBatchIsStoredInOneTransaction sends a batch as large as
// allowed of records with the most statistics allowed, each in a window of
// its own, from a device in 4 cohorts: the aggregates over
// MaxBatchStatsBytes are left out, and the batch is stored.
func TestMaxStatsBatchIsStoredInOneTransaction(t *testing.T) {
	e, _, profs := newStatsEnv(t)
	profs.setLabels("d1", map[string]string{"region": "eu", "site": "s1"}) // 4 cohorts
	stats := func() []*shoalv1.FeatureStats {
		var out []*shoalv1.FeatureStats
		for i := range MaxStatsFeatures {
			s := &shoalv1.FeatureStats{Name: fmt.Sprintf("%0250d", i), BinCounts: make([]uint64, MaxStatsBins/MaxStatsFeatures)}
			s.BinCounts[0], s.Count, s.Min, s.Max, s.Mean = 1<<62, 1<<62, 1, 1, 1
			out = append(out, s)
		}
		return out
	}()
	var recs []*shoalv1.TelemetryRecord
	size := 0
	for seq := uint64(1); ; seq++ {
		r := statsRecord(seq, hour0.Add(time.Duration(seq)*time.Hour), stats, nil)
		if size += proto.Size(r) + 8; size > MaxBatchBytes-1024 {
			break
		}
		recs = append(recs, r)
	}
	e.send(t, recordsBatch("d1", recs...))
	s := e.mon.Stats()
	if s.Batches != 1 || s.StoreErrors != 0 {
		t.Fatalf("stats = %+v; want the batch stored", s)
	}
	// A record's 4 aggregates (about 80 KB each) do not fit together:
	// some of its cohorts get its statistics, and it counts as over.
	if s.StatsOverLimit != uint64(len(recs)) || s.StatsMerged != 0 {
		t.Errorf("stats = %+v for %d records; want every one over the limit", s, len(recs))
	}
	if ws := e.windows(t); len(ws[CohortAll]) == 0 {
		t.Errorf("windows = %v; want some of cohort all", ws)
	}
}

// TestStatsMergedByLabelCohort checks that a record goes to the cohorts of
// its device's values of the cohort labels, besides all and its
// profile's, and only to those.
func TestStatsMergedByLabelCohort(t *testing.T) {
	e, _, profs := newStatsEnv(t)
	profs.setLabels("d1", map[string]string{"region": "eu", "team": "x"}) // team is no cohort label
	profs.setLabels("d2", map[string]string{"region": "eu", "site": "s1"})
	profs.setLabels("d3", map[string]string{"region": ""}) // no value: no cohort
	p := testProfile(t)
	in1, out1 := statsOf(t, p, 0, 30, 0)
	in2, out2 := statsOf(t, p, 30, 20, 0)
	in3, out3 := statsOf(t, p, 50, 10, 0)
	e.send(t, recordsBatch("d1", statsRecord(1, hour0.Add(time.Minute), in1, out1), statsRecord(2, hour0.Add(2*time.Minute), in1, out1)))
	e.send(t, recordsBatch("d2", statsRecord(1, hour0.Add(time.Minute), in2, out2)))
	e.send(t, recordsBatch("d3", statsRecord(1, hour0.Add(time.Minute), in3, out3)))

	ws := e.windows(t)
	want := map[string][2]uint64{ // records, samples
		CohortAll:         {4, 90},
		"profile:rpi4":    {3, 80},
		"profile:jetson":  {1, 10},
		"label:region=eu": {3, 80},
		"label:site=s1":   {1, 20},
	}
	if len(ws) != len(want) {
		t.Errorf("cohorts = %v; want %v", slices.Sorted(maps.Keys(ws)), slices.Sorted(maps.Keys(want)))
	}
	for c, w := range want {
		if len(ws[c]) != 1 || ws[c][0].Records != w[0] || ws[c][0].Samples != w[1] {
			t.Errorf("cohort %s = %+v; want one window of %d records, %d samples", c, ws[c], w[0], w[1])
		}
	}
	sameStats(t, "region=eu inputs", ws["label:region=eu"][0].Inputs, mergeAll(t, in1, in1, in2))
	sameStats(t, "site=s1 outputs", ws["label:site=s1"][0].Outputs, out2)
	if s := e.mon.Stats(); s.StatsMerged != 4 || s.StatsInvalid+s.StatsMismatched+s.StatsOverLimit != 0 {
		t.Errorf("stats = %+v; want 4 merged, nothing else", s)
	}
}

// TestStatsLabelChangeAfterCacheExpiry checks that a device's new labels
// are used once its cached ones expire, not before.
func TestStatsLabelChangeAfterCacheExpiry(t *testing.T) {
	e, clk, profs := newStatsEnv(t)
	profs.setLabels("d1", map[string]string{"region": "eu"})
	p := testProfile(t)
	in, out := statsOf(t, p, 0, 10, 0)
	e.send(t, recordsBatch("d1", statsRecord(1, hour0.Add(time.Minute), in, out)))
	profs.setLabels("d1", map[string]string{"region": "us"})
	clk.Advance(profileTTL - time.Second)
	e.send(t, recordsBatch("d1", statsRecord(2, hour0.Add(time.Minute), in, out))) // cached: still eu
	clk.Advance(time.Second)
	e.send(t, recordsBatch("d1", statsRecord(3, hour0.Add(time.Minute), in, out))) // expired: us
	profs.setLabels("d1", nil)
	clk.Advance(profileTTL)
	e.send(t, recordsBatch("d1", statsRecord(4, hour0.Add(time.Minute), in, out))) // expired: unlabelled

	ws := e.windows(t)
	for c, n := range map[string]uint64{CohortAll: 4, "profile:rpi4": 4, "label:region=eu": 2, "label:region=us": 1} {
		if len(ws[c]) != 1 || ws[c][0].Records != n {
			t.Errorf("cohort %s = %+v; want one window of %d records", c, ws[c], n)
		}
	}
	if len(ws) != 4 {
		t.Errorf("cohorts = %v; want 4", slices.Sorted(maps.Keys(ws)))
	}
	if profs.lookups != 3 {
		t.Errorf("%d lookups; want 3", profs.lookups)
	}
}

func TestConfigureStatsCohortLabels(t *testing.T) {
	e := newEnv(t)
	for _, labels := range [][]string{{"a", "b", "c", "d", "e"}, {"a", "a"}, {""}, {"a/b"}, {"a=b"}, {"a:b"}, {".."}} {
		if err := e.mon.ConfigureStats(StatsConfig{CohortLabels: labels}); err == nil {
			t.Errorf("ConfigureStats(CohortLabels: %q) = nil; want an error", labels)
		}
	}
	if err := e.mon.ConfigureStats(StatsConfig{CohortLabels: []string{"region", "site", "k8s.zone", "rack_1"}}); err != nil {
		t.Error(err)
	}
}

func TestCheckCohort(t *testing.T) {
	for _, c := range []string{"all", "profile:rpi4", "label:region=eu", "label:k8s.zone=a-1"} {
		if err := CheckCohort(c); err != nil {
			t.Errorf("CheckCohort(%q) = %v", c, err)
		}
	}
	for _, c := range []string{"", "All", "profile:", "label:", "label:region", "label:region=", "label:=eu", "label:a/b=c", "label:a=b=c", "label:a=b/c", "other:x"} {
		if err := CheckCohort(c); err == nil {
			t.Errorf("CheckCohort(%q) = nil; want an error", c)
		}
	}
}

// TestManySmallStatsAggregatesStoredInOneTransaction sends the most
// records a batch may hold, each with the least statistics and in a
// window of its own, from a device in every cohort there can be, with
// long cohort names: the keys of the aggregates count towards
// MaxBatchStatsBytes, so the batch still fits in one transaction.
func TestManySmallStatsAggregatesStoredInOneTransaction(t *testing.T) {
	e := newEnv(t)
	clk := shoaltest.NewClock(hour0)
	keys := []string{"a", "b", "c", "d"}
	labels := map[string]string{}
	for _, k := range keys {
		labels[k] = strings.Repeat(k, 63)
	}
	profs := &profiles{of: map[string]string{"d1": strings.Repeat("p", 128)}, labels: map[string]map[string]string{"d1": labels}}
	e.mon = New(e.st, e.pub, scheme, slog.New(e.logs), clk.Now)
	if err := e.mon.ConfigureStats(StatsConfig{Device: profs.get, CohortLabels: keys, Window: time.Second}); err != nil {
		t.Fatal(err)
	}
	stats := []*shoalv1.FeatureStats{{Name: "a", BinCounts: []uint64{1}, Count: 1}}
	var recs []*shoalv1.TelemetryRecord
	size := 0
	for seq := uint64(1); seq <= MaxBatchRecords; seq++ {
		end := hour0.Add(time.Duration(seq) * time.Second)
		r := &shoalv1.TelemetryRecord{Seq: seq, ModelName: "m1", ModelVersion: "1", WindowEndUnixMs: end.UnixMilli(), InputStats: stats}
		if size += proto.Size(r) + 8; size > MaxBatchBytes-1024 {
			break
		}
		recs = append(recs, r)
	}
	e.send(t, recordsBatch("d1", recs...))
	s := e.mon.Stats()
	if s.Batches != 1 || s.StoreErrors != 0 {
		t.Fatalf("stats = %+v; want the batch stored", s)
	}
	if s.StatsOverLimit == 0 || s.StatsMerged == 0 || s.StatsMerged+s.StatsOverLimit != uint64(len(recs)) {
		t.Errorf("stats = %+v for %d records; want some merged and the rest over the limit", s, len(recs))
	}
	t.Logf("%d records, %d merged into all 6 cohorts", len(recs), s.StatsMerged)
}
