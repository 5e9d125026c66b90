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
// allowance, plus a constant factor of the input. The allowance is large
// because the runtime counts small allocations a span at a time, when a
// span is refilled or at a GC, so one call may be charged a few MiB of
// earlier calls' allocations; what the check is for, a length field that
// makes a decoder allocate hundreds of MiB, is far above it.
func AllocBudget(n int) uint64 { return 16<<20 + 128*uint64(n) }
