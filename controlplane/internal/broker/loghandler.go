package broker

import (
	"context"
	"log/slog"

	"github.com/shoalfleet/shoal/internal/lograte"
)

// limitedHandler is a slog.Handler that rate-limits records by message and
// error text. mochi logs one line per refused connection (and per dropped
// packet); behind this handler a flood of refusals costs a line per interval.
type limitedHandler struct {
	next    slog.Handler
	limiter *lograte.Limiter
}

func newLimitedHandler(next slog.Handler, l *lograte.Limiter) *limitedHandler {
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
	ok, suppressed := h.limiter.Allow(key)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int(lograte.SuppressedKey, suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitedHandler{next: h.next.WithAttrs(attrs), limiter: h.limiter}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{next: h.next.WithGroup(name), limiter: h.limiter}
}
