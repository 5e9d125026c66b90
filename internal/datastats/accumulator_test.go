package datastats

import (
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func TestBinning(t *testing.T) {
	edges := []float64{-1, 0, 2.5}
	for _, tc := range []struct {
		v   float64
		bin int // -1: not binned
	}{
		{math.Inf(-1), -1},
		{-MaxValue, 0},
		{-1e30, 0},
		{math.Nextafter(-1, math.Inf(-1)), 0},
		{-1, 1}, // a value at an edge goes to the bin above it
		{-0.5, 1},
		{math.Copysign(0, -1), 2}, // -0 == 0: at the edge 0
		{0, 2},
		{math.Nextafter(2.5, 0), 2},
		{2.5, 3},
		{MaxValue, 3},
		{math.Nextafter(MaxValue, math.Inf(1)), -1}, // beyond float32: missing
		{math.Inf(1), -1},
		{math.NaN(), -1},
	} {
		got := binOf(keysOf(edges), keyOf(tc.v))
		s := statsOf(t, edges, []float64{tc.v})
		want := make([]uint64, 4)
		if tc.bin >= 0 {
			want[tc.bin] = 1
			if got != tc.bin {
				t.Errorf("binOf(%v) = %d; want %d", tc.v, got, tc.bin)
			}
		}
		if !slices.Equal(s.BinCounts, want) {
			t.Errorf("%v: bin counts %v; want %v", tc.v, s.BinCounts, want)
		}
	}
	// No edges: one bin takes every value.
	if got := binOf(nil, keyOf(-5)); got != 0 {
		t.Errorf("binOf(nil) = %d; want 0", got)
	}
}

// TestValueRules checks which counter each kind of value lands in.
func TestValueRules(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	a := newAcc(t, binsProfile(3, []float64{1}))
	inputs := []float64{0.5, nan, inf, -inf, 1e39, -1e39, 7}
	labels := []float64{0, 1, 2, 2, 3, -1, 0.5, nan, inf, math.Copysign(0, -1)}
	for i, l := range labels {
		var in []float64
		if i < len(inputs) {
			in = inputs[i : i+1]
		}
		if err := a.Observe(in, []float64{l}); err != nil {
			t.Fatal(err)
		}
	}
	in, out := a.Snapshot()
	want := []*shoalv1.FeatureStats{
		// 0.5 and 7 are binned; NaN is nan; ±Inf and ±1e39 are missing.
		// mean 3.75, m2 = 2 × 3.25² = 21.125.
		{Name: "f0", BinCounts: []uint64{1, 1}, Count: 2, Missing: 4, Nan: 1, Min: 0.5, Max: 7, Mean: 3.75, M2: 21.125},
		// Classes 0, 1, 2, 2 and -0 (class 0) are binned; 3, -1, 0.5 and
		// +Inf are no class index: missing; NaN is nan. mean 1, m2 = 1+0+1+1+1 = 4;
		// min is -0, below 0 for min().
		{Name: "label", BinCounts: []uint64{2, 1, 2}, Count: 5, Missing: 4, Nan: 1, Min: math.Copysign(0, -1), Max: 2, Mean: 1, M2: 4},
	}
	for i, got := range append(in, out...) {
		if !proto.Equal(got, want[i]) {
			t.Errorf("got\n%v\nwant\n%v", got, want[i])
		}
	}
}

// TestObserveTypes feeds the same rows as each element type a tensor may
// hold.
func TestObserveTypes(t *testing.T) {
	p := binsProfile(2, []float64{1}, []float64{2})
	want := newAcc(t, p)
	if err := want.Observe([]float64{0, 1, 1, 3}, []float64{1, 0}); err != nil {
		t.Fatal(err)
	}
	wantIn, wantOut := want.Snapshot()
	for _, tc := range []struct {
		name    string
		in, out any
	}{
		{"float32", []float32{0, 1, 1, 3}, []float32{1, 0}},
		{"float64", []float64{0, 1, 1, 3}, []float64{1, 0}},
		{"int8", []int8{0, 1, 1, 3}, []int8{1, 0}},
		{"int16", []int16{0, 1, 1, 3}, []int16{1, 0}},
		{"int32", []int32{0, 1, 1, 3}, []int32{1, 0}},
		{"int64", []int64{0, 1, 1, 3}, []int64{1, 0}},
		{"uint8", []uint8{0, 1, 1, 3}, []uint8{1, 0}},
		{"uint16", []uint16{0, 1, 1, 3}, []uint16{1, 0}},
		{"uint32", []uint32{0, 1, 1, 3}, []uint32{1, 0}},
		{"uint64", []uint64{0, 1, 1, 3}, []uint64{1, 0}},
		{"int64 labels, float32 inputs", []float32{0, 1, 1, 3}, []int64{1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcc(t, p)
			if err := a.Observe(tc.in, tc.out); err != nil {
				t.Fatal(err)
			}
			in, out := a.Snapshot()
			for i, s := range append(in, out...) {
				if w := append(slices.Clone(wantIn), wantOut...)[i]; !proto.Equal(s, w) {
					t.Errorf("got\n%v\nwant\n%v", s, w)
				}
			}
		})
	}
	t.Run("bool", func(t *testing.T) {
		a := newAcc(t, p)
		if err := a.Observe([]bool{false, true, true, true}, []bool{true, false}); err != nil {
			t.Fatal(err)
		}
		in, out := a.Snapshot()
		if !slices.Equal(in[1].BinCounts, []uint64{2, 0}) || !slices.Equal(out[0].BinCounts, []uint64{1, 1}) {
			t.Fatalf("bools binned as %v, %v; want [2 0], [1 1]", in[1].BinCounts, out[0].BinCounts)
		}
	})
}

func TestObserveErrors(t *testing.T) {
	twoIn := binsProfile(2, nil, nil)
	noOut := binsProfile(0, nil)
	for _, tc := range []struct {
		name    string
		p       *shoalv1.ReferenceProfile
		in, out any
		want    string
	}{
		{"strings", twoIn, []string{"a", "b"}, nil, "observed inputs of type []string"},
		{"a scalar", twoIn, nil, 3.0, "observed outputs of type float64"},
		{"half a row", twoIn, []float64{1, 2, 3}, nil, "observed 3 inputs values, not a whole number of rows of 2"},
		{"rows differ", twoIn, []float64{1, 2, 3, 4}, []int64{1}, "observed 2 input rows but 1 output rows"},
		{"no outputs profiled", noOut, []float64{1}, []int64{1}, "observed 1 outputs values, but the profile has no outputs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcc(t, tc.p)
			err := a.Observe(tc.in, tc.out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
			in, out := a.Snapshot()
			for _, s := range append(in, out...) {
				if s.Count+s.Missing+s.Nan != 0 {
					t.Fatalf("a refused observation was recorded: %v", s)
				}
			}
		})
	}
}

func TestObserveEmpty(t *testing.T) {
	a := newAcc(t, binsProfile(2, []float64{0}))
	for _, in := range []any{nil, []float64{}, []float32(nil)} {
		if err := a.Observe(in, nil); err != nil {
			t.Fatal(err)
		}
	}
	in, out := a.Snapshot()
	want := []*shoalv1.FeatureStats{
		{Name: "f0", BinCounts: []uint64{0, 0}},
		{Name: "label", BinCounts: []uint64{0, 0}},
	}
	for i, s := range append(in, out...) {
		if !proto.Equal(s, want[i]) {
			t.Errorf("empty statistics %v; want %v", s, want[i])
		}
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	a := newAcc(t, binsProfile(3, []float64{0, 1, 2}, []float64{5}, nil, []float64{-1, 1}))
	var in, out any = []float32{0.5, 5, 1, 2, -3, 6, 0, 0}, []int64{2, 0}
	if n := testing.AllocsPerRun(100, func() {
		if err := a.Observe(in, out); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Observe allocates %v times a call", n)
	}
}

func TestSnapshotAndReset(t *testing.T) {
	a := newAcc(t, binsProfile(2, []float64{10}))
	observe := func(in []float64, out []float64) {
		t.Helper()
		if err := a.Observe(in, out); err != nil {
			t.Fatal(err)
		}
	}
	observe([]float64{1, 20}, []float64{0, 1})
	in1, out1 := a.SnapshotAndReset()
	observe([]float64{30}, []float64{1})
	in2, _ := a.Snapshot()
	in2[0].BinCounts[1] = 99 // a snapshot is a copy
	in3, out3 := a.Snapshot()
	for _, c := range []struct {
		got  *shoalv1.FeatureStats
		want *shoalv1.FeatureStats
	}{
		{in1[0], &shoalv1.FeatureStats{Name: "f0", BinCounts: []uint64{1, 1}, Count: 2, Min: 1, Max: 20, Mean: 10.5, M2: 180.5}},
		{out1[0], &shoalv1.FeatureStats{Name: "label", BinCounts: []uint64{1, 1}, Count: 2, Min: 0, Max: 1, Mean: 0.5, M2: 0.5}},
		{in3[0], &shoalv1.FeatureStats{Name: "f0", BinCounts: []uint64{0, 1}, Count: 1, Min: 30, Max: 30, Mean: 30}},
		{out3[0], &shoalv1.FeatureStats{Name: "label", BinCounts: []uint64{0, 1}, Count: 1, Min: 1, Max: 1, Mean: 1}},
	} {
		if !proto.Equal(c.got, c.want) {
			t.Errorf("got\n%v\nwant\n%v", c.got, c.want)
		}
	}
	a.Reset()
	in4, out4 := a.Snapshot()
	if in4[0].Count != 0 || out4[0].Count != 0 || in4[0].Mean != 0 || slices.Max(in4[0].BinCounts) != 0 {
		t.Fatalf("after Reset: %v, %v", in4, out4)
	}
}

// TestConcurrentObserve observes from many goroutines while windows are
// cut: every observation lands in exactly one window, with its inputs and
// outputs together.
func TestConcurrentObserve(t *testing.T) {
	const workers, rows = 8, 400
	p := binsProfile(4, []float64{-1, 0, 1}, []float64{0})
	a := newAcc(t, p)
	whole := newAcc(t, p) // the same rows, observed one goroutine at a time
	data := make([][]float64, workers)
	labels := make([][]int64, workers)
	for w := range workers {
		r := newRand(uint64(w))
		for range rows {
			data[w] = append(data[w], r.NormFloat64(), r.NormFloat64())
			labels[w] = append(labels[w], int64(r.IntN(5)))
		}
		if err := whole.Observe(data[w], labels[w]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rows {
				if err := a.Observe(data[w][2*i:2*i+2], labels[w][i:i+1]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var windows [][]*shoalv1.FeatureStats
	for cut := true; cut; {
		select {
		case <-done:
			cut = false
		default:
		}
		in, out := a.SnapshotAndReset()
		if nIn, nOut := in[0].Count+in[0].Missing+in[0].Nan, out[0].Count+out[0].Missing+out[0].Nan; nIn != nOut {
			t.Fatalf("a window holds inputs of %d rows but outputs of %d", nIn, nOut)
		}
		windows = append(windows, append(in, out...))
	}
	total := windows[0]
	for _, w := range windows[1:] {
		if err := MergeAllInto(total, w); err != nil {
			t.Fatal(err)
		}
	}
	wantIn, wantOut := whole.Snapshot()
	for i, want := range append(wantIn, wantOut...) {
		checkStatsEqual(t, want.Name, total[i], want)
	}
	t.Logf("%d windows", len(windows))
}

// TestBinOfMatchesLinearScan checks the branch-free search over integer
// keys against the definition, on random edges and values at, between and
// around them.
func TestBinOfMatchesLinearScan(t *testing.T) {
	r := newRand(9)
	for range 2000 {
		edges := randomEdges(r)
		values := []float64{r.NormFloat64() * 200, math.Inf(-1), math.Inf(1)}
		for _, e := range edges {
			values = append(values, e, math.Nextafter(e, math.Inf(-1)), math.Nextafter(e, math.Inf(1)))
		}
		for _, v := range values {
			want := 0
			for _, e := range edges {
				if e <= v {
					want++
				}
			}
			if got := binOf(keysOf(edges), keyOf(v)); got != want {
				t.Fatalf("binOf(%v, %v) = %d; want %d", edges, v, got, want)
			}
		}
	}
}
