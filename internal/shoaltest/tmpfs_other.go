//go:build !linux

package shoaltest

import "testing"

// Tmpfs skips the test: a full disk is tested on a Linux tmpfs.
func Tmpfs(t testing.TB, size int) string {
	t.Helper()
	t.Skip("needs Linux, to fill a tmpfs")
	return ""
}
