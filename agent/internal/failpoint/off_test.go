//go:build !failpoints

package failpoint

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOffIsNoOp: without the tag, an armed spec does nothing (the process
// is still here) and Hit costs no allocation.
func TestOffIsNoOp(t *testing.T) {
	if Enabled {
		t.Fatal("Enabled without the failpoints tag")
	}
	t.Setenv(Env, DownloadPartial+"=kill")
	for range 3 {
		Hit(DownloadPartial)
	}
	if n := testing.AllocsPerRun(100, func() { Hit(UploadAfterAck) }); n != 0 {
		t.Errorf("Hit allocates %v times per call", n)
	}
}

// TestOffInlines checks that the compiler inlines the no-op Hit, so the
// points cost nothing in the agent that ships.
func TestOffInlines(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the compiler")
	}
	out, err := exec.Command("go", "build", "-gcflags=-m", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "can inline Hit") {
		t.Errorf("the compiler does not inline Hit:\n%s", out)
	}
}
