// Package shoaltest is test support shared by Shoal's packages: waiting
// for a condition with a bound that only a hang exceeds, a fake clock, and
// a small tmpfs for full-disk tests. Only tests import it; the binaries
// never link it.
package shoaltest

import (
	"errors"
	"os"
	"time"
)

// Patience bounds every wait for a condition. It is long on purpose: a
// test's verdict must come from the state the system reaches, never from
// how fast a busy 2-core machine gets there, so only a real hang outlasts
// it. $SHOAL_TEST_PATIENCE (a Go duration) overrides it, say to find a
// hang faster.
var Patience = patience()

func patience() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SHOAL_TEST_PATIENCE")); err == nil && d > 0 {
		return d
	}
	return 5 * time.Minute
}

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// interval is how often conditions are checked: polling is for state with
// no event to wait on (another process, an HTTP API), not a delay.
const interval = 10 * time.Millisecond

// Eventually checks cond until it returns nil, and fails the test with
// cond's last error if Patience passes first.
func Eventually(t TB, what string, cond func() error) {
	t.Helper()
	if err := Poll(interval, cond); err != nil {
		t.Fatalf("%s: not within %s: %v", what, Patience, err)
	}
}

// Poll checks cond every every until it returns nil, and returns cond's
// last error if Patience passes first.
func Poll(every time.Duration, cond func() error) error {
	deadline := time.Now().Add(Patience)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

// Holds adapts a yes-or-no condition for Eventually: while cond is false
// it reports state().
func Holds(cond func() bool, state func() string) func() error {
	return func() error {
		if cond() {
			return nil
		}
		if state == nil {
			return errors.New("still false")
		}
		return errors.New(state())
	}
}
