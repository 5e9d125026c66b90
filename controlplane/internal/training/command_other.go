//go:build !unix

package training

import "os/exec"

// killGroup leaves cmd to exec's default: its context kills the process.
func killGroup(*exec.Cmd) {}
