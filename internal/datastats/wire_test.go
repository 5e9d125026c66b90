package datastats

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// classifierProfile is a small valid profile: three numeric inputs, one of
// them constant, and a 3-class label.
func classifierProfile(t testing.TB) *shoalv1.ReferenceProfile {
	t.Helper()
	r := newRand(5)
	in := Table{Name: "features", Columns: []Column{{Name: "temp"}, {Name: "rpm"}, {Name: "constant"}}}
	out := Table{Name: "label", Columns: []Column{{Name: "label", Classes: 3}}}
	for range 200 {
		in.Rows = append(in.Rows, []float64{20 + 5*r.NormFloat64(), float64(r.IntN(4000)), 1})
		out.Rows = append(out.Rows, []float64{float64(r.IntN(3))})
	}
	in.Rows[7][0] = math.NaN()
	p, err := NewProfile(in, out, ProfileOptions{Bins: 5})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// regressorProfile is a valid profile of a two-output regressor.
func regressorProfile(t testing.TB) *shoalv1.ReferenceProfile {
	t.Helper()
	r := newRand(6)
	in := Table{Name: "x", Columns: []Column{{Name: "a"}, {Name: "b"}}}
	out := Table{Name: "y", Columns: []Column{{Name: "y0"}, {Name: "y1"}}}
	for range 100 {
		a, b := r.NormFloat64(), r.ExpFloat64()
		in.Rows = append(in.Rows, []float64{a, b})
		out.Rows = append(out.Rows, []float64{a + b, a * b})
	}
	p, err := NewProfile(in, out, ProfileOptions{Bins: 4})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEncodeDecodeProfile(t *testing.T) {
	for _, p := range []*shoalv1.ReferenceProfile{classifierProfile(t), regressorProfile(t)} {
		b, err := EncodeProfile(p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := EncodeProfile(p)
		if err != nil || string(again) != string(b) {
			t.Fatalf("encoding is not deterministic: %v", err)
		}
		got, err := DecodeProfile(b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, p) {
			t.Fatalf("decoded\n%v\nwant\n%v", got, p)
		}
	}
}

// TestDecodeProfileErrors changes one field of a valid profile at a time:
// each change is refused with an error naming the field.
func TestDecodeProfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(p *shoalv1.ReferenceProfile)
		want   string
	}{
		{"schema version", func(p *shoalv1.ReferenceProfile) { p.SchemaVersion = 2 }, "schema_version 2; this build understands 1"},
		{"no features", func(p *shoalv1.ReferenceProfile) { p.Inputs, p.Outputs = nil, nil }, "no inputs and no outputs"},
		{"no input name", func(p *shoalv1.ReferenceProfile) { p.InputName = "" }, "input_name is empty"},
		{"long output name", func(p *shoalv1.ReferenceProfile) { p.OutputName = strings.Repeat("y", 300) }, "output_name is 300 bytes; the limit is 256"},
		{"no feature name", func(p *shoalv1.ReferenceProfile) { p.Inputs[1].Name = "" }, "inputs[1]: name is empty"},
		{"duplicate name", func(p *shoalv1.ReferenceProfile) { p.Inputs[1].Name = "temp"; p.Inputs[1].Reference.Name = "temp" }, `inputs[1] ("temp") has the name of inputs[0]`},
		{"edges descending", func(p *shoalv1.ReferenceProfile) { e := p.Inputs[0].Edges; e[0], e[1] = e[1], e[0] }, `inputs[0] ("temp"): edges[1] =`},
		{"edges equal", func(p *shoalv1.ReferenceProfile) { e := p.Inputs[0].Edges; e[1] = e[0] }, "edges must be strictly ascending"},
		{"edge NaN", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Edges[2] = math.NaN() }, `inputs[0] ("temp"): edges[2] is NaN; edges must be finite`},
		{"edge Inf", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Edges[0] = math.Inf(-1) }, "edges[0] is -Inf"},
		{"too many edges", func(p *shoalv1.ReferenceProfile) {
			p.Inputs[0].Edges = seq(1, MaxBins)
			p.Inputs[0].Reference.BinCounts = make([]uint64, MaxBins+1)
		}, "has 1000 edges (1001 bins); the limit is 1000 bins"},
		{"categorical with edges", func(p *shoalv1.ReferenceProfile) { p.Outputs[0].Edges = []float64{1} }, `outputs[0] ("label"): is categorical but has 1 edges`},
		{"no classes", func(p *shoalv1.ReferenceProfile) { p.Outputs[0].Classes = 0 }, "classes is 0; a categorical feature has 1 to 1000"},
		{"too many classes", func(p *shoalv1.ReferenceProfile) { p.Outputs[0].Classes = MaxBins + 1 }, "classes is 1001"},
		{"classes on a numeric feature", func(p *shoalv1.ReferenceProfile) { p.Inputs[2].Classes = 3 }, `inputs[2] ("constant"): classes is 3 but the feature is not categorical`},
		{"no reference", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Reference = nil }, `inputs[0] ("temp"): reference is missing`},
		{"reference of another feature", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Reference.Name = "rpm" }, `reference: name is "rpm"; want "temp"`},
		{"reference of other bins", func(p *shoalv1.ReferenceProfile) { p.Outputs[0].Reference.BinCounts = []uint64{1, 199} }, "reference: bin_counts has 2 bins; the feature has 3"},
		{"bins do not add up", func(p *shoalv1.ReferenceProfile) { p.Inputs[1].Reference.BinCounts[0]++ }, "reference: bin_counts add up to 201; count is 200"},
		{"bins overflow", func(p *shoalv1.ReferenceProfile) { p.Inputs[1].Reference.BinCounts[0] = math.MaxUint64 }, "bin_counts add up to more than 2^64"},
		{"rows", func(p *shoalv1.ReferenceProfile) { p.Rows = 201 }, `inputs[0] ("temp"): reference: count 199 + missing 0 + nan 1 is not rows, 201`},
		{"min above max", func(p *shoalv1.ReferenceProfile) { s := p.Inputs[0].Reference; s.Min, s.Max = s.Max, s.Min }, "are not an interval"},
		{"max beyond MaxValue", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Reference.Max = 1e39 }, "are not an interval within"},
		{"mean NaN", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Reference.Mean = math.NaN() }, "reference: mean is NaN"},
		{"m2 negative", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Reference.M2 = -1 }, "reference: m2 is -1"},
		{"m2 Inf", func(p *shoalv1.ReferenceProfile) { p.Inputs[0].Reference.M2 = math.Inf(1) }, "reference: m2 is +Inf"},
		{"moments without values", func(p *shoalv1.ReferenceProfile) {
			p.Rows = 0
			for _, fp := range append(p.Inputs, p.Outputs...) {
				fp.Reference = &shoalv1.FeatureStats{Name: fp.Name, BinCounts: make([]uint64, binCount(fp))}
			}
			p.Inputs[2].Reference.Mean = 1
		}, `inputs[2] ("constant"): reference: count is 0 but min, max, mean, m2 are 0, 0, 1, 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := classifierProfile(t)
			tc.change(p)
			b, err := proto.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeProfile(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
			if got != nil {
				t.Fatal("a refused profile is returned")
			}
			if _, err := EncodeProfile(p); err == nil {
				t.Fatal("EncodeProfile accepts it")
			}
		})
	}
}

func TestDecodeProfileBounds(t *testing.T) {
	// 10,001 inputs of 2 bytes each (field 4, length 0), counted before
	// they are decoded.
	var many []byte
	for range MaxFeatures + 1 {
		many = protowire.AppendTag(many, inputsField, protowire.BytesType)
		many = protowire.AppendVarint(many, 0)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "schema_version 0"},
		{"not protobuf", []byte{0xff, 0xff, 0xff}, "not a shoal.v1.ReferenceProfile"},
		{"truncated", []byte{0x22, 0x05, 0x0a}, "not a shoal.v1.ReferenceProfile"},
		{"too many inputs", many, "more than 10000 inputs"},
		{"too large", make([]byte, MaxProfileBytes+1), "is 8388609 bytes; the limit is 8388608"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeProfile(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
		})
	}

	// MaxTotalBins: 1,049 features of 1,000 classes each, 1,049,000 bins.
	p := &shoalv1.ReferenceProfile{SchemaVersion: SchemaVersion, OutputName: "y"}
	for i := range MaxTotalBins/MaxBins + 1 {
		p.Outputs = append(p.Outputs, &shoalv1.FeatureProfile{Name: fmt.Sprint(i), Categorical: true, Classes: MaxBins})
	}
	if _, err := NewAccumulator(p); err == nil || !strings.Contains(err.Error(), `outputs[1048] ("1048") brings the bins to more than 1048576`) {
		t.Fatalf("NewAccumulator of %d bins: %v", len(p.Outputs)*MaxBins, err)
	}
}

// TestDecodeKeepsUnknownFields: a profile from a newer control plane with
// a field this build does not know still decodes.
func TestDecodeKeepsUnknownFields(t *testing.T) {
	b, err := EncodeProfile(classifierProfile(t))
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	b = protowire.AppendVarint(b, 7)
	if _, err := DecodeProfile(b); err != nil {
		t.Fatal(err)
	}
}

func TestValidateStats(t *testing.T) {
	fp := classifierProfile(t).Inputs[0]
	a := newAcc(t, &shoalv1.ReferenceProfile{SchemaVersion: SchemaVersion, InputName: "x", Inputs: []*shoalv1.FeatureProfile{fp}})
	if err := a.Observe([]float64{21, math.NaN(), math.Inf(1), -5, 1e6}, nil); err != nil {
		t.Fatal(err)
	}
	in, _ := a.Snapshot()
	if err := ValidateStats(fp, in[0]); err != nil {
		t.Fatalf("a window's statistics: %v", err)
	}
	in[0].BinCounts = in[0].BinCounts[1:]
	if err := ValidateStats(fp, in[0]); err == nil || !strings.Contains(err.Error(), "bin_counts has 4 bins; the feature has 5") {
		t.Fatalf("statistics of other bins: %v", err)
	}
	if err := ValidateStats(fp, nil); err == nil {
		t.Fatal("nil statistics are valid")
	}
}
