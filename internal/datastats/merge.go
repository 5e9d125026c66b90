package datastats

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// ErrIncompatible is wrapped by the errors of Merge and the drift metrics
// when two FeatureStats are not of the same feature binned the same way.
var ErrIncompatible = errors.New("statistics of different features or bins")

// Merge returns the statistics of a's values and b's together, as if one
// Accumulator had seen them all: bin counts, count, missing and nan add,
// min and max are the smaller and the larger, and mean and m2 combine by
// the parallel formula of Chan, Golub and LeVeque. The result equals the
// statistics of the concatenated values up to floating-point rounding, in
// any order and grouping. a and b are not changed.
//
// It returns an error wrapping ErrIncompatible when a and b have different
// names or numbers of bins, and an error when a count would overflow. It
// trusts the rest of a and b (bin counts adding up to count, and so on):
// check statistics from outside the process with ValidateStats first.
func Merge(a, b *shoalv1.FeatureStats) (*shoalv1.FeatureStats, error) {
	if a == nil || b == nil {
		return nil, errors.New("merging nil statistics")
	}
	out := &shoalv1.FeatureStats{
		Name:      a.Name,
		BinCounts: slices.Clone(a.BinCounts),
		Count:     a.Count,
		Missing:   a.Missing,
		Nan:       a.Nan,
		Min:       a.Min,
		Max:       a.Max,
		Mean:      a.Mean,
		M2:        a.M2,
	}
	if err := MergeInto(out, b); err != nil {
		return nil, err
	}
	return out, nil
}

// MergeInto merges src into dst, as Merge does; on error dst is unchanged.
func MergeInto(dst, src *shoalv1.FeatureStats) error {
	if err := checkMerge(dst, src); err != nil {
		return err
	}
	mergeInto(dst, src)
	return nil
}

// MergeAllInto merges src[i] into dst[i] for every i, as MergeInto does:
// the features of one report into another's. It returns an error when the
// slices differ in length or any pair cannot merge, and then changes
// nothing.
func MergeAllInto(dst, src []*shoalv1.FeatureStats) error {
	if len(dst) != len(src) {
		return fmt.Errorf("%w: merging statistics of %d features into %d", ErrIncompatible, len(src), len(dst))
	}
	for i := range src {
		if err := checkMerge(dst[i], src[i]); err != nil {
			return fmt.Errorf("feature %d: %w", i, err)
		}
	}
	for i := range src {
		mergeInto(dst[i], src[i])
	}
	return nil
}

// checkMerge returns an error if src cannot be merged into dst.
func checkMerge(dst, src *shoalv1.FeatureStats) error {
	if dst == nil || src == nil {
		return errors.New("merging nil statistics")
	}
	if err := compatible(dst, src); err != nil {
		return err
	}
	for i, c := range src.BinCounts {
		if _, carry := bits.Add64(dst.BinCounts[i], c, 0); carry != 0 {
			return fmt.Errorf("merging %q: bin %d overflows", dst.Name, i)
		}
	}
	for _, f := range []struct {
		name     string
		dst, src uint64
	}{{"count", dst.Count, src.Count}, {"missing", dst.Missing, src.Missing}, {"nan", dst.Nan, src.Nan}} {
		if _, carry := bits.Add64(f.dst, f.src, 0); carry != 0 {
			return fmt.Errorf("merging %q: %s overflows", dst.Name, f.name)
		}
	}
	return nil
}

// compatible returns an error wrapping ErrIncompatible unless a and b are
// statistics of the same feature with the same bins.
func compatible(a, b *shoalv1.FeatureStats) error {
	if a.Name != b.Name {
		return fmt.Errorf("%w: feature %q with feature %q", ErrIncompatible, trunc(a.Name), trunc(b.Name))
	}
	if len(a.BinCounts) != len(b.BinCounts) {
		return fmt.Errorf("%w: feature %q has %d bins in one and %d in the other (statistics made with different profiles?)", ErrIncompatible, trunc(a.Name), len(a.BinCounts), len(b.BinCounts))
	}
	return nil
}

func mergeInto(dst, src *shoalv1.FeatureStats) {
	for i, c := range src.BinCounts {
		dst.BinCounts[i] += c
	}
	dst.Missing += src.Missing
	dst.Nan += src.Nan
	switch {
	case src.Count == 0:
	case dst.Count == 0:
		dst.Count, dst.Min, dst.Max, dst.Mean, dst.M2 = src.Count, src.Min, src.Max, src.Mean, src.M2
	default:
		na, nb := float64(dst.Count), float64(src.Count)
		n := na + nb
		d := src.Mean - dst.Mean
		dst.Mean += d * (nb / n)
		dst.M2 += src.M2 + d*d*(na/n)*nb
		dst.Min = min(dst.Min, src.Min)
		dst.Max = max(dst.Max, src.Max)
		dst.Count += src.Count
	}
}
