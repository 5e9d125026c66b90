package datastats

import (
	"errors"
	"math"
	"testing"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func binned(counts ...uint64) *shoalv1.FeatureStats {
	s := &shoalv1.FeatureStats{Name: "f", BinCounts: counts}
	for _, c := range counts {
		s.Count += c
	}
	return s
}

// TestDrift checks the metrics against values worked out by hand; p are
// the reference's shares, q the window's, ε = ShareFloor = 1e-4.
func TestDrift(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ref, cur *shoalv1.FeatureStats
		want     Drift
	}{
		{"same shares", binned(10, 20, 30, 40), binned(1, 2, 3, 4), Drift{}},
		{
			// p = (.5, .5), q = (.25, .75).
			// PSI = (.25−.5) ln(.25/.5) + (.75−.5) ln(.75/.5)
			//     = .25 × .693147 + .25 × .405465 = .274653
			// m = (.375, .625)
			// KL(p‖m) = .5 log2(.5/.375) + .5 log2(.5/.625) = .5 × .415037 − .5 × .321928 = .046554
			// KL(q‖m) = .25 log2(.25/.375) + .75 log2(.75/.625) = −.25 × .584963 + .75 × .263034 = .051035
			// JS = (.046554 + .051035) / 2 = .048795
			// CDFs (.5, 1) and (.25, 1): KS = .25
			"half to a quarter", binned(50, 50), binned(25, 75),
			Drift{PSI: 0.2746531, JS: 0.0487949, KS: 0.25},
		},
		{
			// p = (1, 0) floored to (1, ε), q = (.5, .5).
			// PSI = (.5−1) ln(.5/1) + (.5−ε) ln(.5/ε) = .346574 + .4999 × 8.517193 = 4.604318
			// m = (.75, .25): KL(p‖m) = log2(1/.75) = .415037
			// KL(q‖m) = .5 log2(.5/.75) + .5 log2(.5/.25) = −.292481 + .5 = .207519
			// JS = (.415037 + .207519) / 2 = .311278
			// CDFs (1, 1) and (.5, 1): KS = .5
			"a bin empty in the reference", binned(100, 0), binned(50, 50),
			Drift{PSI: 4.6043185, JS: 0.3112781, KS: 0.5},
		},
		{
			// p = (1, ε), q = (ε, 1) after the floor.
			// PSI = 2 × (1−ε) ln(1/ε) = 2 × .9999 × 9.210340 = 18.418839
			// Disjoint: m = (.5, .5), KL(p‖m) = KL(q‖m) = log2 2 = 1, JS = 1.
			// CDFs (1, 1) and (0, 1): KS = 1.
			"disjoint", binned(10, 0), binned(0, 10),
			Drift{PSI: 18.4188387, JS: 1, KS: 1},
		},
		{
			// p = (.2, .3, .5), q = (.3, .3, .4).
			// PSI = .1 ln 1.5 + 0 + (−.1) ln .8 = .040547 + .022314 = .062861
			// m = (.25, .3, .45)
			// KL(p‖m) = .2 log2 .8 + 0 + .5 log2(.5/.45) = −.064386 + .076002 = .011616
			// KL(q‖m) = .3 log2 1.2 + 0 + .4 log2(.4/.45) = .078910 − .067970 = .010940
			// JS = (.011616 + .010940) / 2 = .011278
			// CDFs (.2, .5, 1) and (.3, .6, 1): KS = .1
			"three bins", binned(20, 30, 50), binned(30, 30, 40),
			Drift{PSI: 0.0628609, JS: 0.0112781, KS: 0.1},
		},
		{
			// p = (.9, .1, 0, 0), q = (.6, .1, .2, .1).
			// PSI = (−.3) ln(.6/.9) + 0 + (.2−ε) ln(.2/ε) + (.1−ε) ln(.1/ε)
			//     = .121640 + .1999 × 7.600902 + .0999 × 6.907755 = .121640 + 1.519420 + .690085 = 2.331145
			// m = (.75, .1, .1, .05)
			// KL(p‖m) = .9 log2(.9/.75) = .9 × .263034 = .236731
			// KL(q‖m) = .6 log2(.6/.75) + 0 + .2 log2 2 + .1 log2 2 = −.193157 + .3 = .106843
			// JS = (.236731 + .106843) / 2 = .171787
			// CDFs (.9, 1, 1, 1) and (.6, .7, .9, 1): KS = .3
			"new values in the tail", binned(900, 100, 0, 0), binned(60, 10, 20, 10),
			Drift{PSI: 2.3311447, JS: 0.1717871, KS: 0.3},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Compare(tc.ref, tc.cur)
			if err != nil {
				t.Fatal(err)
			}
			const tol = 1e-6
			if math.Abs(got.PSI-tc.want.PSI) > tol || math.Abs(got.JS-tc.want.JS) > tol || math.Abs(got.KS-tc.want.KS) > tol {
				t.Fatalf("Compare = %+v; want %+v", got, tc.want)
			}
			for _, f := range []struct {
				name string
				fn   func(ref, cur *shoalv1.FeatureStats) (float64, error)
				want float64
			}{{"PSI", PSI, got.PSI}, {"JensenShannon", JensenShannon, got.JS}, {"KS", KS, got.KS}} {
				if v, err := f.fn(tc.ref, tc.cur); err != nil || v != f.want {
					t.Errorf("%s = %v, %v; want %v as Compare", f.name, v, err, f.want)
				}
			}
		})
	}
}

// TestDriftBounds checks the metrics' ranges on random windows.
func TestDriftBounds(t *testing.T) {
	r := newRand(4)
	for range 1000 {
		n := 1 + r.IntN(20)
		ref, cur := make([]uint64, n), make([]uint64, n)
		for i := range n {
			ref[i], cur[i] = uint64(r.IntN(3)*r.IntN(1000)), uint64(r.IntN(3)*r.IntN(1000))
		}
		ref[r.IntN(n)]++
		cur[r.IntN(n)]++
		d, err := Compare(binned(ref...), binned(cur...))
		if err != nil {
			t.Fatal(err)
		}
		if !(d.PSI >= 0 && d.PSI < 2*math.Log(1/ShareFloor)+1e-9) || !(d.JS >= 0 && d.JS <= 1) || !(d.KS >= 0 && d.KS <= 1) {
			t.Fatalf("%v vs %v: %+v out of bounds", ref, cur, d)
		}
		if same, _ := Compare(binned(ref...), binned(ref...)); same != (Drift{}) {
			t.Fatalf("%v against itself: %+v", ref, same)
		}
	}
}

func TestDriftErrors(t *testing.T) {
	other := binned(1, 1)
	other.Name = "g"
	for _, tc := range []struct {
		name     string
		ref, cur *shoalv1.FeatureStats
		want     error
	}{
		{"other bins", binned(1, 2), binned(1, 2, 3), ErrIncompatible},
		{"other feature", binned(1, 2), other, ErrIncompatible},
		{"empty reference", binned(0, 0), binned(1, 2), ErrNoData},
		{"empty window", binned(1, 2), binned(0, 0), ErrNoData},
		{"no bins", binned(), binned(), ErrNoData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d, err := Compare(tc.ref, tc.cur); !errors.Is(err, tc.want) {
				t.Fatalf("Compare = %+v, %v; want %v", d, err, tc.want)
			}
		})
	}
	if _, err := Compare(nil, binned(1)); err == nil {
		t.Fatal("Compare(nil, ...) is not an error")
	}
}
