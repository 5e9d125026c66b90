// Package telemetry aggregates the agent's predictions into one
// TelemetryRecord per model version and time window (counts, errors,
// latency sum, max and percentiles) and appends the records to a Sink (the
// outbox). Observe is on the inference hot path: it takes no lock that
// another Observe holds and does a few atomic adds.
//
// The data statistics of the versions that keep them (DESIGN §7) ride in
// the same records: when a telemetry window closes at or after the end of
// a version's statistics window, the aggregator takes the statistics and
// puts them on that version's record (making one, with no predictions, if
// the version had none in the telemetry window).
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/failpoint"
	"github.com/shoalfleet/shoal/internal/lograte"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const (
	// DefaultWindow is Config.Window when 0.
	DefaultWindow = 10 * time.Second
	// DefaultStatsWindow is Config.StatsWindow when 0.
	DefaultStatsWindow = time.Minute
	// DefaultMaxRecordBytes is Config.MaxRecordBytes when 0: the outbox's
	// bound on a record.
	DefaultMaxRecordBytes = 64 << 10
	// MaxCapturesPerRecord bounds the captured rows and feedback, each, that
	// one record carries; more in one window are dropped and counted.
	MaxCapturesPerRecord = 256
	// maxUnsent bounds the records kept for another try when the sink
	// refuses them.
	maxUnsent = 1000
)

// Sink stores finished records; *outbox.Outbox satisfies it.
type Sink interface {
	Append(rec *shoalv1.TelemetryRecord) (seq uint64, err error)
}

// Stats is the data statistics a model version keeps;
// *inference.DataStats satisfies it.
type Stats interface {
	// SnapshotAndReset returns the statistics since the last call and
	// starts over.
	SnapshotAndReset() (inputs, outputs []*shoalv1.FeatureStats)
}

// VersionStats is a serving model version and its data statistics.
type VersionStats struct {
	Model, Version string
	Stats          Stats
}

// Config configures an Aggregator.
type Config struct {
	// Window is the aggregation window; windows are aligned to multiples
	// of it. 0 means DefaultWindow.
	Window time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Appended, when set, is called after records were appended to the
	// sink (e.g. the sender's Notify).
	Appended func()
	// Stats, when set, returns the serving versions that keep data
	// statistics. It is called as each window closes.
	Stats func() []VersionStats
	// StatsWindow is the data statistics window: a version's statistics
	// go out with the first telemetry window that closes at or after the
	// end of a multiple of it (so it is at least one Window), and when the
	// version stops serving, and on Flush. 0 means DefaultStatsWindow;
	// negative: no statistics.
	StatsWindow time.Duration
	// MaxRecordBytes bounds a record with its statistics, encoded: a
	// record that would be larger goes out without them (they are counted
	// in StatsDropped). 0 means DefaultMaxRecordBytes.
	MaxRecordBytes int
}

// Aggregator counts predictions per window. Its methods may be called from
// many goroutines.
type Aggregator struct {
	cfg  Config
	sink Sink
	log  *slog.Logger

	cur atomic.Pointer[window]

	flushMu sync.Mutex // one rotation at a time
	unsent  []*shoalv1.TelemetryRecord
	stats   map[key]*statsWindow // guarded by flushMu

	statsDropped atomic.Uint64
	statsLogs    *lograte.Limiter

	capMu    sync.Mutex           // guards pending
	pending  map[key]*pendingData // captures and feedback for the next records
	capDrops atomic.Uint64
}

// pendingData is what a version's next record carries besides its counts.
type pendingData struct {
	captures []*shoalv1.CapturedRow
	feedback []*shoalv1.Feedback
}

// statsWindow is the open statistics window of one version.
type statsWindow struct {
	src   Stats
	start time.Time
}

type key struct{ model, version string }

// window holds the series of one time window. Observe holds mu for reading
// while it counts; rotation takes it for writing to seal the window, so
// that once sealed no count can change and none is lost.
type window struct {
	start  time.Time
	mu     sync.RWMutex
	sealed bool
	series sync.Map // key → *series
}

type series struct {
	n, errors, sumUs, maxUs atomic.Uint64
	hist                    histogram
}

// NewAggregator returns an aggregator whose first window starts now. A nil
// log discards.
func NewAggregator(cfg Config, sink Sink, log *slog.Logger) *Aggregator {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.StatsWindow == 0 {
		cfg.StatsWindow = DefaultStatsWindow
	}
	if cfg.StatsWindow > 0 && cfg.StatsWindow < cfg.Window {
		cfg.StatsWindow = cfg.Window
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Aggregator{cfg: cfg, sink: sink, log: log, stats: map[key]*statsWindow{}, pending: map[key]*pendingData{}, statsLogs: lograte.New(time.Minute, 1, nil)}
	a.cur.Store(&window{start: cfg.Now()})
	return a
}

// Observe counts one prediction of model version: its latency, and whether
// it failed. Failed predictions count in predictions, errors and latency.
func (a *Aggregator) Observe(model, version string, latency time.Duration, failed bool) {
	us := uint64(0)
	if latency > 0 {
		us = uint64(latency / time.Microsecond)
	}
	k := key{model, version}
	for {
		w := a.cur.Load()
		w.mu.RLock()
		if w.sealed {
			// Rotated between the load and the lock; the next window is
			// already current.
			w.mu.RUnlock()
			continue
		}
		s, ok := w.series.Load(k)
		if !ok {
			s, _ = w.series.LoadOrStore(k, &series{})
		}
		s.(*series).add(us, failed)
		w.mu.RUnlock()
		return
	}
}

func (s *series) add(us uint64, failed bool) {
	s.n.Add(1)
	if failed {
		s.errors.Add(1)
	}
	s.sumUs.Add(us)
	for {
		m := s.maxUs.Load()
		if us <= m || s.maxUs.CompareAndSwap(m, us) {
			break
		}
	}
	s.hist[bucketOf(us)].Add(1)
}

// end returns where the window starting at start ends: the next multiple
// of Window after it.
func (a *Aggregator) end(start time.Time) time.Time {
	return start.Truncate(a.cfg.Window).Add(a.cfg.Window)
}

// Run flushes each window as it ends, until ctx is done; then it returns
// nil. It does not flush the partial window then: call Flush.
func (a *Aggregator) Run(ctx context.Context) error {
	timer := time.NewTimer(a.untilEnd())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			if err := a.tick(a.cfg.Now()); err != nil {
				a.log.Warn("telemetry records kept for the next flush", "err", err)
			}
			timer.Reset(a.untilEnd())
		}
	}
}

// untilEnd is how long until the current window ends by the wall clock,
// capped at one window: if the clock steps back, the next tick comes after
// one window anyway and starts a window at the new time (see tick).
func (a *Aggregator) untilEnd() time.Duration {
	return min(max(a.end(a.cur.Load().start).Sub(a.cfg.Now()), 0), a.cfg.Window)
}

// tick flushes the current window if it has ended by now. A window is
// closed at the last boundary before now, so after a suspend the record
// covers the time the device was away. If the clock stepped back before
// the window's start, the window is closed now and the next one starts at
// the new time, so reporting never stalls for the size of the step.
func (a *Aggregator) tick(now time.Time) error {
	start := a.cur.Load().start
	if now.Before(start) {
		return a.rotateBack(now)
	}
	if now.Before(a.end(start)) {
		return nil
	}
	return a.rotateAt(now.Truncate(a.cfg.Window), now.Truncate(a.cfg.Window), false)
}

// Flush ends the current window now and appends its records, with every
// version's statistics so far, so that no counted prediction is lost on
// shutdown. Records the sink refused before are tried again first.
func (a *Aggregator) Flush() error {
	now := a.cfg.Now()
	return a.rotateAt(now, now, true)
}

// rotateBack handles a clock that stepped back before the current window's
// start: the window is sealed with zero length at its start, and the next
// one starts at now.
func (a *Aggregator) rotateBack(now time.Time) error {
	return a.rotateAt(time.Time{}, now, false)
}

// StatsDropped returns how many versions' windows of data statistics were
// left out of their records for making them too large.
func (a *Aggregator) StatsDropped() uint64 { return a.statsDropped.Load() }

// rotateAt seals the current window at end (at its start when end is
// before it: a clock that stepped back) and starts the next window at next.
// allStats sends every version's statistics, due or not.
func (a *Aggregator) rotateAt(end, next time.Time, allStats bool) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	old := a.cur.Load()
	if end.Before(old.start) {
		end = old.start // a clock stepped back: an empty-length window
	}
	a.cur.Store(&window{start: next})
	old.mu.Lock()
	old.sealed = true
	old.mu.Unlock()

	recs := old.records(end)
	if a.cfg.StatsWindow > 0 {
		recs = a.addStats(recs, old.start, end, allStats)
	}
	recs = a.addCaptures(recs, old.start, end)
	recs = append(a.unsent, recs...)
	a.unsent = nil
	appended := 0
	var err error
	for i, r := range recs {
		if _, err = a.sink.Append(r); err != nil {
			a.unsent = recs[i:]
			break
		}
		appended++
		failpoint.Hit(failpoint.TelemetryAfterAppend)
	}
	if n := len(a.unsent) - maxUnsent; n > 0 {
		a.log.Error("telemetry records lost: the sink kept refusing them", "records", n)
		a.unsent = append([]*shoalv1.TelemetryRecord(nil), a.unsent[n:]...)
	}
	if appended > 0 && a.cfg.Appended != nil {
		a.cfg.Appended()
	}
	if err != nil {
		return fmt.Errorf("telemetry: append %d records: %w", len(a.unsent), err)
	}
	return nil
}

// records returns one record per series of a sealed window, sorted by
// model and version.
func (w *window) records(end time.Time) []*shoalv1.TelemetryRecord {
	var recs []*shoalv1.TelemetryRecord
	w.series.Range(func(k, v any) bool {
		key, s := k.(key), v.(*series)
		n, maxUs := s.n.Load(), s.maxUs.Load()
		p := s.hist.percentiles(n, maxUs, 0.50, 0.95, 0.99)
		recs = append(recs, &shoalv1.TelemetryRecord{
			ModelName:         key.model,
			ModelVersion:      key.version,
			WindowStartUnixMs: w.start.UnixMilli(),
			WindowEndUnixMs:   end.UnixMilli(),
			Predictions:       n,
			Errors:            s.errors.Load(),
			LatencySumUs:      s.sumUs.Load(),
			LatencyMaxUs:      maxUs,
			LatencyP50Us:      p[0],
			LatencyP95Us:      p[1],
			LatencyP99Us:      p[2],
		})
		return true
	})
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].ModelName != recs[j].ModelName {
			return recs[i].ModelName < recs[j].ModelName
		}
		return recs[i].ModelVersion < recs[j].ModelVersion
	})
	return recs
}

// statsEnd returns where the statistics window starting at start ends:
// the next multiple of StatsWindow after it.
func (a *Aggregator) statsEnd(start time.Time) time.Time {
	return start.Truncate(a.cfg.StatsWindow).Add(a.cfg.StatsWindow)
}

// addStats puts the statistics that are due on the records of the window
// [start, end), sorted as records returns them, and returns the records. A
// version's statistics are due when its statistics window has ended by end,
// when it no longer serves (swapped out or removed: its last statistics),
// or with all. The caller holds flushMu.
func (a *Aggregator) addStats(recs []*shoalv1.TelemetryRecord, start, end time.Time, all bool) []*shoalv1.TelemetryRecord {
	var serving []VersionStats
	if a.cfg.Stats != nil {
		serving = a.cfg.Stats()
	}
	type due struct {
		k     key
		src   Stats
		start time.Time
	}
	var dues []due
	now := make(map[key]Stats, len(serving))
	for _, v := range serving {
		now[key{v.Model, v.Version}] = v.Stats
	}
	retired := map[key]bool{}
	for k, w := range a.stats {
		if src, ok := now[k]; !ok || src != w.src {
			dues = append(dues, due{k, w.src, w.start})
			retired[k] = true
			delete(a.stats, k)
		}
	}
	for k, src := range now {
		w := a.stats[k]
		if w == nil {
			// New since the last window: its predictions are in this one.
			w = &statsWindow{src: src, start: start}
			a.stats[k] = w
		}
		if end.Before(w.start) {
			w.start = start // the clock stepped back
		}
		if retired[k] {
			// The same version loaded anew: the old load's statistics go
			// out now, the new one's with its next window.
			continue
		}
		if all || !end.Before(a.statsEnd(w.start)) {
			dues = append(dues, due{k, src, w.start})
			w.start = end
		}
	}
	sort.Slice(dues, func(i, j int) bool { return dues[i].k.less(dues[j].k) })
	for _, d := range dues {
		in, out := d.src.SnapshotAndReset()
		if empty(in) && empty(out) {
			continue
		}
		j := sort.Search(len(recs), func(j int) bool { return !keyOf(recs[j]).less(d.k) })
		made := j == len(recs) || keyOf(recs[j]) != d.k
		if made {
			r := &shoalv1.TelemetryRecord{ModelName: d.k.model, ModelVersion: d.k.version, WindowStartUnixMs: start.UnixMilli(), WindowEndUnixMs: end.UnixMilli()}
			recs = slices.Insert(recs, j, r)
		}
		r := recs[j]
		r.InputStats, r.OutputStats, r.StatsWindowStartUnixMs = in, out, d.start.UnixMilli()
		if size := encodedSize(r); size > a.cfg.MaxRecordBytes {
			r.InputStats, r.OutputStats, r.StatsWindowStartUnixMs = nil, nil, 0
			if made {
				recs = slices.Delete(recs, j, j+1)
			}
			a.statsDropped.Add(1)
			a.statsLogs.Log(a.log, slog.LevelWarn, "", "data statistics left out: the telemetry record would be too large; profile fewer features or bins",
				"model", d.k.model, "version", d.k.version, "bytes", size, "limit", a.cfg.MaxRecordBytes)
		}
	}
	return recs
}

func (k key) less(o key) bool {
	if k.model != o.model {
		return k.model < o.model
	}
	return k.version < o.version
}

func keyOf(r *shoalv1.TelemetryRecord) key { return key{r.GetModelName(), r.GetModelVersion()} }

// empty reports whether stats saw no value at all.
func empty(stats []*shoalv1.FeatureStats) bool {
	for _, s := range stats {
		if s.GetCount()+s.GetMissing()+s.GetNan() > 0 {
			return false
		}
	}
	return true
}

// encodedSize is r's size as the outbox stores it, with the largest
// sequence number it could get.
func encodedSize(r *shoalv1.TelemetryRecord) int {
	seq := r.Seq
	r.Seq = math.MaxUint64
	n := proto.Size(r)
	r.Seq = seq
	return n
}

// Capture queues a sampled prediction of model version for its next
// record. Over MaxCapturesPerRecord in a window it is dropped and counted
// in CapturesDropped. It is called only for sampled predictions, so a
// mutex is cheap enough.
func (a *Aggregator) Capture(model, version string, row *shoalv1.CapturedRow) {
	a.queue(key{model, version}, row, nil)
}

// Feedback queues a ground-truth label for the next record of model
// version, bounded as Capture.
func (a *Aggregator) Feedback(model, version string, fb *shoalv1.Feedback) {
	a.queue(key{model, version}, nil, fb)
}

func (a *Aggregator) queue(k key, row *shoalv1.CapturedRow, fb *shoalv1.Feedback) {
	a.capMu.Lock()
	defer a.capMu.Unlock()
	p := a.pending[k]
	if p == nil {
		p = &pendingData{}
		a.pending[k] = p
	}
	switch {
	case row != nil && len(p.captures) < MaxCapturesPerRecord:
		p.captures = append(p.captures, row)
	case fb != nil && len(p.feedback) < MaxCapturesPerRecord:
		p.feedback = append(p.feedback, fb)
	default:
		a.capDrops.Add(1)
	}
}

// CapturesDropped returns how many captured rows and feedback labels were
// dropped: over MaxCapturesPerRecord in a window, or over the record's
// size bound.
func (a *Aggregator) CapturesDropped() uint64 { return a.capDrops.Load() }

// addCaptures puts the pending captures and feedback on the records of the
// window [start, end) (making a record for a version that has none),
// within MaxRecordBytes: what does not fit is dropped and counted. The
// caller holds flushMu.
func (a *Aggregator) addCaptures(recs []*shoalv1.TelemetryRecord, start, end time.Time) []*shoalv1.TelemetryRecord {
	a.capMu.Lock()
	pending := a.pending
	a.pending = map[key]*pendingData{}
	a.capMu.Unlock()
	keys := make([]key, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	for _, k := range keys {
		p := pending[k]
		j := sort.Search(len(recs), func(j int) bool { return !keyOf(recs[j]).less(k) })
		if j == len(recs) || keyOf(recs[j]) != k {
			recs = slices.Insert(recs, j, &shoalv1.TelemetryRecord{ModelName: k.model, ModelVersion: k.version, WindowStartUnixMs: start.UnixMilli(), WindowEndUnixMs: end.UnixMilli()})
		}
		r := recs[j]
		size := encodedSize(r)
		// Feedback first: a label is small and worth more than a row.
		for _, fb := range p.feedback {
			n := protowireSize(proto.Size(fb))
			if size+n > a.cfg.MaxRecordBytes {
				a.capDrops.Add(1)
				continue
			}
			r.Feedback = append(r.Feedback, fb)
			size += n
		}
		for _, row := range p.captures {
			n := protowireSize(proto.Size(row))
			if size+n > a.cfg.MaxRecordBytes {
				a.capDrops.Add(1)
				continue
			}
			r.Captures = append(r.Captures, row)
			size += n
		}
		if len(r.Captures)+len(r.Feedback) == 0 && r.Predictions == 0 && len(r.InputStats)+len(r.OutputStats) == 0 {
			recs = slices.Delete(recs, j, j+1) // made for captures that all were dropped
		}
	}
	return recs
}

// protowireSize is the encoded size of an embedded message of n bytes: its
// tag (one byte for fields up to 15, two up to 2047), its length and n.
func protowireSize(n int) int {
	return 2 + protowire.SizeVarint(uint64(n)) + n
}
