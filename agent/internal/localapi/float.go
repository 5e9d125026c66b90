package localapi

import (
	"math"
	"strconv"
)

// Fast, exact decimal-to-float conversion for the common case, falling back
// to strconv for the rest. strconv.ParseFloat is exact but spends most of
// its time re-reading a token the scanner has already checked; FP32 data
// is the hot path of an inference request.

// pow10 holds the powers of ten that float64 represents exactly; negPow10
// their inverses (rounded: each within half a unit in the last place).
var (
	pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
		1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}
	negPow10 = [...]float64{1e-0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10,
		1e-11, 1e-12, 1e-13, 1e-14, 1e-15, 1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22}
)

// parseFloat32 converts a JSON number to the nearest float32, as
// strconv.ParseFloat(tok, 32) does; ok is false when it is out of range.
func parseFloat32(n *number) (float32, bool) {
	if f, ok := fastFloat32(n); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(unsafeString(n.tok), 32)
	return float32(f), err == nil
}

// fastFloat32 handles numbers of up to 19 significant digits with a
// decimal exponent within ±22 whose value is a normal float32. It computes
// m·10^e in float64 with three roundings (m, the power of ten, the
// product), so within 3 units in the last place of the exact value, and
// rounds that to float32. The result is the correctly rounded float32
// unless the exact value and the approximation straddle a point halfway
// between two float32s, which needs the approximation within those 3 units
// of one: then it gives up and strconv decides.
func fastFloat32(n *number) (float32, bool) {
	if !n.fits || n.e < -22 || n.e > 22 {
		return 0, false
	}
	if n.m == 0 {
		if n.neg {
			return float32(math.Copysign(0, -1)), true
		}
		return 0, true
	}
	f := float64(n.m)
	if n.e < 0 {
		f *= negPow10[-n.e]
	} else {
		f *= pow10[n.e]
	}
	bits := math.Float64bits(f)
	// Only normal float32 results below the largest: subnormals round at
	// other bits, and overflow is for strconv to report.
	if exp := int(bits>>52) - 1023; exp < -126 || exp > 126 {
		return 0, false
	}
	// The 29 bits float32 drops; a halfway point has exactly the top one.
	const half = 1 << 28
	if low := bits & (1<<29 - 1); low > half-8 && low < half+8 {
		return 0, false
	}
	r := float32(f)
	if n.neg {
		r = -r
	}
	return r, true
}

// parseFloat64 converts a JSON number to the nearest float64; ok is false
// when it is out of range.
func parseFloat64(n *number) (float64, bool) {
	// Clinger's fast path: m and 10^|e| are exact in float64, so one
	// rounding gives the correctly rounded result.
	if n.fits && n.m <= 1<<53 && n.e >= -22 && n.e <= 22 {
		f := float64(n.m)
		if n.e < 0 {
			f /= pow10[-n.e]
		} else {
			f *= pow10[n.e]
		}
		if n.neg {
			f = -f
		}
		return f, true
	}
	f, err := strconv.ParseFloat(unsafeString(n.tok), 64)
	return f, err == nil
}
