package fuzzcorpus

import "runtime/metrics"

// Allocated returns how many heap bytes the process allocated while fn
// ran. Other goroutines count too, so it is an upper bound on fn's own:
// fuzz targets use it to check that a small input cannot make a decoder
// allocate out of proportion to it.
func Allocated(fn func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	fn()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// AllocBudget is what a decoder may allocate for an n-byte input: a fixed
// allowance for set-up, plus a constant factor of the input.
func AllocBudget(n int) uint64 { return 1<<20 + 128*uint64(n) }
