//go:build failpoints

package failpoint

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestClockOffsetFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	os.WriteFile(path, []byte("-1h\n"), 0o644)
	clock.mu.Lock()
	clock.path, clock.pathSet = path, true
	clock.mu.Unlock()
	if d := time.Until(Now()); d > -59*time.Minute || d < -61*time.Minute {
		t.Fatalf("clock is %v from real time; want about -1h", d)
	}
	// A rewrite is seen by the very next call.
	os.WriteFile(path, []byte("48h"), 0o644)
	if d := time.Until(Now()); d < 47*time.Hour {
		t.Fatalf("clock is %v from real time after a jump forward; want about 48h", d)
	}
}
