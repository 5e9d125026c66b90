//go:build unix

package training

import (
	"os/exec"
	"syscall"
	"time"
)

// killGroup runs cmd in a process group of its own and has its context
// end the whole group: SIGTERM, then SIGKILL after killGrace, so that
// what a script started (a Python process, a container client) stops too.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		pgid := cmd.Process.Pid
		time.AfterFunc(killGrace, func() { syscall.Kill(-pgid, syscall.SIGKILL) })
		return syscall.Kill(-pgid, syscall.SIGTERM)
	}
}
