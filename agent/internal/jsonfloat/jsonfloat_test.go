package jsonfloat

import (
	"encoding/json"
	"math"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		bits int
		want string
	}{
		{0, 64, "0"},
		{1.5, 64, "1.5"},
		{-2, 32, "-2"},
		{0.1, 32, "0.1"},
		{1e-7, 64, "1e-7"},
		{1e21, 64, "1e+21"},
		{123456789, 64, "123456789"},
		{math.NaN(), 64, `"NaN"`},
		{math.Inf(1), 32, `"Infinity"`},
		{math.Inf(-1), 64, `"-Infinity"`},
	} {
		if got := string(Append(nil, tc.v, tc.bits)); got != tc.want {
			t.Errorf("Append(%v, %d) = %s; want %s", tc.v, tc.bits, got, tc.want)
		}
	}
	// Finite values read as encoding/json writes them.
	for _, v := range []float64{3.14159, 2.5e-9, 6.02e23, -0.000001} {
		want, _ := json.Marshal(v)
		if got := string(Append(nil, v, 64)); got != string(want) {
			t.Errorf("Append(%v) = %s; encoding/json writes %s", v, got, want)
		}
	}
}
