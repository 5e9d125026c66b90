package localapi

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logEvery is how often a repeated warning (a model failing on every
// request) is logged at most.
const logEvery = time.Minute

// logLimiter logs each message at most once per logEvery and says how many
// were held back since.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func (l *logLimiter) log(log *slog.Logger, now time.Time, level slog.Level, msg string, args ...any) {
	l.mu.Lock()
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := l.last[msg]; ok && now.Sub(t) < logEvery {
		l.held[msg]++
		l.mu.Unlock()
		return
	}
	held := l.held[msg]
	l.last[msg], l.held[msg] = now, 0
	l.mu.Unlock()
	if held > 0 {
		args = append(args, "repeats_not_logged", held)
	}
	log.Log(context.Background(), level, msg, args...)
}
