package link

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logLimiter lets one log line through per interval and counts the ones it
// held back, so that a device whose broker is down for a day writes a line
// a minute, not one per reconnect attempt.
type logLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether a line may be logged now, and how many were
// suppressed since the last one that was.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

// log writes msg at level if the limiter allows it.
func (l *logLimiter) log(log *slog.Logger, now time.Time, level slog.Level, msg string, args ...any) {
	ok, n := l.allow(now)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
}
