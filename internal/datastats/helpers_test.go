package datastats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// binsProfile returns a profile, without references, of numeric inputs
// with the given edges and a categorical output of classes classes (none
// if 0).
func binsProfile(classes uint32, edges ...[]float64) *shoalv1.ReferenceProfile {
	p := &shoalv1.ReferenceProfile{SchemaVersion: SchemaVersion, InputName: "x"}
	for i, e := range edges {
		p.Inputs = append(p.Inputs, &shoalv1.FeatureProfile{Name: fmt.Sprintf("f%d", i), Edges: e})
	}
	if classes > 0 {
		p.OutputName = "label"
		p.Outputs = []*shoalv1.FeatureProfile{{Name: "label", Categorical: true, Classes: classes}}
	}
	return p
}

func newAcc(t testing.TB, p *shoalv1.ReferenceProfile) *Accumulator {
	t.Helper()
	a, err := NewAccumulator(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// statsOf returns the statistics an Accumulator keeps of values, for a
// numeric feature "f0" with edges.
func statsOf(t testing.TB, edges []float64, values []float64) *shoalv1.FeatureStats {
	t.Helper()
	a := newAcc(t, binsProfile(0, edges))
	if err := a.Observe(values, nil); err != nil {
		t.Fatal(err)
	}
	in, _ := a.Snapshot()
	return in[0]
}

// randomValues returns n values around an offset, with now and then a
// NaN, an infinity or a value beyond MaxValue.
func randomValues(r *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	offset := r.NormFloat64() * 100
	for i := range v {
		switch r.IntN(50) {
		case 0:
			v[i] = math.NaN()
		case 1:
			v[i] = math.Inf(1 - 2*r.IntN(2))
		case 2:
			v[i] = 1e39
		default:
			v[i] = offset + r.NormFloat64()*10
		}
	}
	return v
}

// closeTo reports whether two floats agree to a relative 1e-9 (absolute
// near 0, scaled by scale).
func closeTo(got, want, scale float64) bool {
	return math.Abs(got-want) <= 1e-9*max(math.Abs(want), scale)
}

// checkStatsEqual fails unless got and want agree: counts and min and max
// exactly, mean and m2 to rounding.
func checkStatsEqual(t testing.TB, what string, got, want *shoalv1.FeatureStats) {
	t.Helper()
	if got.Name != want.Name || !slices.Equal(got.BinCounts, want.BinCounts) || got.Count != want.Count ||
		got.Missing != want.Missing || got.Nan != want.Nan || got.Min != want.Min || got.Max != want.Max {
		t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
	}
	scale := math.Abs(want.Max) + math.Abs(want.Min)
	if !closeTo(got.Mean, want.Mean, scale) || !closeTo(got.M2, want.M2, scale*scale) {
		t.Fatalf("%s: mean %v, m2 %v; want %v, %v", what, got.Mean, got.M2, want.Mean, want.M2)
	}
}

// newRand returns a seeded generator: tests see the same data every run.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5eed)) }
