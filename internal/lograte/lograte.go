// Package lograte rate-limits repeated log lines: at most one line per key
// gets through per interval, and the next one that does says how many were
// held back. The control plane keys lines by client or device, so that one
// misbehaving peer (or a flood of them) cannot flood its log; the agent keys
// them by message, or uses one key, so that a device offline for a day
// writes a line a minute, not one per retry.
//
// It is linked into the agent binary: keep it small and standard-library
// only.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// SuppressedKey is the log attribute that says how many lines for the same
// key were held back since the last one let through.
const SuppressedKey = "suppressed"

// overflowKey is shared by the keys that come once the limiter is full.
const overflowKey = "\x00overflow"

// Limiter lets at most one line per key through per interval and counts the
// lines it held back. The number of keys it tracks is bounded; past the
// bound, new keys share one overflow key. Its methods are safe for
// concurrent use. Make one with New.
type Limiter struct {
	interval time.Duration
	maxKeys  int
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// New returns a Limiter that lets one line per key through per interval and
// tracks at most maxKeys keys (at least 1). now is its clock; nil means
// time.Now. A limiter for a single kind of line can use the key "".
func New(interval time.Duration, maxKeys int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{interval: interval, maxKeys: max(maxKeys, 1), now: now, keys: make(map[string]*entry)}
}

// Allow reports whether a line for key may be logged now and, if so, how
// many lines for key were held back since the last one let through.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
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
			l.keys[key] = &entry{last: now}
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
func (l *Limiter) prune(now time.Time) {
	for k, e := range l.keys {
		if now.Sub(e.last) >= l.interval && e.suppressed == 0 {
			delete(l.keys, k)
		}
	}
}

// Log logs msg with args at level through log if Allow(key) lets it,
// adding SuppressedKey when lines were held back.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, key, msg string, args ...any) {
	ok, n := l.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, SuppressedKey, n)
	}
	log.Log(context.Background(), level, msg, args...)
}
