package localapi

import (
	"math"
	"strconv"
)

// Fast, exact decimal-to-float conversion for the common case, falling back
// to strconv for the rest. strconv.ParseFloat is exact but spends most of
// its time re-reading a token the scanner has already checked; FP32 data
// is the hot path of an inference request.

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// decimal splits a JSON number token (already checked by scanner.number)
// into ±m·10^e. ok is false when m needs more than 19 digits.
func decimal(tok []byte) (neg bool, m uint64, e int, ok bool) {
	i := 0
	if tok[0] == '-' {
		neg, i = true, 1
	}
	nd := 0
	for ; i < len(tok) && isDigit(tok[i]); i++ {
		if m == 0 && tok[i] == '0' {
			continue
		}
		if nd == 19 {
			return false, 0, 0, false
		}
		m = m*10 + uint64(tok[i]-'0')
		nd++
	}
	if i < len(tok) && tok[i] == '.' {
		for i++; i < len(tok) && isDigit(tok[i]); i++ {
			if m == 0 && tok[i] == '0' {
				e--
				continue
			}
			if nd == 19 {
				return false, 0, 0, false
			}
			m = m*10 + uint64(tok[i]-'0')
			nd++
			e--
		}
	}
	if i < len(tok) { // 'e' or 'E'
		i++
		eneg := false
		if tok[i] == '+' || tok[i] == '-' {
			eneg = tok[i] == '-'
			i++
		}
		x := 0
		for ; i < len(tok); i++ {
			if x < 100000 {
				x = x*10 + int(tok[i]-'0')
			}
		}
		if eneg {
			x = -x
		}
		e += x
	}
	return neg, m, e, true
}

// parseFloat32 converts a JSON number token to the nearest float32, as
// strconv.ParseFloat(tok, 32) does; ok is false when it is out of range.
func parseFloat32(tok []byte) (float32, bool) {
	if f, ok := fastFloat32(tok); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(unsafeString(tok), 32)
	return float32(f), err == nil
}

// fastFloat32 handles tokens of up to 19 significant digits with a decimal
// exponent within ±22 whose value is a normal float32. It computes x·10^e
// in float64 (two roundings: within 2 units in the last place of the exact
// value) and rounds that to float32. The result is the correctly rounded
// float32 unless the exact value and the approximation straddle a point
// halfway between two float32s, which can only happen when the
// approximation is within those 2 units of one; then it gives up.
func fastFloat32(tok []byte) (float32, bool) {
	neg, m, e, ok := decimal(tok)
	if !ok || e < -22 || e > 22 {
		return 0, false
	}
	if m == 0 {
		if neg {
			return float32(math.Copysign(0, -1)), true
		}
		return 0, true
	}
	f := float64(m)
	if e < 0 {
		f /= pow10[-e]
	} else {
		f *= pow10[e]
	}
	bits := math.Float64bits(f)
	// Only normal float32 results: subnormals round at other bits.
	if exp := int(bits>>52) - 1023; exp < -126 || exp > 127 {
		return 0, false
	}
	// The 29 bits float32 drops; a halfway point has exactly the top one.
	const half = 1 << 28
	if low := bits & (1<<29 - 1); low > half-8 && low < half+8 {
		return 0, false
	}
	r := float32(f)
	if math.IsInf(float64(r), 0) {
		return 0, false
	}
	if neg {
		r = -r
	}
	return r, true
}

// parseFloat64 converts a JSON number token to the nearest float64; ok is
// false when it is out of range.
func parseFloat64(tok []byte) (float64, bool) {
	// Clinger's fast path: m and 10^|e| are exact in float64, so one
	// rounding gives the correctly rounded result.
	if neg, m, e, ok := decimal(tok); ok && m <= 1<<53 && e >= -22 && e <= 22 {
		f := float64(m)
		if e < 0 {
			f /= pow10[-e]
		} else {
			f *= pow10[e]
		}
		if neg {
			f = -f
		}
		return f, true
	}
	f, err := strconv.ParseFloat(unsafeString(tok), 64)
	return f, err == nil
}
