package shoaltest

import (
	"strconv"
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory and
// returns its path, for tests that fill a disk for real; it is unmounted
// when the test ends. Mounting needs root: without it the test is skipped,
// saying so.
func Tmpfs(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Skipf("needs root, to mount a tmpfs and fill it (mount: %v); run the tests as root to test a really full disk", err)
	}
	t.Cleanup(func() {
		// Detached: a test may leave files open on the full disk on
		// purpose (the outbox leaves its database open when it cannot
		// flush it: see outbox.Close).
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
