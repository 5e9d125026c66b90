package datastats

import (
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// columnTable returns values as the rows of a one-column table.
func columnTable(values ...float64) Table {
	t := Table{Name: "x", Columns: []Column{{Name: "v"}}}
	for _, v := range values {
		t.Rows = append(t.Rows, []float64{v})
	}
	return t
}

// seq returns from, from+1, ..., to.
func seq(from, to int) []float64 {
	var v []float64
	for i := from; i <= to; i++ {
		v = append(v, float64(i))
	}
	return v
}

func repeat(v float64, n int) []float64 { return slices.Repeat([]float64{v}, n) }

func TestEdges(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name   string
		values []float64
		bins   int
		edges  []float64
		counts []uint64 // the reference bin counts: never 0
	}{
		// 100 distinct values, 4 bins: the cuts aim at 0+100/4 = 25,
		// 25+75/3 = 50 and 50+50/2 = 75, the 26th, 51st and 76th values.
		{"quartiles", seq(1, 100), 4, []float64{26, 51, 76}, []uint64{25, 25, 25, 25}},
		// 10 values, 4 bins: cuts at 0+10/4 = 2, 2+8/3 = 4, 4+6/2 = 7.
		{"uneven", seq(1, 10), 4, []float64{3, 5, 8}, []uint64{2, 2, 3, 3}},
		// One distinct value: no edge, one bin.
		{"constant", repeat(5, 3), 20, nil, []uint64{3}},
		// Two distinct values, 20 bins: a bin each, cut at the larger.
		{"binary", append(repeat(0, 70), repeat(1, 30)...), 20, []float64{1}, []uint64{70, 30}},
		// Three distinct values, rare ones included: a bin each.
		{"few distinct", append(repeat(0, 98), 1, 2), 20, []float64{1, 2}, []uint64{98, 1, 1}},
		{"few distinct, unsorted", []float64{2, 0, 1, 0}, 20, []float64{1, 2}, []uint64{2, 1, 1}},
		// 90 zeros then 1..10, 4 bins: the first cut aims at 25, inside
		// the zeros' run [0,90) which starts at the bin's start, so it
		// moves to the run's end: edge x[90] = 1. Then 90+10/3 = 93 (edge
		// 4) and 93+7/2 = 96 (edge 7).
		{"zero-inflated", append(repeat(0, 90), seq(1, 10)...), 4, []float64{1, 4, 7}, []uint64{90, 3, 3, 4}},
		// 1, 2×6, 3, 4, 5 with 2 bins: the cut aims at 10/2 = 5, inside
		// the run of 2 at [1,7): 4 from its start, 2 from its end, so it
		// cuts at the end: edge x[7] = 3.
		{"run nearer its end", append(append([]float64{1}, repeat(2, 6)...), 3, 4, 5), 2, []float64{3}, []uint64{7, 3}},
		// 1, 2×4, 3 with 2 bins: the cut aims at 3 in the run [1,5),
		// 2 from either end: it cuts at the start, edge 2.
		{"run tie goes to its start", append(append([]float64{1}, repeat(2, 4)...), 3), 2, []float64{2}, []uint64{1, 5}},
		// NaN, ±Inf and values beyond MaxValue are not values to cut.
		{"not finite", []float64{nan, inf, -inf, 1e39, 2, 1}, 20, []float64{2}, []uint64{1, 1}},
		{"nothing finite", []float64{nan, inf}, 20, nil, []uint64{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProfile(columnTable(tc.values...), Table{}, ProfileOptions{Bins: tc.bins})
			if err != nil {
				t.Fatal(err)
			}
			fp := p.Inputs[0]
			if !slices.Equal(fp.Edges, tc.edges) || !slices.Equal(fp.Reference.BinCounts, tc.counts) {
				t.Fatalf("edges %v, counts %v; want %v, %v", fp.Edges, fp.Reference.BinCounts, tc.edges, tc.counts)
			}
		})
	}
}

// TestEdgesNeverEmptyBins checks the package doc's promise on many shapes of
// data: strictly ascending edges, at most the bins asked, and no bin empty
// in the reference.
func TestEdgesNeverEmptyBins(t *testing.T) {
	for bins := 2; bins <= 25; bins++ {
		for _, values := range [][]float64{
			seq(1, 7), seq(1, 1000),
			append(repeat(0, 500), seq(1, 37)...),
			append(append(repeat(-1, 10), repeat(3, 300)...), seq(4, 60)...),
			append(seq(1, 40), repeat(41, 400)...),
		} {
			p, err := NewProfile(columnTable(values...), Table{}, ProfileOptions{Bins: bins})
			if err != nil {
				t.Fatal(err)
			}
			fp := p.Inputs[0]
			if len(fp.Edges)+1 > bins {
				t.Errorf("%d bins asked, %d made", bins, len(fp.Edges)+1)
			}
			if slices.Contains(fp.Reference.BinCounts, 0) {
				t.Errorf("%d bins over %d values: edges %v leave a bin empty: %v", bins, len(values), fp.Edges, fp.Reference.BinCounts)
			}
		}
	}
}

func TestNewProfile(t *testing.T) {
	inputs := Table{
		Name:    "features",
		Columns: []Column{{Name: "x"}, {Name: "flag"}},
		Rows:    [][]float64{{1, 0}, {2, 1}, {3, math.NaN()}, {4, 1}},
	}
	outputs := Table{
		Name:    "label",
		Columns: []Column{{Name: "label", Classes: 3}},
		Rows:    [][]float64{{0}, {2}, {2}, {7}}, // 7 is no class: missing
	}
	p, err := NewProfile(inputs, outputs, ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := &shoalv1.ReferenceProfile{
		SchemaVersion: SchemaVersion,
		InputName:     "features",
		OutputName:    "label",
		Rows:          4,
		Inputs: []*shoalv1.FeatureProfile{
			// x: 1, 2, 3, 4, each a bin; mean 2.5, m2 = 1.5² + 0.5² + 0.5² + 1.5² = 5.
			{Name: "x", Edges: []float64{2, 3, 4}, Reference: &shoalv1.FeatureStats{
				Name: "x", BinCounts: []uint64{1, 1, 1, 1}, Count: 4, Min: 1, Max: 4, Mean: 2.5, M2: 5}},
			// flag: 0, 1, 1 and a NaN; mean 2/3, m2 = (2/3)² + 2(1/3)² = 2/3.
			{Name: "flag", Edges: []float64{1}, Reference: &shoalv1.FeatureStats{
				Name: "flag", BinCounts: []uint64{1, 2}, Count: 3, Nan: 1, Min: 0, Max: 1, Mean: 2.0 / 3, M2: 2.0 / 3}},
		},
		Outputs: []*shoalv1.FeatureProfile{
			// label: 0, 2, 2 and a missing 7; mean 4/3, m2 = (4/3)² + 2(2/3)² = 8/3.
			{Name: "label", Categorical: true, Classes: 3, Reference: &shoalv1.FeatureStats{
				Name: "label", BinCounts: []uint64{1, 0, 2}, Count: 3, Missing: 1, Min: 0, Max: 2, Mean: 4.0 / 3, M2: 8.0 / 3}},
		},
	}
	for i, fp := range append(slices.Clone(p.Inputs), p.Outputs...) {
		w := append(slices.Clone(want.Inputs), want.Outputs...)[i]
		checkStatsEqual(t, fp.Name, fp.Reference, w.Reference)
		fp.Reference.Mean, fp.Reference.M2 = w.Reference.Mean, w.Reference.M2 // checked to rounding
	}
	if !proto.Equal(p, want) {
		t.Fatalf("profile\n%v\nwant\n%v", p, want)
	}
}

// TestProfileBinsAsAgentsDo checks that an Accumulator made from a
// profile, fed the training data, reports exactly the profile's
// references: the control plane compares like with like.
func TestProfileBinsAsAgentsDo(t *testing.T) {
	r := newRand(1)
	in := Table{Name: "x", Columns: []Column{{Name: "a"}, {Name: "b"}, {Name: "c", Classes: 4}}}
	out := Table{Name: "y", Columns: []Column{{Name: "y0"}, {Name: "y1"}}}
	var flatIn, flatOut []float64
	for range 5000 {
		row := []float64{r.NormFloat64(), float64(r.IntN(3)), float64(r.IntN(5))}
		if r.IntN(20) == 0 {
			row[0] = math.NaN()
		}
		in.Rows = append(in.Rows, row)
		o := []float64{r.ExpFloat64(), r.NormFloat64() * 1e6}
		out.Rows = append(out.Rows, o)
		flatIn, flatOut = append(flatIn, row...), append(flatOut, o...)
	}
	p, err := NewProfile(in, out, ProfileOptions{Bins: 10})
	if err != nil {
		t.Fatal(err)
	}
	a := newAcc(t, p)
	if err := a.Observe(flatIn, flatOut); err != nil {
		t.Fatal(err)
	}
	gotIn, gotOut := a.Snapshot()
	for i, s := range append(gotIn, gotOut...) {
		ref := append(slices.Clone(p.Inputs), p.Outputs...)[i].Reference
		if !proto.Equal(s, ref) {
			t.Errorf("live statistics of the training data\n%v\ndiffer from the reference\n%v", s, ref)
		}
	}
}

func TestNewProfileErrors(t *testing.T) {
	good := columnTable(1, 2, 3)
	long := strings.Repeat("n", MaxNameLen+1)
	for _, tc := range []struct {
		name            string
		inputs, outputs Table
		opts            ProfileOptions
		want            string
	}{
		{"no columns", Table{}, Table{}, ProfileOptions{}, "no columns"},
		{"one bin", good, Table{}, ProfileOptions{Bins: 1}, "ask for 1 bins per feature; want 2 to 1000"},
		{"too many bins", good, Table{}, ProfileOptions{Bins: MaxBins + 1}, "1001 bins"},
		{"no rows", Table{Name: "x", Columns: []Column{{Name: "v"}}}, Table{}, ProfileOptions{}, "training inputs have no rows"},
		{"rows without columns", good, Table{Name: "y", Rows: [][]float64{{1}}}, ProfileOptions{}, "training outputs have 1 rows but no columns"},
		{"no tensor name", Table{Columns: good.Columns, Rows: good.Rows}, Table{}, ProfileOptions{}, "set Table.Name to the model's input name"},
		{"short row", Table{Name: "x", Columns: []Column{{Name: "a"}, {Name: "b"}}, Rows: [][]float64{{1, 2}, {3}}}, Table{}, ProfileOptions{}, "training inputs row 1 has 1 values; there are 2 columns"},
		{"different lengths", good, columnTable(1), ProfileOptions{}, "training inputs have 3 rows but outputs 1"},
		{"negative classes", good, Table{Name: "y", Columns: []Column{{Name: "c", Classes: -1}}, Rows: [][]float64{{0}, {0}, {0}}}, ProfileOptions{}, `outputs column 0 ("c") has -1 classes`},
		{"too many classes", good, Table{Name: "y", Columns: []Column{{Name: "c", Classes: MaxBins + 1}}, Rows: [][]float64{{0}, {0}, {0}}}, ProfileOptions{}, "has 1001 classes"},
		{"empty column name", Table{Name: "x", Columns: []Column{{}}, Rows: [][]float64{{1}}}, Table{}, ProfileOptions{}, "inputs[0]: name is empty"},
		{"long column name", Table{Name: "x", Columns: []Column{{Name: long}}, Rows: [][]float64{{1}}}, Table{}, ProfileOptions{}, "inputs[0]: name is 257 bytes"},
		{"long tensor name", Table{Name: long, Columns: good.Columns, Rows: good.Rows}, Table{}, ProfileOptions{}, "input_name is 257 bytes"},
		{"duplicate columns", Table{Name: "x", Columns: []Column{{Name: "a"}, {Name: "a"}}, Rows: [][]float64{{1, 2}}}, Table{}, ProfileOptions{}, `inputs[1] ("a") has the name of inputs[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProfile(tc.inputs, tc.outputs, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want an error containing %q", p, err, tc.want)
			}
		})
	}
}

// TestOutputsOnly profiles a classifier's predictions with no inputs.
func TestOutputsOnly(t *testing.T) {
	p, err := NewProfile(Table{}, Table{Name: "label", Columns: []Column{{Name: "label", Classes: 2}}, Rows: [][]float64{{0}, {1}, {1}}}, ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.InputName != "" || len(p.Inputs) != 0 || p.Rows != 3 || !slices.Equal(p.Outputs[0].Reference.BinCounts, []uint64{1, 2}) {
		t.Fatalf("profile %v", p)
	}
}
