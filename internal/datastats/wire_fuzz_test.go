package datastats

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// FuzzDecodeProfile decodes reference profiles as an agent decodes the one
// in a deployment manifest, allocating in proportion to the bytes. A
// profile it accepts must encode again to bytes that decode to the same
// profile, and must be usable: an Accumulator bins any values with it
// without panicking, into statistics that are valid for the profile, merge
// into its references and compare with them, with each metric in its
// range. Seeds: testdata/fuzz/FuzzDecodeProfile, from
// TestFuzzDecodeProfileCorpus.
func FuzzDecodeProfile(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var p *shoalv1.ReferenceProfile
		var err error
		if n := fuzzcorpus.Allocated(func() { p, err = DecodeProfile(b) }); n > fuzzcorpus.AllocBudget(len(b)) {
			t.Fatalf("decoding a %d-byte profile allocated %d bytes", len(b), n)
		}
		if err != nil {
			if p != nil || err.Error() == "" {
				t.Fatalf("refused with profile %v and error %q", p, err)
			}
			return
		}
		enc, err := EncodeProfile(p)
		if err != nil {
			t.Fatalf("an accepted profile does not encode: %v", err)
		}
		again, err := DecodeProfile(enc)
		if err != nil || !proto.Equal(again, p) {
			t.Fatalf("an accepted profile re-encoded decodes to %v, %v", again, err)
		}
		a, err := NewAccumulator(p)
		if err != nil {
			t.Fatalf("an accepted profile makes no Accumulator: %v", err)
		}
		// Values at and around every edge, and the awkward ones.
		special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1), 1, -1, 0.5, MaxValue, 1e39, -MaxValue}
		observe := func(fps []*shoalv1.FeatureProfile, k int) []float64 {
			row := make([]float64, len(fps))
			for j, fp := range fps {
				if edges := fp.GetEdges(); len(edges) > 0 {
					e := edges[(j+k)%len(edges)]
					row[j] = []float64{e, math.Nextafter(e, math.Inf(-1)), math.Nextafter(e, math.Inf(1))}[k%3]
				} else {
					row[j] = float64(fp.GetClasses()) - float64(k%3)
				}
				if (j+k)%4 == 0 {
					row[j] = special[(j+k)%len(special)]
				}
			}
			return row
		}
		for k := range 6 {
			var in, out []float64
			if len(p.Inputs) > 0 {
				in = observe(p.Inputs, k)
			}
			if len(p.Outputs) > 0 {
				out = observe(p.Outputs, k)
			}
			if err := a.Observe(in, out); err != nil {
				t.Fatalf("observing a row of the profile's width: %v", err)
			}
		}
		inputs, outputs := a.Snapshot()
		check := func(fps []*shoalv1.FeatureProfile, stats []*shoalv1.FeatureStats) {
			for i, fp := range fps {
				s := stats[i]
				if err := ValidateStats(fp, s); err != nil {
					t.Fatalf("statistics of %q are invalid for its profile: %v", fp.Name, err)
				}
				if s.Count+s.Missing+s.Nan != 6 {
					t.Fatalf("statistics of %q count %d values of 6", fp.Name, s.Count+s.Missing+s.Nan)
				}
				if _, err := Merge(fp.Reference, s); errors.Is(err, ErrIncompatible) { // a count may overflow
					t.Fatalf("statistics of %q do not merge into the reference: %v", fp.Name, err)
				}
				d, err := Compare(fp.Reference, s)
				if err != nil {
					if s.Count != 0 && fp.Reference.Count != 0 {
						t.Fatalf("comparing %q: %v", fp.Name, err)
					}
					continue
				}
				if !(d.PSI >= 0 && d.PSI <= 2*math.Log(1/ShareFloor)+1e-9) || !(d.JS >= 0 && d.JS <= 1) || !(d.KS >= 0 && d.KS <= 1) {
					t.Fatalf("drift of %q out of range: %+v", fp.Name, d)
				}
			}
		}
		check(p.Inputs, inputs)
		check(p.Outputs, outputs)
	})
}

func fuzzProfileSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	enc := func(p *shoalv1.ReferenceProfile) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	changed := func(change func(p *shoalv1.ReferenceProfile)) []byte {
		p := classifierProfile(t)
		change(p)
		return enc(p)
	}
	seed := func(name string, valid bool, b []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{b}}
	}
	classifier := enc(classifierProfile(t))
	outputsOnly, err := NewProfile(Table{}, Table{Name: "label", Columns: []Column{{Name: "label", Classes: 2}}, Rows: [][]float64{{0}, {1}, {1}}}, ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unknown := protowire.AppendVarint(protowire.AppendTag(enc(regressorProfile(t)), 99, protowire.VarintType), 7)
	return []fuzzcorpus.Seed{
		seed("classifier", true, classifier),
		seed("regressor", true, enc(regressorProfile(t))),
		seed("outputs-only", true, enc(outputsOnly)),
		seed("unknown-field", true, unknown),
		seed("schema-2", false, changed(func(p *shoalv1.ReferenceProfile) { p.SchemaVersion = 2 })),
		seed("edges-descending", false, changed(func(p *shoalv1.ReferenceProfile) { e := p.Inputs[0].Edges; e[0], e[1] = e[1], e[0] })),
		seed("edge-nan", false, changed(func(p *shoalv1.ReferenceProfile) { p.Inputs[1].Edges[0] = math.NaN() })),
		seed("categorical-with-edges", false, changed(func(p *shoalv1.ReferenceProfile) { p.Outputs[0].Edges = []float64{1} })),
		seed("bins-mismatch", false, changed(func(p *shoalv1.ReferenceProfile) { p.Outputs[0].Reference.BinCounts = []uint64{200} })),
		seed("rows-mismatch", false, changed(func(p *shoalv1.ReferenceProfile) { p.Rows++ })),
		seed("duplicate-name", false, changed(func(p *shoalv1.ReferenceProfile) { p.Inputs[1].Name = "temp"; p.Inputs[1].Reference.Name = "temp" })),
		seed("truncated", false, classifier[:len(classifier)/2]),
		seed("not-protobuf", false, []byte("\xff\xff\xff\xff")),
		seed("empty", false, nil),
	}
}

// TestFuzzDecodeProfileCorpus keeps the committed seeds in step with the
// generator above (-update-fuzz-corpus rewrites them).
func TestFuzzDecodeProfileCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, "FuzzDecodeProfile", fuzzProfileSeeds(t), func(vals []any) error {
		_, err := DecodeProfile(vals[0].([]byte))
		return err
	})
}
