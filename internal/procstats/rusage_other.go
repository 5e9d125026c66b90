//go:build !unix

package procstats

func rusage() (cpuSeconds float64, maxFDs int64) { return -1, -1 }
