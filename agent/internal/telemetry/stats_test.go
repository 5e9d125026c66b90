package telemetry

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/outbox"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The default bound on a record is the outbox's.
var _ = [1]struct{}{}[DefaultMaxRecordBytes-outbox.MaxRecordBytes]

// serving is a settable Config.Stats.
type serving struct {
	mu sync.Mutex
	vs []VersionStats
}

func (s *serving) set(vs ...VersionStats) { s.mu.Lock(); s.vs = vs; s.mu.Unlock() }
func (s *serving) Stats() []VersionStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.vs)
}

// newStats returns an accumulator of one numeric input "f" binned at 1
// and 2 and a label of 3 classes.
func newStats(t *testing.T) *datastats.Accumulator {
	t.Helper()
	acc, err := datastats.NewAccumulator(&shoalv1.ReferenceProfile{
		SchemaVersion: datastats.SchemaVersion, InputName: "x", OutputName: "label",
		Inputs:  []*shoalv1.FeatureProfile{{Name: "f", Edges: []float64{1, 2}}},
		Outputs: []*shoalv1.FeatureProfile{{Name: "label", Categorical: true, Classes: 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

// predict counts a prediction of rows x with labels in a and acc.
func predict(t *testing.T, a *Aggregator, acc *datastats.Accumulator, version string, x []float32, labels []int64) {
	t.Helper()
	a.Observe("m", version, time.Millisecond, false)
	if err := acc.Observe(x, labels); err != nil {
		t.Fatal(err)
	}
}

func TestStatsRideOnTheRecordThatClosesTheirWindow(t *testing.T) {
	clk := shoaltest.NewClock(t0) // 12:00:03
	sink := newSink()
	src := &serving{}
	a := NewAggregator(Config{Window: 10 * time.Second, StatsWindow: 30 * time.Second, Now: clk.Now, Stats: src.Stats}, sink, nil)
	acc := newStats(t)
	src.set(VersionStats{"m", "1", acc})
	at := func(s int) time.Time { return time.Date(2026, 3, 1, 12, 0, s, 0, time.UTC) }

	predict(t, a, acc, "1", []float32{0.5, 1.5}, []int64{0, 1})
	if err := a.tick(at(10)); err != nil {
		t.Fatal(err)
	}
	predict(t, a, acc, "1", []float32{2.5}, []int64{2})
	if err := a.tick(at(20)); err != nil {
		t.Fatal(err)
	}
	for _, r := range sink.take() {
		if len(r.InputStats)+len(r.OutputStats) != 0 || r.StatsWindowStartUnixMs != 0 {
			t.Fatalf("statistics before their window ended: %v", r)
		}
	}
	predict(t, a, acc, "1", []float32{1, 7}, []int64{2, 2})
	if err := a.tick(at(30)); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 1 || recs[0].Predictions != 1 || recs[0].WindowStartUnixMs != at(20).UnixMilli() || recs[0].WindowEndUnixMs != at(30).UnixMilli() {
		t.Fatalf("records at the end of the statistics window = %v", recs)
	}
	r := recs[0]
	if r.StatsWindowStartUnixMs != t0.UnixMilli() || len(r.InputStats) != 1 || len(r.OutputStats) != 1 {
		t.Fatalf("record = %v; want the statistics since %v", r, t0)
	}
	if in := r.InputStats[0]; in.Name != "f" || in.Count != 5 || !slices.Equal(in.BinCounts, []uint64{1, 2, 2}) || in.Max != 7 {
		t.Errorf("input statistics = %v; want 5 values in bins [1 2 2]", in)
	}
	if out := r.OutputStats[0]; out.Name != "label" || out.Count != 5 || !slices.Equal(out.BinCounts, []uint64{1, 1, 3}) {
		t.Errorf("output statistics = %v; want 5 labels in bins [1 1 3]", out)
	}

	// The next statistics window starts where that one ended. A version
	// swapped out sends what it has left with the next window, in a
	// record of its own if it made no prediction in it; the new version
	// starts its own window.
	predict(t, a, acc, "1", []float32{0}, []int64{0})
	if err := a.tick(at(40)); err != nil {
		t.Fatal(err)
	}
	if recs := sink.take(); len(recs) != 1 || len(recs[0].InputStats) != 0 {
		t.Fatalf("records = %v; want one without statistics", recs)
	}
	acc2 := newStats(t)
	src.set(VersionStats{"m", "2", acc2})
	predict(t, a, acc2, "2", []float32{1.5}, []int64{1})
	if err := a.tick(at(50)); err != nil {
		t.Fatal(err)
	}
	recs = sink.take()
	if len(recs) != 2 || recs[0].ModelVersion != "1" || recs[1].ModelVersion != "2" {
		t.Fatalf("records after the swap = %v; want versions 1 and 2", recs)
	}
	if old := recs[0]; old.Predictions != 0 || old.StatsWindowStartUnixMs != at(30).UnixMilli() || old.WindowEndUnixMs != at(50).UnixMilli() ||
		len(old.InputStats) != 1 || old.InputStats[0].Count != 1 || !slices.Equal(old.OutputStats[0].BinCounts, []uint64{1, 0, 0}) {
		t.Errorf("the swapped-out version's last record = %v; want its 1 row since 12:00:30", old)
	}
	if len(recs[1].InputStats) != 0 {
		t.Errorf("the new version's statistics went out before their window ended: %v", recs[1])
	}
	// Its window, aligned, ends at 12:01:00: a record with no predictions
	// carries its statistics.
	if err := a.tick(at(60)); err != nil {
		t.Fatal(err)
	}
	recs = sink.take()
	if len(recs) != 1 || recs[0].ModelVersion != "2" || recs[0].Predictions != 0 || recs[0].StatsWindowStartUnixMs != at(40).UnixMilli() || recs[0].InputStats[0].Count != 1 {
		t.Fatalf("records at 12:01:00 = %v; want version 2's statistics since 12:00:40", recs)
	}
	// Nothing observed since: no record. Flush sends the statistics so far.
	if err := a.tick(at(70)); err != nil || len(sink.take()) != 0 {
		t.Fatalf("a quiet window made records (%v)", err)
	}
	if err := acc2.Observe([]float32{3, 3}, []int64{2, 2}); err != nil {
		t.Fatal(err)
	}
	clk.Set(at(75))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	recs = sink.take()
	if len(recs) != 1 || recs[0].StatsWindowStartUnixMs != at(60).UnixMilli() || recs[0].WindowEndUnixMs != at(75).UnixMilli() || recs[0].InputStats[0].Count != 2 {
		t.Fatalf("Flush = %v; want version 2's 2 rows since 12:01:00", recs)
	}
}

func TestStatsTooLargeAreDropped(t *testing.T) {
	clk := shoaltest.NewClock(t0)
	sink := newSink()
	src := &serving{}
	a := NewAggregator(Config{Window: 10 * time.Second, StatsWindow: 10 * time.Second, Now: clk.Now, Stats: src.Stats, MaxRecordBytes: 100}, sink, nil)
	acc, quiet := newStats(t), newStats(t)
	src.set(VersionStats{"m", "1", acc}, VersionStats{"q", "1", quiet})
	predict(t, a, acc, "1", []float32{0.5}, []int64{0})
	if err := quiet.Observe([]float32{1}, []int64{1}); err != nil {
		t.Fatal(err)
	}
	if err := a.tick(time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 1 || recs[0].ModelName != "m" || recs[0].Predictions != 1 || len(recs[0].InputStats) != 0 || recs[0].StatsWindowStartUnixMs != 0 {
		t.Fatalf("records = %v; want m's telemetry without its statistics, and no record for q", recs)
	}
	if got := a.StatsDropped(); got != 2 {
		t.Errorf("StatsDropped = %d; want 2", got)
	}
}

func TestStatsOff(t *testing.T) {
	clk := shoaltest.NewClock(t0)
	sink := newSink()
	src := &serving{}
	called := false
	a := NewAggregator(Config{Window: 10 * time.Second, StatsWindow: -1, Now: clk.Now, Stats: func() []VersionStats { called = true; return src.Stats() }}, sink, nil)
	acc := newStats(t)
	src.set(VersionStats{"m", "1", acc})
	predict(t, a, acc, "1", []float32{0.5}, []int64{0})
	clk.Set(t0.Add(time.Hour))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if recs := sink.take(); len(recs) != 1 || len(recs[0].InputStats) != 0 || called {
		t.Fatalf("records = %v (Stats called: %v); want no statistics", recs, called)
	}
}
