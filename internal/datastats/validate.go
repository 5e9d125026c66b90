package datastats

import (
	"errors"
	"fmt"
	"math"
	"math/bits"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// ValidateProfile returns an error, naming the field at fault, unless p is
// a profile an agent can bin with and the control plane can compare with:
//
//   - schema_version is SchemaVersion;
//   - it has inputs or outputs, at most MaxFeatures of each and MaxTotalBins
//     bins in all; input_name is set when there are inputs and output_name
//     when there are outputs;
//   - names are 1 to MaxNameLen bytes, a feature's unique among the inputs
//     (the outputs);
//   - a numeric feature has at most MaxBins−1 edges, finite and strictly
//     ascending, and no classes; a categorical one no edges and 1 to
//     MaxBins classes;
//   - each feature's reference is valid for it (ValidateStats) and accounts
//     for every row: count + missing + nan = rows.
func ValidateProfile(p *shoalv1.ReferenceProfile) error {
	return validateProfile(p, true)
}

// validateProfile is ValidateProfile; without reference, it checks only
// what binning needs and ignores the features' reference statistics.
func validateProfile(p *shoalv1.ReferenceProfile, reference bool) error {
	if p == nil {
		return errors.New("reference profile is missing")
	}
	if v := p.GetSchemaVersion(); v != SchemaVersion {
		return fmt.Errorf("reference profile has schema_version %d; this build understands %d", v, SchemaVersion)
	}
	if len(p.GetInputs())+len(p.GetOutputs()) == 0 {
		return errors.New("reference profile has no inputs and no outputs")
	}
	total := 0
	for _, side := range []struct {
		role, nameField, name string
		features              []*shoalv1.FeatureProfile
	}{
		{"inputs", "input_name", p.GetInputName(), p.GetInputs()},
		{"outputs", "output_name", p.GetOutputName(), p.GetOutputs()},
	} {
		if len(side.features) == 0 {
			continue
		}
		if len(side.features) > MaxFeatures {
			return fmt.Errorf("reference profile has %d %s; the limit is %d", len(side.features), side.role, MaxFeatures)
		}
		if err := checkName(side.name); err != nil {
			return fmt.Errorf("reference profile: %s %w", side.nameField, err)
		}
		seen := make(map[string]int, len(side.features))
		for i, fp := range side.features {
			if err := validateFeature(fp, reference, p.GetRows()); err != nil {
				return fmt.Errorf("reference profile: %s: %w", where(side.role, i, fp.GetName()), err)
			}
			if j, dup := seen[fp.GetName()]; dup {
				return fmt.Errorf("reference profile: %s has the name of %s[%d]; feature names must be unique", where(side.role, i, fp.GetName()), side.role, j)
			}
			seen[fp.GetName()] = i
			if total += binCount(fp); total > MaxTotalBins {
				return fmt.Errorf("reference profile: %s brings the bins to more than %d, the limit", where(side.role, i, fp.GetName()), MaxTotalBins)
			}
		}
	}
	return nil
}

func validateFeature(fp *shoalv1.FeatureProfile, reference bool, rows uint64) error {
	if fp == nil {
		return errors.New("is missing")
	}
	if err := checkName(fp.GetName()); err != nil {
		return fmt.Errorf("name %w", err)
	}
	edges := fp.GetEdges()
	if fp.GetCategorical() {
		if len(edges) > 0 {
			return fmt.Errorf("is categorical but has %d edges; a categorical feature has none", len(edges))
		}
		if c := fp.GetClasses(); c < 1 || c > MaxBins {
			return fmt.Errorf("classes is %d; a categorical feature has 1 to %d", c, MaxBins)
		}
	} else {
		if c := fp.GetClasses(); c != 0 {
			return fmt.Errorf("classes is %d but the feature is not categorical", c)
		}
		if len(edges) > MaxBins-1 {
			return fmt.Errorf("has %d edges (%d bins); the limit is %d bins", len(edges), len(edges)+1, MaxBins)
		}
		for i, e := range edges {
			if math.IsNaN(e) || math.IsInf(e, 0) {
				return fmt.Errorf("edges[%d] is %v; edges must be finite", i, e)
			}
			if i > 0 && !(e > edges[i-1]) {
				return fmt.Errorf("edges[%d] = %v is not above edges[%d] = %v; edges must be strictly ascending", i, e, i-1, edges[i-1])
			}
		}
	}
	if !reference {
		return nil
	}
	s := fp.GetReference()
	if s == nil {
		return errors.New("reference is missing")
	}
	if err := ValidateStats(fp, s); err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	if seen, ok := valuesSeen(s); !ok || seen != rows {
		return fmt.Errorf("reference: count %d + missing %d + nan %d is not rows, %d", s.GetCount(), s.GetMissing(), s.GetNan(), rows)
	}
	return nil
}

// ValidateStats returns an error, naming the field at fault, unless s can
// be statistics of the feature fp (a profile's reference, or a window a
// device reported): the same name, a count per bin of fp, bin counts
// adding up to count, min ≤ max within ±MaxValue, a finite mean, a finite
// m2 ≥ 0, and, when count is 0, min, max, mean and m2 all 0.
func ValidateStats(fp *shoalv1.FeatureProfile, s *shoalv1.FeatureStats) error {
	if fp == nil || s == nil {
		return errors.New("statistics or feature profile is missing")
	}
	if s.GetName() != fp.GetName() {
		return fmt.Errorf("name is %q; want %q", trunc(s.GetName()), trunc(fp.GetName()))
	}
	counts := s.GetBinCounts()
	if want := binCount(fp); len(counts) != want {
		return fmt.Errorf("bin_counts has %d bins; the feature has %d", len(counts), want)
	}
	var sum, carry uint64
	for _, c := range counts {
		if sum, carry = bits.Add64(sum, c, 0); carry != 0 {
			return errors.New("bin_counts add up to more than 2^64")
		}
	}
	if sum != s.GetCount() {
		return fmt.Errorf("bin_counts add up to %d; count is %d", sum, s.GetCount())
	}
	lo, hi, mean, m2 := s.GetMin(), s.GetMax(), s.GetMean(), s.GetM2()
	if s.GetCount() == 0 {
		if lo != 0 || hi != 0 || mean != 0 || m2 != 0 {
			return fmt.Errorf("count is 0 but min, max, mean, m2 are %v, %v, %v, %v; want 0", lo, hi, mean, m2)
		}
		return nil
	}
	if !(lo >= -MaxValue && lo <= hi && hi <= MaxValue) {
		return fmt.Errorf("min %v and max %v are not an interval within ±%v", lo, hi, MaxValue)
	}
	if math.IsNaN(mean) || math.IsInf(mean, 0) {
		return fmt.Errorf("mean is %v", mean)
	}
	if !(m2 >= 0 && m2 <= math.MaxFloat64) {
		return fmt.Errorf("m2 is %v; want a finite value, 0 or above", m2)
	}
	return nil
}

// valuesSeen returns count + missing + nan, and false if it overflows.
func valuesSeen(s *shoalv1.FeatureStats) (uint64, bool) {
	n, c1 := bits.Add64(s.GetCount(), s.GetMissing(), 0)
	n, c2 := bits.Add64(n, s.GetNan(), 0)
	return n, c1|c2 == 0
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("is %d bytes; the limit is %d", len(name), MaxNameLen)
	}
	return nil
}

// where names features[i] of role, with its name if that is short enough
// to print.
func where(role string, i int, name string) string {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Sprintf("%s[%d]", role, i)
	}
	return fmt.Sprintf("%s[%d] (%q)", role, i, name)
}

// trunc shortens a name from outside the process for an error message.
func trunc(name string) string {
	const n = 64
	if len(name) <= n {
		return name
	}
	return name[:n] + "..."
}
