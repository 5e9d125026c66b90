//go:build failpoints

package failpoint

import (
	"os"
	"strings"
	"sync"
	"time"
)

// ClockFileEnv names the environment variable that points the fault
// injection clock at a file holding an offset (a Go duration such as
// "-1h" or "72h"); the agent's wall clock is time.Now plus that offset.
// Tests rewrite the file to make the clock jump forward and back while the
// agent runs. Go's monotonic readings are untouched, as they would be by a
// real wall-clock step.
const ClockFileEnv = "SHOAL_CLOCK_OFFSET_FILE"

var clock struct {
	mu      sync.Mutex
	offset  time.Duration
	path    string
	pathSet bool
}

// Now is time.Now shifted by the offset in $SHOAL_CLOCK_OFFSET_FILE, read
// on every call: a test that rewrites the file and then acts must find the
// agent on the new clock at once (a cache of even 20 ms let an update
// deployed right after a jump be checked against the old clock). This is
// the failpoints build only; a read costs microseconds.
func Now() time.Time {
	real := time.Now()
	clock.mu.Lock()
	defer clock.mu.Unlock()
	if !clock.pathSet {
		clock.path, clock.pathSet = os.Getenv(ClockFileEnv), true
	}
	if clock.path != "" {
		if b, err := os.ReadFile(clock.path); err == nil {
			if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
				clock.offset = d
			}
		}
	}
	return real.Add(clock.offset)
}
