//go:build !linux

package outbox

import "testing"

func mountTmpfs(t *testing.T, size int) string {
	t.Skip("a full disk is tested on a Linux tmpfs")
	return ""
}
