package broker

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/lograte"
)

func TestLimitedHandlerKeysByMessageAndError(t *testing.T) {
	now := time.Unix(0, 0)
	logs := &capture{}
	log := slog.New(newLimitedHandler(logs, lograte.New(time.Minute, 16, func() time.Time { return now })))
	for range 3 {
		log.Warn("refused", "error", errors.New("bad password"))
	}
	log.Warn("refused", "error", errors.New("bad client id"))
	if n := logs.count("refused", ""); n != 2 {
		t.Fatalf("logged %d lines; want 2 (one per message and error)", n)
	}
	now = now.Add(time.Minute)
	log.Warn("refused", "error", errors.New("bad password"))
	if n := logs.count("refused", "suppressed=2"); n != 1 {
		t.Fatalf("logged %d lines with suppressed=2 after the interval; want 1", n)
	}
}
