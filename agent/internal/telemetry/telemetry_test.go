package telemetry

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/outbox"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The outbox is the sink the agent wires in.
var _ Sink = (*outbox.Outbox)(nil)

// memSink stores records; it refuses them while fail is set.
type memSink struct {
	mu       sync.Mutex
	recs     []*shoalv1.TelemetryRecord
	fail     error
	appended chan struct{}
}

func newSink() *memSink { return &memSink{appended: make(chan struct{}, 1)} }

func (s *memSink) Append(r *shoalv1.TelemetryRecord) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	s.recs = append(s.recs, r)
	select {
	case s.appended <- struct{}{}:
	default:
	}
	return uint64(len(s.recs)), nil
}

func (s *memSink) take() []*shoalv1.TelemetryRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs
	s.recs = nil
	return r
}

var t0 = time.Date(2026, 3, 1, 12, 0, 3, 0, time.UTC)

func TestBuckets(t *testing.T) {
	for i := 0; i+1 < numBuckets; i++ {
		_, hi := bucketRange(i)
		lo, _ := bucketRange(i + 1)
		if lo != hi+1 {
			t.Fatalf("bucket %d ends at %d; bucket %d starts at %d", i, hi, i+1, lo)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	vals := []uint64{0, 1, 15, 16, 17, 31, 32, 1000, 1 << 20, 1<<40 - 1}
	for range 10000 {
		vals = append(vals, r.Uint64N(1<<uint(r.IntN(40)+1)))
	}
	for _, v := range vals {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("%d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if mid := lo + (hi-lo)/2; math.Abs(float64(mid)-float64(v)) > float64(v)/16 {
			t.Fatalf("%d: bucket midpoint %d is more than 1/16 away", v, mid)
		}
	}
	if bucketOf(1<<50) != numBuckets-1 {
		t.Error("huge value not in the last bucket")
	}
}

func TestRecordContentsAndPercentiles(t *testing.T) {
	clk := shoaltest.NewClock(t0)
	sink := newSink()
	a := NewAggregator(Config{Now: clk.Now}, sink, nil)
	const n = 10000
	vals := rand.New(rand.NewPCG(3, 4)).Perm(n)
	var sum uint64
	for i, v := range vals {
		us := uint64(v + 1) // 1..n µs, shuffled
		sum += us
		a.Observe("mnist", "2", time.Duration(us)*time.Microsecond+300*time.Nanosecond, i%10 == 0)
	}
	a.Observe("other", "1", -time.Second, false) // a negative latency counts as 0
	clk.Set(t0.Add(4 * time.Second))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 2 || recs[0].ModelName != "mnist" || recs[1].ModelName != "other" {
		t.Fatalf("records = %v", recs)
	}
	r := recs[0]
	if r.ModelVersion != "2" || r.Predictions != n || r.Errors != n/10 || r.LatencySumUs != sum || r.LatencyMaxUs != n ||
		r.WindowStartUnixMs != t0.UnixMilli() || r.WindowEndUnixMs != t0.Add(4*time.Second).UnixMilli() {
		t.Fatalf("record = %v", r)
	}
	for _, c := range []struct {
		got  uint64
		want float64
	}{{r.LatencyP50Us, 0.50 * n}, {r.LatencyP95Us, 0.95 * n}, {r.LatencyP99Us, 0.99 * n}} {
		if math.Abs(float64(c.got)-c.want) > c.want/16 {
			t.Errorf("percentile %d; want %.0f ± 6.25%%", c.got, c.want)
		}
	}
	if o := recs[1]; o.Predictions != 1 || o.LatencyMaxUs != 0 || o.LatencyP99Us != 0 {
		t.Errorf("other = %v", o)
	}
	// The window was flushed: a second Flush has nothing.
	if err := a.Flush(); err != nil || len(sink.take()) != 0 {
		t.Fatalf("second Flush: %v", err)
	}
}

func TestWindowsFollowTheClock(t *testing.T) {
	clk := shoaltest.NewClock(t0) // 12:00:03, inside the window [12:00:00, 12:00:10)
	sink := newSink()
	a := NewAggregator(Config{Window: 10 * time.Second, Now: clk.Now}, sink, nil)
	a.Observe("a", "1", time.Millisecond, false)
	if err := a.tick(t0.Add(6 * time.Second)); err != nil || len(sink.take()) != 0 {
		t.Fatal("window flushed before its end")
	}
	if got := a.untilEnd(); got != 7*time.Second {
		t.Errorf("untilEnd = %v; want 7s", got)
	}
	boundary := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	if err := a.tick(boundary.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 1 || recs[0].WindowStartUnixMs != t0.UnixMilli() || recs[0].WindowEndUnixMs != boundary.UnixMilli() {
		t.Fatalf("first window = %v", recs)
	}
	// An empty window makes no record.
	if err := a.tick(boundary.Add(10 * time.Second)); err != nil || len(sink.take()) != 0 {
		t.Fatal("empty window made a record")
	}
	// After a suspend the record covers the time away, up to the last
	// boundary.
	a.Observe("a", "1", time.Millisecond, false)
	if err := a.tick(boundary.Add(35 * time.Second)); err != nil {
		t.Fatal(err)
	}
	recs = sink.take()
	if len(recs) != 1 || recs[0].WindowStartUnixMs != boundary.Add(10*time.Second).UnixMilli() || recs[0].WindowEndUnixMs != boundary.Add(30*time.Second).UnixMilli() {
		t.Fatalf("window after a suspend = %v", recs)
	}
}

func TestSinkFailureKeepsRecords(t *testing.T) {
	clk := shoaltest.NewClock(t0)
	sink := newSink()
	var appended int
	a := NewAggregator(Config{Now: clk.Now, Appended: func() { appended++ }}, sink, nil)
	sink.fail = errors.New("disk full")
	a.Observe("a", "1", time.Millisecond, false)
	if err := a.Flush(); err == nil {
		t.Fatal("Flush hid the sink's error")
	}
	a.Observe("a", "1", time.Millisecond, true)
	sink.fail = nil
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 2 || recs[0].Predictions != 1 || recs[0].Errors != 0 || recs[1].Errors != 1 || appended != 1 {
		t.Fatalf("records = %v, Appended called %d times", recs, appended)
	}
}

// TestCountsExactUnderConcurrency observes from many goroutines while
// windows rotate (Run with a tiny window, and Flush called in a loop): no
// prediction may be lost or counted twice.
func TestCountsExactUnderConcurrency(t *testing.T) {
	sink := newSink()
	a := NewAggregator(Config{Window: time.Millisecond}, sink, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- a.Run(ctx) }()

	const goroutines, each = 4, 5000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				a.Observe("m", []string{"1", "2"}[g%2], time.Duration(i)*time.Microsecond, i%7 == 0)
			}
		}()
	}
	observed := make(chan struct{})
	go func() { wg.Wait(); close(observed) }()
	flushes := 0
	for done := false; !done; flushes++ {
		select {
		case <-observed:
			done = true
		default:
		}
		if err := a.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	var preds, errs uint64
	recs := sink.take()
	for _, r := range recs {
		preds += r.Predictions
		errs += r.Errors
	}
	wantErrs := uint64(goroutines * ((each + 6) / 7))
	if preds != goroutines*each || errs != wantErrs {
		t.Fatalf("records count %d predictions, %d errors; want %d, %d", preds, errs, goroutines*each, wantErrs)
	}
	t.Logf("%d records from %d flushes", len(recs), flushes)
}

// TestRunFlushesEachWindow: Run flushes each window as it ends by the
// clock. It runs in a synctest bubble, where Run's timer and time.Now are
// on fake time, so each flush is seen at the instant its window ends: a
// flush that never comes is a deadlock the bubble reports, not a timeout.
func TestRunFlushesEachWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 20 * time.Millisecond
		sink := newSink()
		a := NewAggregator(Config{Window: window}, sink, nil)
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error)
		go func() { ran <- a.Run(ctx) }()
		for i := range 2 {
			a.Observe("m", "1", time.Millisecond, false)
			<-sink.appended
			end := start.Truncate(window).Add(time.Duration(i+1) * window)
			if now := time.Now(); !now.Equal(end) {
				t.Fatalf("window %d flushed at %v; want at its end, %v", i, now, end)
			}
			if recs := sink.take(); len(recs) != 1 || recs[0].Predictions != 1 || recs[0].WindowEndUnixMs != end.UnixMilli() || recs[0].WindowEndUnixMs%20 != 0 {
				t.Fatalf("window %d: records = %v; want one with 1 prediction ending at %v", i, recs, end)
			}
		}
		cancel()
		if err := <-ran; err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkObserve(b *testing.B) {
	a := NewAggregator(Config{}, newSink(), nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Observe("mnist", "3", 150*time.Microsecond, false)
		}
	})
}

// TestClockSteppedBack: when the wall clock steps back an hour, windows
// keep closing every Window instead of stalling for the hour, and no
// prediction is lost.
func TestClockSteppedBack(t *testing.T) {
	clk := shoaltest.NewClock(t0)
	sink := newSink()
	a := NewAggregator(Config{Window: 10 * time.Second, Now: clk.Now}, sink, nil)
	a.Observe("a", "1", time.Millisecond, false)
	back := t0.Add(-time.Hour)
	clk.Set(back)
	if got := a.untilEnd(); got > 10*time.Second {
		t.Fatalf("after the clock stepped back the next flush is in %v; want at most one window", got)
	}
	if err := a.tick(back); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 1 || recs[0].Predictions != 1 {
		t.Fatalf("records after the step back = %v", recs)
	}
	// The next window starts at the new time and ends on schedule.
	a.Observe("a", "1", time.Millisecond, false)
	a.Observe("a", "1", time.Millisecond, false)
	if err := a.tick(back.Add(11 * time.Second)); err != nil {
		t.Fatal(err)
	}
	recs = sink.take()
	if len(recs) != 1 || recs[0].Predictions != 2 || recs[0].WindowStartUnixMs != back.UnixMilli() {
		t.Fatalf("window after the step back = %v", recs)
	}
	// Forward jump: the window covering the jump closes at the last boundary.
	a.Observe("a", "1", time.Millisecond, false)
	fwd := back.Add(24 * time.Hour)
	if err := a.tick(fwd); err != nil {
		t.Fatal(err)
	}
	if recs = sink.take(); len(recs) != 1 || recs[0].Predictions != 1 {
		t.Fatalf("window after a jump forward = %v", recs)
	}
}
