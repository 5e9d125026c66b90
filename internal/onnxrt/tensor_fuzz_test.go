package onnxrt

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// FuzzFromProto decodes wire tensors (a manifest's self-test inputs and
// expected outputs) as an agent does, allocating in proportion to the
// payload. A tensor FromProto accepts must be valid, hold no more elements
// than the payload had bytes, re-encode to the same wire form (BOOL
// bytes other than 0 normalise to 1), match itself in Compare and not
// match a copy with one value changed: the self-test must be able to tell.
// Seeds: testdata/fuzz/FuzzFromProto, from TestFuzzFromProtoCorpus.
func FuzzFromProto(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte) {
		var p shoalv1.Tensor
		var got Tensor
		var uerr, err error
		if n := fuzzcorpus.Allocated(func() {
			if uerr = proto.Unmarshal(payload, &p); uerr == nil {
				got, err = FromProto(&p)
			}
		}); n > fuzzcorpus.AllocBudget(len(payload)) {
			t.Fatalf("decoding a %d-byte tensor allocated %d bytes", len(payload), n)
		}
		if uerr != nil {
			return // the manifest's protojson/proto layer refuses it first
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tensor ") {
				t.Fatalf("error %q does not name the tensor", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("FromProto accepted an invalid tensor: %v", err)
		}
		if n := got.Len(); n > len(payload) {
			t.Fatalf("%d elements from a %d-byte payload", n, len(payload))
		}
		back, err := ToProto(got)
		if err != nil {
			t.Fatalf("ToProto of a decoded tensor: %v", err)
		}
		if back.GetName() != p.GetName() || back.GetDatatype() != p.GetDatatype() || !slices.Equal(back.GetShape(), p.GetShape()) {
			t.Fatalf("re-encoded header %v; decoded from %v", back, &p)
		}
		wantRaw := p.GetRawData()
		if got.DataType == BOOL {
			wantRaw = bytes.Clone(wantRaw)
			for i, b := range wantRaw {
				if b != 0 {
					wantRaw[i] = 1
				}
			}
		}
		if got.DataType == BYTES {
			wantRaw = nil
		}
		if !bytes.Equal(back.GetRawData(), wantRaw) || !slices.Equal(back.GetStringData(), p.GetStringData()) && got.DataType == BYTES {
			t.Fatalf("re-encoded data differs:\n got %x %q\nwant %x %q", back.GetRawData(), back.GetStringData(), wantRaw, p.GetStringData())
		}
		again, err := FromProto(back)
		if err != nil {
			t.Fatalf("FromProto of the re-encoded tensor: %v", err)
		}
		if err := Compare([]Tensor{again}, []Tensor{got}, 0); err != nil {
			t.Fatalf("a decoded tensor does not match itself: %v", err)
		}
		for i := range min(got.Len(), 4) {
			changed, ok := changeOne(got, i)
			if !ok {
				continue
			}
			for _, tol := range []float64{0, 1e-3} {
				if err := Compare([]Tensor{changed}, []Tensor{got}, tol); err == nil {
					t.Fatalf("Compare (tolerance %g) does not see value %d changed from %v to %v", tol, i, elem(got, i), elem(changed, i))
				}
			}
		}
	})
}

// changeOne returns a copy of t with element i changed by more than any
// tolerance Compare is given here, or false if there is no such value
// (NaN, which only matches NaN).
func changeOne(t Tensor, i int) (Tensor, bool) {
	c := t
	flip := func(v float64) (float64, bool) {
		switch {
		case math.IsNaN(v):
			return 0, false
		case math.IsInf(v, 0):
			return -v, true
		}
		return v + 2*(1+math.Abs(v)), true // Compare allows tol·(1+|want|)
	}
	switch d := t.Data.(type) {
	case []float32:
		d = slices.Clone(d)
		v, ok := flip(float64(d[i]))
		if !ok || float32(v) == d[i] {
			return t, false
		}
		d[i] = float32(v)
		c.Data = d
	case []float64:
		d = slices.Clone(d)
		v, ok := flip(d[i])
		if !ok {
			return t, false
		}
		d[i] = v
		c.Data = d
	case []int64:
		d = slices.Clone(d)
		d[i] ^= 1
		c.Data = d
	case []uint8:
		d = slices.Clone(d)
		d[i] ^= 1
		c.Data = d
	case []bool:
		d = slices.Clone(d)
		d[i] = !d[i]
		c.Data = d
	case []string:
		d = slices.Clone(d)
		d[i] += "x"
		c.Data = d
	default:
		return t, false
	}
	return c, true
}

func elem(t Tensor, i int) any {
	switch d := t.Data.(type) {
	case []float32:
		return d[i]
	case []float64:
		return d[i]
	case []int64:
		return d[i]
	case []uint8:
		return d[i]
	case []bool:
		return d[i]
	case []string:
		return d[i]
	}
	return nil
}

func fuzzFromProtoSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	var seeds []fuzzcorpus.Seed
	add := func(name string, valid bool, p *shoalv1.Tensor) {
		b, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{b}})
	}
	valid := func(name string, tt Tensor) {
		p, err := ToProto(tt)
		if err != nil {
			t.Fatal(err)
		}
		add(name, true, p)
	}
	valid("fp32-matrix", Tensor{Name: "input_vectors", DataType: FP32, Shape: []int64{2, 3}, Data: []float32{1.5, -2, 0, float32(math.Inf(1)), 3e-38, 7}})
	valid("fp64", Tensor{Name: "d", DataType: FP64, Shape: []int64{2}, Data: []float64{3.25, math.NaN()}})
	valid("int64", Tensor{Name: "i", DataType: INT64, Shape: []int64{3}, Data: []int64{-1, 1 << 40, 0}})
	valid("int8", Tensor{Name: "i8", DataType: INT8, Shape: []int64{2}, Data: []int8{-128, 127}})
	valid("uint16", Tensor{Name: "u16", DataType: UINT16, Shape: []int64{1}, Data: []uint16{65535}})
	valid("bool", Tensor{Name: "b", DataType: BOOL, Shape: []int64{3}, Data: []bool{true, false, true}})
	valid("bytes", Tensor{Name: "s", DataType: BYTES, Shape: []int64{2}, Data: []string{"x y", ""}})
	valid("uint8-empty", Tensor{Name: "u", DataType: UINT8, Shape: []int64{0, 784}, Data: []uint8{}})
	valid("scalar", Tensor{Name: "x", DataType: UINT64, Shape: []int64{}, Data: []uint64{1 << 63}})
	add("bool-nonzero", true, &shoalv1.Tensor{Name: "b", Datatype: "BOOL", Shape: []int64{2}, RawData: []byte{0, 7}})
	add("short-raw", false, &shoalv1.Tensor{Name: "f", Datatype: "FP32", Shape: []int64{2}, RawData: []byte{1, 2, 3, 4, 5}})
	add("negative-dim", false, &shoalv1.Tensor{Name: "f", Datatype: "FP32", Shape: []int64{-1, 2}, RawData: make([]byte, 8)})
	add("huge-shape", false, &shoalv1.Tensor{Name: "f", Datatype: "FP32", Shape: []int64{1 << 31, 1 << 31}})
	add("fp16", false, &shoalv1.Tensor{Name: "h", Datatype: "FP16", Shape: []int64{1}, RawData: []byte{0, 0x3c}})
	add("unknown-type", false, &shoalv1.Tensor{Name: "q", Datatype: "fp32", Shape: []int64{1}, RawData: make([]byte, 4)})
	add("bytes-count", false, &shoalv1.Tensor{Name: "s", Datatype: "BYTES", Shape: []int64{3}, StringData: []string{"a"}})
	return seeds
}

// TestFuzzFromProtoCorpus keeps testdata/fuzz/FuzzFromProto in step with
// the seeds above (-update-fuzz-corpus rewrites it).
func TestFuzzFromProtoCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, "FuzzFromProto", fuzzFromProtoSeeds(t), func(v []any) error {
		var p shoalv1.Tensor
		if err := proto.Unmarshal(v[0].([]byte), &p); err != nil {
			return err
		}
		_, err := FromProto(&p)
		return err
	})
}

// TestCompareInfinity is the case FuzzFromProto found: an expected +Inf
// matched any value, since the tolerance tol·(1+|want|) is infinite.
func TestCompareInfinity(t *testing.T) {
	inf := float32(math.Inf(1))
	want := []Tensor{{Name: "y", DataType: FP32, Shape: []int64{1}, Data: []float32{inf}}}
	for _, got := range []float32{-inf, 0, 3.4e38} {
		g := []Tensor{{Name: "y", DataType: FP32, Shape: []int64{1}, Data: []float32{got}}}
		for _, tol := range []float64{0, 1e-3} {
			if err := Compare(g, want, tol); err == nil {
				t.Errorf("Compare(%g, want +Inf, tolerance %g) = nil", got, tol)
			}
		}
	}
	if err := Compare(want, want, 0); err != nil {
		t.Errorf("+Inf does not match itself: %v", err)
	}
}

// TestStringInputMustBeUTF8 is the case FuzzInfer found: ONNX Runtime's
// StringNormalizer never returns on "Hello\xdf", so such an input must be
// refused before it reaches ORT.
func TestStringInputMustBeUTF8(t *testing.T) {
	MustInitForTest(t)
	s, err := Open(lowercaser(t), Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	spec := s.Inputs()[0]
	done := make(chan error, 1)
	go func() {
		_, err := s.Run([]Tensor{{Name: spec.Name, DataType: BYTES, Shape: []int64{2}, Data: []string{"Hello", "Hello\xdf"}}})
		done <- err
	}()
	select {
	case err := <-done:
		s.Close()
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "string 1 is not valid UTF-8") {
			t.Fatalf("err = %v; want an InputError saying string 1 is not valid UTF-8", err)
		}
	case <-time.After(30 * time.Second):
		// The session stays open: Close would wait for the stuck Run.
		t.Fatal("Run did not return: invalid UTF-8 reached ONNX Runtime")
	}
}
