package datastats

import (
	"errors"
	"fmt"
	"math"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// ShareFloor is the smallest bin share PSI uses: a share below it, in the
// reference or the window, counts as ShareFloor, so that an empty bin adds
// a large but finite term. With it, a bin holding 50% of a window and none
// of the reference adds (0.5 − 0.0001) × ln(0.5/0.0001) ≈ 4.26.
const ShareFloor = 1e-4

// ErrNoData is wrapped by the errors of the drift metrics when the
// reference or the window has no value in its bins.
var ErrNoData = errors.New("no values in the bins")

// Drift is how far a window's distribution of a feature is from its
// reference's, over the reference's bins.
type Drift struct {
	// PSI is the population stability index, Σ (q−p) ln(q/p) over the bin
	// shares p of the reference and q of the window, each floored at
	// ShareFloor: 0 for the same shares, unbounded above. By a common rule
	// of thumb, below 0.1 is stable and above 0.25 a shift.
	PSI float64
	// JS is the Jensen–Shannon divergence in bits (log base 2), ½ KL(p‖m) +
	// ½ KL(q‖m) with m = (p+q)/2: 0 for the same shares, 1 for shares in
	// disjoint bins. It is the divergence, not the distance (its square
	// root).
	JS float64
	// KS is the Kolmogorov–Smirnov statistic on the binned CDFs: the
	// largest |CDF_ref − CDF_window| at a bin's upper edge, 0 to 1. For a
	// categorical feature it follows class order, which means little: use
	// PSI or JS there.
	KS float64
}

// Compare returns the drift of cur from ref, statistics of the same
// feature with the same bins (a profile's reference and a window's
// FeatureStats). Only the bin counts are compared: count, missing and nan
// are for the caller to compare (a rise in the NaN rate, say).
//
// It returns an error wrapping ErrIncompatible when the names or the
// numbers of bins differ, and one wrapping ErrNoData when either has no
// value in its bins.
func Compare(ref, cur *shoalv1.FeatureStats) (Drift, error) {
	p, q, err := shares(ref, cur)
	if err != nil {
		return Drift{}, err
	}
	return Drift{PSI: psi(p, q), JS: jensenShannon(p, q), KS: ks(p, q)}, nil
}

// PSI returns Compare's PSI alone.
func PSI(ref, cur *shoalv1.FeatureStats) (float64, error) {
	p, q, err := shares(ref, cur)
	if err != nil {
		return 0, err
	}
	return psi(p, q), nil
}

// JensenShannon returns Compare's JS alone.
func JensenShannon(ref, cur *shoalv1.FeatureStats) (float64, error) {
	p, q, err := shares(ref, cur)
	if err != nil {
		return 0, err
	}
	return jensenShannon(p, q), nil
}

// KS returns Compare's KS alone.
func KS(ref, cur *shoalv1.FeatureStats) (float64, error) {
	p, q, err := shares(ref, cur)
	if err != nil {
		return 0, err
	}
	return ks(p, q), nil
}

// shares returns the bin shares of ref and cur.
func shares(ref, cur *shoalv1.FeatureStats) (p, q []float64, err error) {
	if ref == nil || cur == nil {
		return nil, nil, errors.New("comparing nil statistics")
	}
	if err := compatible(ref, cur); err != nil {
		return nil, nil, err
	}
	if p = shareOf(ref.BinCounts); p == nil {
		return nil, nil, fmt.Errorf("%w: the reference of %q", ErrNoData, trunc(ref.Name))
	}
	if q = shareOf(cur.BinCounts); q == nil {
		return nil, nil, fmt.Errorf("%w: the window of %q", ErrNoData, trunc(cur.Name))
	}
	return p, q, nil
}

// shareOf returns each bin's share of the total, or nil if it is 0.
func shareOf(counts []uint64) []float64 {
	total := 0.0 // a float: hostile counts may overflow a uint64 sum
	for _, c := range counts {
		total += float64(c)
	}
	if total == 0 {
		return nil
	}
	s := make([]float64, len(counts))
	for i, c := range counts {
		s[i] = float64(c) / total
	}
	return s
}

func psi(p, q []float64) float64 {
	sum := 0.0
	for i := range p {
		a, b := max(p[i], ShareFloor), max(q[i], ShareFloor)
		sum += (b - a) * math.Log(b/a) // each term is ≥ 0
	}
	return sum
}

func jensenShannon(p, q []float64) float64 {
	sum := 0.0
	for i := range p {
		m := (p[i] + q[i]) / 2
		if p[i] > 0 {
			sum += p[i] * math.Log2(p[i]/m)
		}
		if q[i] > 0 {
			sum += q[i] * math.Log2(q[i]/m)
		}
	}
	return min(max(sum/2, 0), 1) // rounding may stray past the bounds
}

func ks(p, q []float64) float64 {
	var cp, cq, d float64
	for i := range p {
		cp += p[i]
		cq += q[i]
		d = max(d, math.Abs(cp-cq))
	}
	return min(d, 1)
}
