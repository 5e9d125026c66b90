package localapi

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// checkNumber compares the scanner's reading of tok with strconv's.
func checkNumber(t *testing.T, tok string) (fast32 bool) {
	t.Helper()
	s := &scanner{b: []byte(tok)}
	var n number
	if !s.number(&n) || s.i != len(tok) {
		return false // not a whole JSON number: nothing to compare
	}
	want32, err32 := strconv.ParseFloat(tok, 32)
	got32, ok := parseFloat32(&n)
	if ok != (err32 == nil) || ok && math.Float32bits(got32) != math.Float32bits(float32(want32)) {
		t.Fatalf("FP32 %s: got %v (%v); strconv %v (%v)", tok, got32, ok, float32(want32), err32)
	}
	want64, err64 := strconv.ParseFloat(tok, 64)
	got64, ok := parseFloat64(&n)
	if ok != (err64 == nil) || ok && math.Float64bits(got64) != math.Float64bits(want64) {
		t.Fatalf("FP64 %s: got %v (%v); strconv %v (%v)", tok, got64, ok, want64, err64)
	}
	if n.integer {
		wantI, errI := strconv.ParseInt(tok, 10, 64)
		gotI, why := int64Parser(&scanner{b: []byte(tok)})
		if (why == "") != (errI == nil) || why == "" && gotI != wantI {
			t.Fatalf("INT64 %s: got %d (%q); strconv %d (%v)", tok, gotI, why, wantI, errI)
		}
		wantU, errU := strconv.ParseUint(tok, 10, 64)
		gotU, why := uint64Parser(&scanner{b: []byte(tok)})
		if tok == "-0" {
			wantU, errU = 0, nil
		}
		if (why == "") != (errU == nil) || why == "" && gotU != wantU {
			t.Fatalf("UINT64 %s: got %d (%q); strconv %d (%v)", tok, gotU, why, wantU, errU)
		}
	}
	_, fast := fastFloat32(&n)
	return fast
}

// TestFloatsMatchStrconv checks the fast conversions against strconv on
// many numbers, most of them hard: float32 values written in every way,
// points halfway between two float32s and numbers just beside them.
func TestFloatsMatchStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	tokens := []string{"0", "-0", "0.0", "1", "-1", "0.1", "1e0", "1E+2", "1e-2", "123456789012345678", "1234567890123456789",
		"12345678901234567890", "0.00000000000000000000000000000000000000000000140129846432481707092",
		"3.4028235e38", "3.4028236e38", "3.40282357e38", "1e39", "1e-46", "1.17549435e-38", "1.1754942e-38",
		"9007199254740993", "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
		"0.30000001192092896", "16777217", "1.00000005960464477539062", "1.0000000596046448", "0.5e-22", "5e22", "5e23"}
	fast := 0
	for range 50000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		next := math.Nextafter32(f, float32(math.Inf(1)))
		mid := (float64(f) + float64(next)) / 2 // exact in float64
		ulp := math.Abs(float64(next) - float64(f))
		tokens = append(tokens,
			strconv.FormatFloat(float64(f), 'g', -1, 32),
			strconv.FormatFloat(float64(f), 'g', -1, 64),
			strconv.FormatFloat(float64(f), 'e', r.IntN(20), 64),
			strconv.FormatFloat(mid, 'g', -1, 64),
			strconv.FormatFloat(mid, 'e', 16+r.IntN(4), 64),
			strconv.FormatFloat(mid+ulp*1e-9, 'g', -1, 64),
			strconv.FormatFloat(mid-ulp*1e-9, 'e', 18, 64),
		)
		var b strings.Builder
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		b.WriteString(strconv.Itoa(r.IntN(1000)))
		b.WriteByte('.')
		for range 1 + r.IntN(24) {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		if r.IntN(2) == 0 {
			b.WriteString("e" + strconv.Itoa(r.IntN(60)-30))
		}
		tokens = append(tokens, b.String(), strconv.FormatUint(r.Uint64()>>r.IntN(64), 10))
	}
	for _, tok := range tokens {
		// JSON has no leading '+' or leading zeros; FormatFloat writes
		// neither, but exponents like e-07 are fine.
		if checkNumber(t, tok) {
			fast++
		}
	}
	t.Logf("%d numbers, %d on the fast FP32 path", len(tokens), fast)
	if fast < len(tokens)/4 {
		t.Errorf("only %d of %d numbers took the fast path", fast, len(tokens))
	}
}

// FuzzNumber compares the scanner's numbers with strconv's.
func FuzzNumber(f *testing.F) {
	for _, s := range []string{"0", "-0.0", "1.5e3", "0.30000001192092896", "18446744073709551615", "1e-46", "3.4028235677973366e38"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) { checkNumber(t, tok) })
}

func TestEightDigits(t *testing.T) {
	for _, c := range []struct {
		s    string
		ok   bool
		want uint32
	}{{"12345678", true, 12345678}, {"00000000", true, 0}, {"99999999", true, 99999999}, {"1234567a", false, 0}, {"1234567/", false, 0}, {"1234567:", false, 0}, {" 2345678", false, 0}} {
		v := uint64(0)
		for i := 7; i >= 0; i-- {
			v = v<<8 | uint64(c.s[i])
		}
		if eightDigits(v) != c.ok || c.ok && parseEight(v) != c.want {
			t.Errorf("%q: eightDigits %v parseEight %d", c.s, eightDigits(v), parseEight(v))
		}
	}
}
