package broker

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLogLimiter(time.Minute, 2, func() time.Time { return now })
	step := func(key string, wantOK bool, wantSuppressed int) {
		t.Helper()
		ok, n := l.allow(key)
		if ok != wantOK || n != wantSuppressed {
			t.Fatalf("allow(%q) at %v = %v, %d; want %v, %d", key, now, ok, n, wantOK, wantSuppressed)
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
