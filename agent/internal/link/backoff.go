package link

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with "equal jitter": attempt n ≥ 1 waits a
// random time in [d/2, d] where d = min(max, min·2^(n-1)). Attempt 0 (the
// very first connection) does not wait. The jitter matters for a fleet:
// when a broker restarts, thousands of agents lose their connection in the
// same instant, and without jitter they would all come back in lock-step.
type backoff struct {
	min, max time.Duration
	rand     func() float64 // in [0,1); rand.Float64 unless a test sets it
}

func (b backoff) delay(attempt int) time.Duration {
	if attempt <= 0 {
		return 0
	}
	d := b.min
	for i := 1; i < attempt && d < b.max; i++ {
		d *= 2
	}
	if d > b.max {
		d = b.max
	}
	r := b.rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}
