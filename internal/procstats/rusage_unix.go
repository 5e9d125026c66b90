//go:build unix

package procstats

import "syscall"

// rusage returns the CPU time used (user + system) and the soft limit on
// open files; -1 for what cannot be read.
func rusage() (cpuSeconds float64, maxFDs int64) {
	cpuSeconds, maxFDs = -1, -1
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpuSeconds = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur <= 1<<62 {
		maxFDs = int64(lim.Cur)
	}
	return cpuSeconds, maxFDs
}
