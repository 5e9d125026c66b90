package datastats

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func TestMergeHandComputed(t *testing.T) {
	edges := []float64{2.5}
	// {1, 2, 3, NaN} and {10, +Inf}: mean (1+2+3+10)/4 = 4,
	// m2 = 3² + 2² + 1² + 6² = 50. By Chan et al.: n_a = 3, mean_a = 2,
	// m2_a = 2; n_b = 1, mean_b = 10, m2_b = 0; δ = 8; mean = 2 + 8×1/4 = 4;
	// m2 = 2 + 0 + 8² × 3×1/4 = 50.
	a := statsOf(t, edges, []float64{1, 2, 3, math.NaN()})
	b := statsOf(t, edges, []float64{10, math.Inf(1)})
	want := &shoalv1.FeatureStats{Name: "f0", BinCounts: []uint64{2, 2}, Count: 4, Missing: 1, Nan: 1, Min: 1, Max: 10, Mean: 4, M2: 50}
	for _, order := range [][2]*shoalv1.FeatureStats{{a, b}, {b, a}} {
		got, err := Merge(order[0], order[1])
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("got\n%v\nwant\n%v", got, want)
		}
	}
	if a.Count != 3 || b.Count != 1 {
		t.Fatal("Merge changed its arguments")
	}
}

// TestMergeEmpty: statistics with no counted value (only missing or NaN
// ones, or none) merge as an identity for the moments.
func TestMergeEmpty(t *testing.T) {
	edges := []float64{0}
	full := statsOf(t, edges, []float64{-1, 4})
	for _, empty := range []*shoalv1.FeatureStats{
		statsOf(t, edges, nil),
		statsOf(t, edges, []float64{math.NaN(), math.Inf(-1)}),
	} {
		for _, order := range [][2]*shoalv1.FeatureStats{{full, empty}, {empty, full}} {
			got, err := Merge(order[0], order[1])
			if err != nil {
				t.Fatal(err)
			}
			want := &shoalv1.FeatureStats{Name: "f0", BinCounts: []uint64{1, 1}, Count: 2, Missing: empty.Missing, Nan: empty.Nan, Min: -1, Max: 4, Mean: 1.5, M2: 12.5}
			if !proto.Equal(got, want) {
				t.Errorf("got\n%v\nwant\n%v", got, want)
			}
		}
	}
	got, err := Merge(statsOf(t, edges, nil), statsOf(t, edges, nil))
	if err != nil || !proto.Equal(got, statsOf(t, edges, nil)) {
		t.Fatalf("merging empties: %v, %v", got, err)
	}
}

// randomEdges returns up to 30 ascending edges, or none.
func randomEdges(r *rand.Rand) []float64 {
	var e []float64
	for range r.IntN(30) {
		e = append(e, r.NormFloat64()*100)
	}
	slices.Sort(e)
	return slices.Compact(e)
}

// TestMergeEqualsConcatenation splits random data at random points, keeps
// the statistics of each part, and merges them in a random order and
// grouping: the result is the statistics of all the data.
func TestMergeEqualsConcatenation(t *testing.T) {
	r := newRand(2)
	for trial := range 500 {
		edges := randomEdges(r)
		values := randomValues(r, r.IntN(300))
		want := statsOf(t, edges, values)

		// Cut the values into 1 to 8 parts, some possibly empty.
		cuts := []int{0, len(values)}
		for range r.IntN(8) {
			cuts = append(cuts, r.IntN(len(values)+1))
		}
		slices.Sort(cuts)
		var parts []*shoalv1.FeatureStats
		for i := 1; i < len(cuts); i++ {
			parts = append(parts, statsOf(t, edges, values[cuts[i-1]:cuts[i]]))
		}
		// Merge two random parts, in a random order, until one is left.
		for len(parts) > 1 {
			i, j := r.IntN(len(parts)), r.IntN(len(parts)-1)
			if j >= i {
				j++
			}
			m, err := Merge(parts[i], parts[j])
			if err != nil {
				t.Fatal(err)
			}
			parts[i] = m
			parts = slices.Delete(parts, j, j+1)
		}
		checkStatsEqual(t, fmt.Sprintf("trial %d", trial), parts[0], want)
	}
}

func TestMergeAssociativeCommutative(t *testing.T) {
	r := newRand(3)
	merge := func(a, b *shoalv1.FeatureStats) *shoalv1.FeatureStats {
		t.Helper()
		m, err := Merge(a, b)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for range 300 {
		edges := randomEdges(r)
		a := statsOf(t, edges, randomValues(r, r.IntN(50)))
		b := statsOf(t, edges, randomValues(r, r.IntN(50)))
		c := statsOf(t, edges, randomValues(r, r.IntN(50)))
		checkStatsEqual(t, "commutative", merge(a, b), merge(b, a))
		checkStatsEqual(t, "associative", merge(merge(a, b), c), merge(a, merge(b, c)))
	}
}

func TestMergeErrors(t *testing.T) {
	a := statsOf(t, []float64{1}, []float64{0, 2, math.NaN()})
	renamed := statsOf(t, []float64{1}, []float64{0})
	renamed.Name = "other"
	full := statsOf(t, []float64{1}, []float64{0})
	full.BinCounts[0], full.Count = math.MaxUint64, math.MaxUint64
	nanFull := statsOf(t, []float64{1}, nil)
	nanFull.Nan = math.MaxUint64
	for _, tc := range []struct {
		name         string
		src          *shoalv1.FeatureStats
		want         string
		incompatible bool
	}{
		{"other bins", statsOf(t, []float64{1, 2}, []float64{0}), `feature "f0" has 2 bins in one and 3 in the other`, true},
		{"other feature", renamed, `feature "f0" with feature "other"`, true},
		{"bin overflow", full, `merging "f0": bin 0 overflows`, false},
		{"nan overflow", nanFull, `merging "f0": nan overflows`, false},
		{"nil", nil, "merging nil statistics", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := proto.Clone(a)
			err := MergeInto(a, tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrIncompatible) != tc.incompatible {
				t.Fatalf("got %v; want an error containing %q (ErrIncompatible: %v)", err, tc.want, tc.incompatible)
			}
			if !proto.Equal(a, before) {
				t.Fatalf("a refused merge changed dst: %v", a)
			}
			if _, err := Merge(a, tc.src); err == nil {
				t.Fatal("Merge accepts it")
			}
		})
	}
}

func TestMergeAllInto(t *testing.T) {
	x := func(v ...float64) *shoalv1.FeatureStats { return statsOf(t, []float64{1}, v) }
	dst := []*shoalv1.FeatureStats{x(0), x(5)}
	if err := MergeAllInto(dst, []*shoalv1.FeatureStats{x(2), x(7)}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []*shoalv1.FeatureStats{x(0, 2), x(5, 7)} {
		if !proto.Equal(dst[i], want) {
			t.Errorf("feature %d: got %v; want %v", i, dst[i], want)
		}
	}
	before := []*shoalv1.FeatureStats{proto.CloneOf(dst[0]), proto.CloneOf(dst[1])}
	other := statsOf(t, nil, []float64{1})
	for _, src := range [][]*shoalv1.FeatureStats{{x(1)}, {x(1), other}} {
		if err := MergeAllInto(dst, src); !errors.Is(err, ErrIncompatible) {
			t.Fatalf("merging %d features, the last of other bins: %v; want ErrIncompatible", len(src), err)
		}
		for i := range dst {
			if !proto.Equal(dst[i], before[i]) {
				t.Fatalf("a refused merge changed feature %d", i)
			}
		}
	}
}
