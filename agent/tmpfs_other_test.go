//go:build !linux

package agent

import "testing"

func mountTmpfs(t *testing.T, size int) string {
	t.Skip("a full disk is tested on a Linux tmpfs")
	return ""
}
