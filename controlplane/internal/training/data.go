package training

import (
	"math"
	"strconv"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// maxFeatures bounds a row's width.
const maxFeatures = 1 << 16

// checked is a data set a built-in trainer can use, with every name set.
type checked struct {
	Data
	classes int // 0 for regression
}

// check checks d for task and fills in default names.
func check(op string, d Data, task Task) (checked, error) {
	bad := func(format string, args ...any) (checked, error) {
		return checked{}, shoalerr.E(shoalerr.Invalid, op, "data set: "+format, args...)
	}
	if len(d.X) == 0 {
		return bad("no rows")
	}
	if len(d.Y) != len(d.X) {
		return bad("%d rows of features but %d targets", len(d.X), len(d.Y))
	}
	width := len(d.X[0])
	if width == 0 || width > maxFeatures {
		return bad("rows have %d features; use 1 to %d", width, maxFeatures)
	}
	if len(d.Features) == 0 {
		d.Features = make([]string, width)
		for i := range d.Features {
			d.Features[i] = "x" + strconv.Itoa(i)
		}
	} else if len(d.Features) != width {
		return bad("%d feature names for rows of %d features", len(d.Features), width)
	}
	if d.Target == "" {
		d.Target = "target"
	}
	for r, row := range d.X {
		if len(row) != width {
			return bad("row %d has %d features; row 0 has %d", r, len(row), width)
		}
		for j, v := range row {
			if math.IsInf(v, 0) {
				return bad("row %d, feature %q is %g; use a finite value, or leave it empty (NaN) to have it imputed", r, d.Features[j], v)
			}
		}
	}
	c := checked{Data: d}
	for r, v := range d.Y {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return bad("row %d: target %q is %g; drop the row or give it a value", r, d.Target, v)
		}
		if task != Classification {
			continue
		}
		limit := maxWidth
		if len(d.Classes) > 0 {
			limit = len(d.Classes)
		}
		if v < 0 || v != math.Trunc(v) || v >= float64(limit) {
			return bad("row %d: target %q is %g, which is not a class index (0 to %d)", r, d.Target, v, limit-1)
		}
		c.classes = max(c.classes, int(v)+1)
	}
	if task == Classification {
		if len(d.Classes) > 0 {
			c.classes = len(d.Classes)
		} else {
			c.Classes = make([]string, c.classes)
			for i := range c.Classes {
				c.Classes[i] = strconv.Itoa(i)
			}
		}
		if c.classes < 2 {
			return bad("classification needs at least two classes; target %q has %d", d.Target, c.classes)
		}
	}
	return c, nil
}

// scaler standardises features with statistics of the training split, in
// the float32 values the ONNX graph holds, so that training, evaluation in
// Go and ONNX Runtime see the same transform.
type scaler struct {
	mean, std, inv []float32
	// impute is set when the data set has missing values: they become the
	// mean, which standardises to 0.
	impute bool
}

// fitScaler computes the mean and standard deviation of each feature over
// rows of x, ignoring missing values, and lists the features with missing
// values anywhere in x.
func fitScaler(op string, x [][]float64, rows []int, features []string) (scaler, []Imputation, error) {
	width := len(features)
	s := scaler{mean: make([]float32, width), std: make([]float32, width), inv: make([]float32, width)}
	sum := make([]float64, width)
	count := make([]int, width)
	for _, r := range rows {
		for j, v := range x[r] {
			if !math.IsNaN(v) {
				sum[j] += float64(float32(v))
				count[j]++
			}
		}
	}
	mean := make([]float64, width)
	for j := range mean {
		if count[j] == 0 {
			return scaler{}, nil, shoalerr.E(shoalerr.Invalid, op, "data set: feature %q has no values in the %d training rows; drop the column", features[j], len(rows))
		}
		mean[j] = sum[j] / float64(count[j])
	}
	sq := make([]float64, width)
	for _, r := range rows {
		for j, v := range x[r] {
			if !math.IsNaN(v) {
				d := float64(float32(v)) - mean[j]
				sq[j] += d * d
			}
		}
	}
	for j := range mean {
		s.mean[j] = float32(mean[j])
		s.std[j] = float32(math.Sqrt(sq[j] / float64(count[j])))
		if !(s.std[j] > 0) || math.IsInf(float64(s.std[j]), 0) {
			s.std[j] = 1
		}
		s.inv[j] = 1 / s.std[j]
	}
	var imputed []Imputation
	missing := make([]int, width)
	for _, row := range x {
		for j, v := range row {
			if math.IsNaN(v) {
				missing[j]++
			}
		}
	}
	for j, m := range missing {
		if m > 0 {
			s.impute = true
			imputed = append(imputed, Imputation{Feature: features[j], Missing: m, Value: float64(s.mean[j])})
		}
	}
	return s, imputed, nil
}

// apply returns rows of x standardised, as one row-major matrix. Values
// go through float32 first, as they do on the way into the model.
func (s scaler) apply(x [][]float64, rows []int) []float64 {
	width := len(s.mean)
	out := make([]float64, len(rows)*width)
	for i, r := range rows {
		o := out[i*width : (i+1)*width]
		for j, v := range x[r] {
			if math.IsNaN(v) {
				continue // the mean, standardised
			}
			o[j] = (float64(float32(v)) - float64(s.mean[j])) * float64(s.inv[j])
		}
	}
	return out
}
