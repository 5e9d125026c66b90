package onnxrt

import (
	"fmt"
	"math"
	"math/rand/v2"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// DefaultTolerance is the self-test tolerance: |got-want| ≤ tol·(1+|want|).
const DefaultTolerance = 1e-4

// SampleInputs makes deterministic inputs for specs, with dynamic
// dimensions set to 1: values in [0,1) for floats, small non-negative
// integers, alternating booleans and short strings.
func SampleInputs(specs []TensorSpec, seed uint64) ([]Tensor, error) {
	r := rand.New(rand.NewPCG(seed, seed^0x5b0a1))
	out := make([]Tensor, len(specs))
	for i, s := range specs {
		shape := make([]int64, len(s.Shape))
		for d, v := range s.Shape {
			shape[d] = v
			if v < 0 {
				shape[d] = 1
			}
		}
		n64, err := ShapeSize(shape)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", s.Name, err)
		}
		n := int(n64)
		t := Tensor{Name: s.Name, DataType: s.DataType, Shape: shape}
		switch s.DataType {
		case FP32:
			d := make([]float32, n)
			for j := range d {
				d[j] = r.Float32()
			}
			t.Data = d
		case FP64:
			d := make([]float64, n)
			for j := range d {
				d[j] = r.Float64()
			}
			t.Data = d
		case INT8:
			t.Data = smallInts[int8](r, n)
		case INT16:
			t.Data = smallInts[int16](r, n)
		case INT32:
			t.Data = smallInts[int32](r, n)
		case INT64:
			t.Data = smallInts[int64](r, n)
		case UINT8:
			t.Data = smallInts[uint8](r, n)
		case UINT16:
			t.Data = smallInts[uint16](r, n)
		case UINT32:
			t.Data = smallInts[uint32](r, n)
		case UINT64:
			t.Data = smallInts[uint64](r, n)
		case BOOL:
			d := make([]bool, n)
			for j := range d {
				d[j] = j%2 == 0
			}
			t.Data = d
		case BYTES:
			d := make([]string, n)
			for j := range d {
				d[j] = fmt.Sprintf("s%d", r.IntN(4))
			}
			t.Data = d
		default:
			return nil, fmt.Errorf("input %q: cannot make sample values of %s", s.Name, s.DataType)
		}
		out[i] = t
	}
	return out, nil
}

// smallInts returns n integers in [0,4).
func smallInts[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64](r *rand.Rand, n int) []T {
	d := make([]T, n)
	for j := range d {
		d[j] = T(r.IntN(4))
	}
	return d
}

// MakeSelfTest runs the session on deterministic sample inputs and records
// the outputs as the expected result an agent must reproduce.
func MakeSelfTest(s *Session, seed uint64) (*shoalv1.SelfTest, error) {
	ins, err := SampleInputs(s.Inputs(), seed)
	if err != nil {
		return nil, err
	}
	outs, err := s.Run(ins)
	if err != nil {
		return nil, fmt.Errorf("self-test run: %w", err)
	}
	st := &shoalv1.SelfTest{Tolerance: DefaultTolerance}
	for _, t := range ins {
		p, err := ToProto(t)
		if err != nil {
			return nil, err
		}
		st.Inputs = append(st.Inputs, p)
	}
	for _, t := range outs {
		p, err := ToProto(t)
		if err != nil {
			return nil, err
		}
		st.ExpectedOutputs = append(st.ExpectedOutputs, p)
	}
	return st, nil
}

// RunSelfTest feeds st's inputs to s and compares the outputs with st's
// expected outputs. The error says which output differs, where, and by how much.
func RunSelfTest(s *Session, st *shoalv1.SelfTest) error {
	if st == nil || len(st.GetExpectedOutputs()) == 0 {
		return fmt.Errorf("self-test: the manifest carries no expected outputs")
	}
	ins := make([]Tensor, len(st.GetInputs()))
	for i, p := range st.GetInputs() {
		t, err := FromProto(p)
		if err != nil {
			return fmt.Errorf("self-test input: %w", err)
		}
		ins[i] = t
	}
	want := make([]Tensor, len(st.GetExpectedOutputs()))
	for i, p := range st.GetExpectedOutputs() {
		t, err := FromProto(p)
		if err != nil {
			return fmt.Errorf("self-test expected output: %w", err)
		}
		want[i] = t
	}
	got, err := s.Run(ins)
	if err != nil {
		return fmt.Errorf("self-test: %w", err)
	}
	tol := st.GetTolerance()
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if err := Compare(got, want, tol); err != nil {
		return fmt.Errorf("self-test: %w", err)
	}
	return nil
}

// Compare checks that got holds every tensor of want (by name) with the same
// type and shape, and values within tol: |g-w| ≤ tol·(1+|w|) for floats,
// exact for the rest.
func Compare(got, want []Tensor, tol float64) error {
	byName := make(map[string]Tensor, len(got))
	for _, g := range got {
		byName[g.Name] = g
	}
	for _, w := range want {
		g, ok := byName[w.Name]
		if !ok {
			return fmt.Errorf("output %q is missing", w.Name)
		}
		if g.DataType != w.DataType {
			return fmt.Errorf("output %q is %s; want %s", w.Name, g.DataType, w.DataType)
		}
		if fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) {
			return fmt.Errorf("output %q has shape %v; want %v", w.Name, g.Shape, w.Shape)
		}
		if g.Len() != w.Len() {
			return fmt.Errorf("output %q has %d values; want %d", w.Name, g.Len(), w.Len())
		}
		if err := compareData(g.Data, w.Data, tol); err != nil {
			return fmt.Errorf("output %q: %w", w.Name, err)
		}
	}
	return nil
}

func compareData(g, w any, tol float64) error {
	closeEnough := func(i int, a, b float64) error {
		if math.IsNaN(a) && math.IsNaN(b) {
			return nil
		}
		// An infinity matches only itself: the relative bound below is
		// infinite (or NaN) for one and would let any value match it.
		if (math.IsInf(a, 0) || math.IsInf(b, 0)) && a != b {
			return fmt.Errorf("value %d is %g; want %g", i, a, b)
		}
		if math.Abs(a-b) > tol*(1+math.Abs(b)) || math.IsNaN(a) != math.IsNaN(b) {
			return fmt.Errorf("value %d is %g; want %g (tolerance %g)", i, a, b, tol)
		}
		return nil
	}
	switch gd := g.(type) {
	case []float32:
		wd := w.([]float32)
		for i := range gd {
			if err := closeEnough(i, float64(gd[i]), float64(wd[i])); err != nil {
				return err
			}
		}
		return nil
	case []float64:
		wd := w.([]float64)
		for i := range gd {
			if err := closeEnough(i, gd[i], wd[i]); err != nil {
				return err
			}
		}
		return nil
	}
	gs, ws := fmt.Sprint(g), fmt.Sprint(w)
	if gs != ws {
		return fmt.Errorf("values differ: got %.80s; want %.80s", gs, ws)
	}
	return nil
}
