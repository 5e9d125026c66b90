package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(time.Minute, 2, func() time.Time { return now })
	step := func(key string, wantOK bool, wantSuppressed int) {
		t.Helper()
		ok, n := l.Allow(key)
		if ok != wantOK || n != wantSuppressed {
			t.Fatalf("Allow(%q) at %v = %v, %d; want %v, %d", key, now, ok, n, wantOK, wantSuppressed)
		}
	}
	step("a", true, 0)
	step("a", false, 0)
	step("a", false, 0)
	step("b", true, 0)
	// Full: new keys share the overflow key.
	step("c", true, 0)
	step("d", false, 0)
	now = now.Add(time.Minute)
	step("a", true, 2) // reports what it held back
	step("d", true, 1) // still the overflow key (a and the overflow are in use): reports its held-back line
}

func TestLimiterSingleKey(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(time.Minute, 1, func() time.Time { return now })
	for i, want := range []bool{true, false, false} {
		if ok, _ := l.Allow(""); ok != want {
			t.Fatalf("call %d: Allow = %v; want %v", i, ok, want)
		}
	}
	now = now.Add(59 * time.Second)
	if ok, _ := l.Allow(""); ok {
		t.Fatal("let a line through before the interval passed")
	}
	now = now.Add(time.Second)
	if ok, n := l.Allow(""); !ok || n != 3 {
		t.Fatalf("after the interval: Allow = %v, %d; want true, 3", ok, n)
	}
}

func TestLog(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(time.Minute, 8, func() time.Time { return now })
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	for range 3 {
		l.Log(log, slog.LevelWarn, "k", "broker down", "try", 1)
	}
	l.Log(log, slog.LevelInfo, "other", "other line")
	now = now.Add(time.Minute)
	l.Log(log, slog.LevelWarn, "k", "broker down", "try", 4)
	want := []string{
		`level=WARN msg="broker down" try=1`,
		`level=INFO msg="other line"`,
		`level=WARN msg="broker down" try=4 suppressed=2`,
	}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logged:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
