// Package jsonfloat writes floats the way the agent's local API carries
// them in JSON: shortest decimals, as encoding/json writes numbers, and
// NaN and the infinities — which JSON has no numbers for — as strings.
// The agent's handler and its Go client (agent/localclient) both write
// with it, so the two cannot drift apart. Standard library only: it is
// linked into the agent binary.
package jsonfloat

import (
	"math"
	"strconv"
)

// The strings for the floats JSON has no numbers for.
const (
	NaN    = "NaN"
	Inf    = "Infinity"
	NegInf = "-Infinity"
)

// Append writes v (a float of bits 32 or 64) to b: the shortest decimal
// that reads back as v — plain from 1e-6 up to 1e21, an exponent outside
// that, as encoding/json does — or a quoted NaN, Inf or NegInf.
func Append(b []byte, v float64, bits int) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, `"`+NaN+`"`...)
	case math.IsInf(v, 1):
		return append(b, `"`+Inf+`"`...)
	case math.IsInf(v, -1):
		return append(b, `"`+NegInf+`"`...)
	}
	format := byte('f')
	if abs := math.Abs(v); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, v, format, -1, bits)
	if format == 'e' {
		// 1e-07 → 1e-7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
