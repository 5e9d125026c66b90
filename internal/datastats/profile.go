package datastats

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// SchemaVersion is the schema_version of the ReferenceProfile this package
// makes and reads.
const SchemaVersion = 1

// DefaultBins is how many bins a numeric feature gets at most when
// ProfileOptions.Bins is 0.
const DefaultBins = 20

// MaxValue bounds the values that are counted and binned; a value beyond
// ±MaxValue counts as missing. It is the float32 range, which every FP32
// tensor element is within, and it keeps mean and m2 finite: m2 is at most
// count × (2 MaxValue)², about 1e97 for 2^64 values.
const MaxValue = math.MaxFloat32

// Column describes one column of training data: a feature of the model's
// input, or a column of its output.
type Column struct {
	Name string
	// Classes above 0 makes the column categorical: its values are class
	// indexes 0..Classes-1 (a classifier's predicted label), one bin each.
	// 0 makes it numeric, binned at its quantiles.
	Classes int
}

// Table is the training data of one model tensor, a row per example.
type Table struct {
	// Name is the tensor's name: the model input the features are the
	// columns of, or the model output.
	Name    string
	Columns []Column
	// Rows[i][j] is column j of example i.
	Rows [][]float64
}

// ProfileOptions tune NewProfile.
type ProfileOptions struct {
	// Bins is the most bins a numeric column gets, 2 to MaxBins; 0 means
	// DefaultBins. A column gets fewer when it has fewer distinct values or
	// heavily repeated ones (see the package doc).
	Bins int
}

// NewProfile makes the reference profile of a model's training data:
// inputs holds the columns of the model input (a [batch, features] tensor)
// and outputs those of its output, for the same rows in the same order (the
// training labels, or the model's predictions on the training data). A
// table with no columns is left out of the profile, but at least one table
// needs some. Each feature gets its bin edges (see the package doc) and its
// reference statistics, computed exactly as an Accumulator computes them on
// live data. It keeps nothing of the tables, and copies one column at a
// time (to sort it).
//
// It returns an error, naming the table, row or column, for an empty
// table, rows of the wrong width, tables of different lengths, empty or
// duplicate names, or a profile over the bounds DecodeProfile enforces.
func NewProfile(inputs, outputs Table, opts ProfileOptions) (*shoalv1.ReferenceProfile, error) {
	bins := opts.Bins
	if bins == 0 {
		bins = DefaultBins
	}
	if bins < 2 || bins > MaxBins {
		return nil, fmt.Errorf("profile options ask for %d bins per feature; want 2 to %d (or 0 for %d)", opts.Bins, MaxBins, DefaultBins)
	}
	if len(inputs.Columns)+len(outputs.Columns) == 0 {
		return nil, errors.New("training data has no columns: give the input features, the outputs, or both")
	}
	rows := -1
	for _, t := range []struct {
		role string
		*Table
	}{{"inputs", &inputs}, {"outputs", &outputs}} {
		if err := checkTable(t.role, t.Table); err != nil {
			return nil, err
		}
		if len(t.Columns) == 0 {
			continue
		}
		if rows >= 0 && len(t.Rows) != rows {
			return nil, fmt.Errorf("training inputs have %d rows but outputs %d; they must be the same examples", rows, len(t.Rows))
		}
		rows = len(t.Rows)
	}
	p := &shoalv1.ReferenceProfile{SchemaVersion: SchemaVersion, Rows: uint64(rows)}
	if len(inputs.Columns) > 0 {
		p.InputName, p.Inputs = inputs.Name, profileTable(&inputs, bins)
	}
	if len(outputs.Columns) > 0 {
		p.OutputName, p.Outputs = outputs.Name, profileTable(&outputs, bins)
	}
	if err := ValidateProfile(p); err != nil {
		return nil, fmt.Errorf("training data makes an invalid profile: %w", err)
	}
	return p, nil
}

// checkTable checks what profileTable relies on; the rest (bounds, names)
// ValidateProfile checks on the finished profile.
func checkTable(role string, t *Table) error {
	if len(t.Columns) == 0 {
		if len(t.Rows) > 0 {
			return fmt.Errorf("training %s have %d rows but no columns", role, len(t.Rows))
		}
		return nil
	}
	if t.Name == "" {
		return fmt.Errorf("training %s have no tensor name; set Table.Name to the model's %s name", role, role[:len(role)-1])
	}
	if len(t.Columns) > MaxFeatures {
		return fmt.Errorf("training %s have %d columns; the limit is %d", role, len(t.Columns), MaxFeatures)
	}
	if len(t.Rows) == 0 {
		return fmt.Errorf("training %s have no rows", role)
	}
	for j, c := range t.Columns {
		if c.Classes < 0 || c.Classes > MaxBins {
			return fmt.Errorf("training %s column %d (%q) has %d classes; want 1 to %d, or 0 for a numeric column", role, j, c.Name, c.Classes, MaxBins)
		}
	}
	for i, r := range t.Rows {
		if len(r) != len(t.Columns) {
			return fmt.Errorf("training %s row %d has %d values; there are %d columns", role, i, len(r), len(t.Columns))
		}
	}
	return nil
}

// profileTable returns the features of a checked table, with their
// reference statistics.
func profileTable(t *Table, bins int) []*shoalv1.FeatureProfile {
	fps := make([]*shoalv1.FeatureProfile, len(t.Columns))
	vals := make([]float64, 0, len(t.Rows))
	for j, c := range t.Columns {
		fp := &shoalv1.FeatureProfile{Name: c.Name}
		if c.Classes > 0 {
			fp.Categorical, fp.Classes = true, uint32(c.Classes)
		} else {
			vals = vals[:0]
			for _, r := range t.Rows {
				if v := r[j]; v >= -MaxValue && v <= MaxValue { // not NaN, not missing
					vals = append(vals, v)
				}
			}
			slices.Sort(vals)
			fp.Edges = edgesOf(vals, bins)
		}
		fps[j] = fp
	}
	cols := newColumns(fps)
	for _, r := range t.Rows {
		for j := range cols {
			cols[j].add(r[j])
		}
	}
	for j := range cols {
		fps[j].Reference = cols[j].stats()
	}
	return fps
}

// edgesOf returns the edges of at most bins bins for the sorted values x,
// by the rules in the package doc.
func edgesOf(x []float64, bins int) []float64 {
	n := len(x)
	if n == 0 {
		return nil
	}
	distinct := 1
	for i := 1; i < n; i++ {
		if x[i] != x[i-1] {
			distinct++
		}
	}
	edges := make([]float64, 0, min(distinct, bins)-1)
	if distinct <= bins {
		for i := 1; i < n; i++ {
			if x[i] != x[i-1] {
				edges = append(edges, x[i])
			}
		}
		return edges
	}
	start := 0 // the first value of the bin being cut
	for r := bins; r > 1; r-- {
		aim := start + (n-start)/r
		v := x[aim]
		first, _ := slices.BinarySearch(x[:aim], v) // the run of v is x[first:end]
		end := aim + sort.Search(n-aim, func(i int) bool { return x[aim+i] > v })
		cut := first
		switch {
		case first > start && end < n:
			if end-aim < aim-first {
				cut = end
			}
		case first > start:
		case end < n:
			cut = end
		default:
			return edges // what is left is one value
		}
		edges = append(edges, x[cut])
		start = cut
	}
	return edges
}
