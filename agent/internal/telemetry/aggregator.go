// Package telemetry aggregates the agent's predictions into one
// TelemetryRecord per model version and time window (counts, errors,
// latency sum, max and percentiles) and appends the records to a Sink (the
// outbox). Observe is on the inference hot path: it takes no lock that
// another Observe holds and does a few atomic adds.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/failpoint"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const (
	// DefaultWindow is Config.Window when 0.
	DefaultWindow = 10 * time.Second
	// maxUnsent bounds the records kept for another try when the sink
	// refuses them.
	maxUnsent = 1000
)

// Sink stores finished records; *outbox.Outbox satisfies it.
type Sink interface {
	Append(rec *shoalv1.TelemetryRecord) (seq uint64, err error)
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
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Aggregator{cfg: cfg, sink: sink, log: log}
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
	return a.rotate(now.Truncate(a.cfg.Window))
}

// Flush ends the current window now and appends its records, so that no
// counted prediction is lost on shutdown. Records the sink refused before
// are tried again first.
func (a *Aggregator) Flush() error {
	return a.rotate(a.cfg.Now())
}

// rotate seals the current window at end, starts the next one there, and
// appends the sealed window's records.
func (a *Aggregator) rotate(end time.Time) error {
	return a.rotateAt(end, end)
}

// rotateBack handles a clock that stepped back before the current window's
// start: the window is sealed with zero length at its start, and the next
// one starts at now.
func (a *Aggregator) rotateBack(now time.Time) error {
	return a.rotateAt(time.Time{}, now)
}

// rotateAt seals the current window at end (at its start when end is
// before it: a clock that stepped back) and starts the next window at next.
func (a *Aggregator) rotateAt(end, next time.Time) error {
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

	recs := append(a.unsent, old.records(end)...)
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
