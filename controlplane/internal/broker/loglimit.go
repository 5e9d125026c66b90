package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logLimiter lets at most one log line per key through per interval and
// counts the lines it held back, so that one misbehaving client (or a
// flood of them) cannot flood the log. The number of keys it tracks is
// bounded; past the bound, new keys share one overflow key.
type logLimiter struct {
	interval time.Duration
	maxKeys  int
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*limitEntry
}

type limitEntry struct {
	last       time.Time
	suppressed int
}

const overflowKey = "\x00overflow"

func newLogLimiter(interval time.Duration, maxKeys int, now func() time.Time) *logLimiter {
	if now == nil {
		now = time.Now
	}
	return &logLimiter{interval: interval, maxKeys: maxKeys, now: now, keys: make(map[string]*limitEntry)}
}

// allow reports whether a line for key may be logged now and, if so, how
// many lines for key were held back since the last one let through.
func (l *logLimiter) allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= l.maxKeys {
			l.prune(now)
		}
		if len(l.keys) >= l.maxKeys {
			key = overflowKey
			e = l.keys[key]
		}
		if e == nil {
			e = &limitEntry{}
			l.keys[key] = e
			e.last = now
			return true, 0
		}
	}
	if now.Sub(e.last) < l.interval {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// prune forgets keys whose interval has passed with nothing held back.
func (l *logLimiter) prune(now time.Time) {
	for k, e := range l.keys {
		if now.Sub(e.last) >= l.interval && e.suppressed == 0 {
			delete(l.keys, k)
		}
	}
}

// limitedHandler is a slog.Handler that rate-limits records by message and
// error text. mochi logs one line per refused connection (and per dropped
// packet); behind this handler a flood of refusals costs a line per interval.
type limitedHandler struct {
	next    slog.Handler
	limiter *logLimiter
}

func newLimitedHandler(next slog.Handler, l *logLimiter) *limitedHandler {
	return &limitedHandler{next: next, limiter: l}
}

func (h *limitedHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return h.next.Enabled(ctx, lv)
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			key += "\x00" + a.Value.String()
			return false
		}
		return true
	})
	ok, suppressed := h.limiter.allow(key)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitedHandler{next: h.next.WithAttrs(attrs), limiter: h.limiter}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{next: h.next.WithGroup(name), limiter: h.limiter}
}
