package inference

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// mlp returns a small MLP model whose weights depend on seed, so versions
// built from different seeds give different outputs.
func mlp(t testing.TB, seed uint64) (data []byte, spec onnxbuild.MLPSpec) {
	t.Helper()
	onnxrt.MustInitForTest(t)
	spec = onnxbuild.MLPSpec{Name: "m", Layers: onnxbuild.RandomLayers(seed, 4, 8, 2)}
	data, err := onnxbuild.MLP(spec)
	if err != nil {
		t.Fatal(err)
	}
	return data, spec
}

func open(t testing.TB, seed uint64, version string) *Model {
	t.Helper()
	data, _ := mlp(t, seed)
	m, err := Open(data, Ref{Name: "m", Version: version}, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var row = []float32{0.5, -1, 2, 0.25}

func input() []onnxrt.Tensor {
	return []onnxrt.Tensor{{Name: "input", DataType: onnxrt.FP32, Shape: []int64{1, 4}, Data: append([]float32(nil), row...)}}
}

func closeTo(got, want []float32) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
			return false
		}
	}
	return true
}

func isClosed(m *Model) bool {
	select {
	case <-m.Closed():
		return true
	default:
		return false
	}
}

func TestLoadRunDescribe(t *testing.T) {
	data, spec := mlp(t, 1)
	sum := sha256.Sum256(data)
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ref := Ref{Name: "m", Version: "1", SHA256: strings.ToUpper(hex.EncodeToString(sum[:])), ReleaseSequence: 7}
	m, err := Load(path, ref, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Ref() != ref {
		t.Errorf("Ref = %+v", m.Ref())
	}
	if in := m.Inputs(); len(in) != 1 || in[0].Name != "input" || fmt.Sprint(in[0].Shape) != "[-1 4]" {
		t.Errorf("Inputs = %+v", in)
	}
	if out := m.Outputs(); len(out) != 1 || out[0].Name != "output" || out[0].DataType != onnxrt.FP32 {
		t.Errorf("Outputs = %+v", out)
	}
	// The copies are the caller's to change.
	m.Inputs()[0].Shape[0] = 99
	if s, ok := m.Input("input"); !ok || s.Shape[0] != -1 {
		t.Errorf("Input(input) = %+v, %v after changing a copy", s, ok)
	}
	if _, ok := m.Input("nope"); ok {
		t.Error("Input(nope) found")
	}
	out, err := m.Run(input())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out[0].Data.([]float32), onnxbuild.Forward(spec, row); !closeTo(got, want) {
		t.Errorf("Run = %v; want %v", got, want)
	}
	_, err = m.Run([]onnxrt.Tensor{{Name: "input", DataType: onnxrt.FP32, Shape: []int64{1, 3}, Data: make([]float32, 3)}})
	var ie *onnxrt.InputError
	if !errors.As(err, &ie) || ie.Input != "input" {
		t.Errorf("Run(bad shape) err = %v; want an InputError naming the input", err)
	}
}

func TestLoadErrors(t *testing.T) {
	data, _ := mlp(t, 1)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.onnx")
	junk := filepath.Join(dir, "junk.onnx")
	os.WriteFile(good, data, 0o600)
	os.WriteFile(junk, []byte("not a model"), 0o600)
	opts := onnxrt.Options{IntraOpThreads: 1}

	_, err := Load(good, Ref{Name: "m", Version: "1", SHA256: strings.Repeat("0", 64)}, opts)
	if err == nil || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), "m@1") {
		t.Errorf("digest mismatch: err = %v", err)
	}
	_, err = Load(junk, Ref{Name: "m", Version: "1"}, opts)
	var me *onnxrt.ModelError
	if !errors.As(err, &me) {
		t.Errorf("junk: err = %v; want a ModelError", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.onnx"), Ref{Name: "m"}, opts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
	if _, err := Load(good, Ref{Version: "1"}, opts); err == nil {
		t.Error("empty name accepted")
	}
}

func TestSelfTest(t *testing.T) {
	data, _ := mlp(t, 3)
	sess, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := onnxrt.MakeSelfTest(sess, 9)
	sess.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := open(t, 3, "1")
	defer m.Close()
	if err := m.SelfTest(st); err != nil {
		t.Fatalf("self-test of the same model: %v", err)
	}
	other := open(t, 4, "2") // different weights: must fail the self-test
	defer other.Close()
	if err := other.SelfTest(st); err == nil || !strings.Contains(err.Error(), "m@2") {
		t.Errorf("self-test of a different model: err = %v", err)
	}
	if err := m.SelfTest(nil); err == nil {
		t.Error("nil self-test passed")
	}
}

// TestPredictionsCountsSuccessfulRuns: only Runs that succeed count; the
// self-test does not; Usage reports each active version's count.
func TestPredictionsCountsSuccessfulRuns(t *testing.T) {
	data, _ := mlp(t, 5)
	sess, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := onnxrt.MakeSelfTest(sess, 1)
	sess.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := open(t, 5, "1")
	if err := m.SelfTest(st); err != nil {
		t.Fatal(err)
	}
	if n := m.Predictions(); n != 0 {
		t.Errorf("Predictions after the self-test = %d; want 0", n)
	}
	s := NewSet()
	defer s.Close()
	s.Swap(m)
	for range 3 {
		if _, err := m.Run(input()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Run([]onnxrt.Tensor{{Name: "input", DataType: onnxrt.FP32, Shape: []int64{1, 3}, Data: make([]float32, 3)}}); err == nil {
		t.Fatal("Run with a bad shape succeeded")
	}
	if n := m.Predictions(); n != 3 {
		t.Errorf("Predictions = %d; want 3 (the failed Run does not count)", n)
	}
	other, err := Open(data, Ref{Name: "a", Version: "9"}, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(other)
	want := []Usage{{Ref: Ref{Name: "a", Version: "9"}, Predictions: 0}, {Ref: Ref{Name: "m", Version: "1"}, Predictions: 3}}
	if got := s.Usage(); !slices.Equal(got, want) {
		t.Errorf("Usage = %+v; want %+v", got, want)
	}
	var zero Set
	if got := zero.Usage(); len(got) != 0 {
		t.Errorf("Usage of a zero Set = %+v", got)
	}
}

func TestSwapKeepsSessionUntilLastRelease(t *testing.T) {
	s := NewSet()
	defer s.Close()
	v1, v2 := open(t, 1, "1"), open(t, 2, "2")
	if _, had := s.Swap(v1); had {
		t.Fatal("first Swap reported a previous model")
	}
	m, release, ok := s.Acquire("m")
	if !ok || m != v1 {
		t.Fatalf("Acquire = %v, %v", m, ok)
	}
	_, release2, _ := s.Acquire("m")
	prev, had := s.Swap(v2)
	if !had || prev.Version != "1" {
		t.Fatalf("Swap = %+v, %v", prev, had)
	}
	// v1 is out of the set but two predictions still hold it.
	if isClosed(v1) {
		t.Fatal("v1 closed while held")
	}
	if _, err := v1.Run(input()); err != nil {
		t.Fatalf("run of the swapped-out model: %v", err)
	}
	if m, r, _ := s.Acquire("m"); m != v2 {
		t.Fatalf("Acquire after Swap = %v", m.Ref())
	} else {
		r()
	}
	release()
	if isClosed(v1) {
		t.Fatal("v1 closed with one holder left")
	}
	release2()
	if !isClosed(v1) {
		t.Fatal("v1 not closed after its last release")
	}
	if _, err := v1.Run(input()); err == nil {
		t.Fatal("closed model ran") // shows the concurrency test below can fail
	}
	if isClosed(v2) {
		t.Fatal("active model closed")
	}
}

func TestRemoveNamesRefsClose(t *testing.T) {
	s := NewSet()
	mk := func(name, version string) *Model {
		data, _ := mlp(t, 1)
		m, err := Open(data, Ref{Name: name, Version: version}, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	b, a, c := mk("b model", "1"), mk("a", "2"), mk("c", "3")
	for _, m := range []*Model{b, a, c} {
		s.Swap(m)
	}
	if got := strings.Join(s.Names(), ","); got != "a,b model,c" {
		t.Errorf("Names = %s", got)
	}
	if refs := s.Refs(); len(refs) != 3 || refs[0].Version != "2" || refs[1].Name != "b model" {
		t.Errorf("Refs = %+v", refs)
	}
	if prev, had := s.Remove("b model"); !had || prev.Version != "1" || !isClosed(b) {
		t.Errorf("Remove = %+v, %v; closed %v", prev, had, isClosed(b))
	}
	if _, had := s.Remove("b model"); had {
		t.Error("second Remove found the model")
	}
	if _, _, ok := s.Acquire("b model"); ok {
		t.Error("removed model acquired")
	}
	if err := a.Close(); err != nil || isClosed(a) {
		t.Errorf("Close of a model the set owns: err %v, closed %v", err, isClosed(a))
	}
	s.Close()
	if !isClosed(a) || !isClosed(c) || s.Len() != 0 {
		t.Error("Close left models open")
	}
	late := mk("d", "1")
	if _, had := s.Swap(late); had || !isClosed(late) || s.Len() != 0 {
		t.Error("Swap into a closed set kept the model")
	}
}

func TestSwapOfClosedModelPanics(t *testing.T) {
	m := open(t, 1, "1")
	if err := m.Close(); err != nil || !isClosed(m) {
		t.Fatalf("Close: %v, closed %v", err, isClosed(m))
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Swap of a closed model did not panic")
		}
	}()
	NewSet().Swap(m)
}

func TestZeroSet(t *testing.T) {
	var s Set
	if _, _, ok := s.Acquire("m"); ok || s.Len() != 0 || len(s.Names()) != 0 {
		t.Fatal("zero Set not empty")
	}
	m := open(t, 1, "1")
	s.Swap(m)
	if got, r, ok := s.Acquire("m"); !ok || got != m {
		t.Fatal("zero Set lost a swapped model")
	} else {
		r()
	}
	s.Close()
}

// TestRunsWhileSwapping runs predictions on many goroutines while versions
// are swapped in and out: every run must succeed and give the output of the
// version it acquired, and every replaced version must end up closed.
func TestRunsWhileSwapping(t *testing.T) {
	const versions = 12
	models := make([]*Model, versions)
	want := make(map[string][]float32)
	for i := range models {
		data, spec := mlp(t, uint64(i+1))
		v := fmt.Sprint(i + 1)
		m, err := Open(data, Ref{Name: "m", Version: v}, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		models[i] = m
		want[v] = onnxbuild.Forward(spec, row)
	}
	s := NewSet()
	s.Swap(models[0])

	stop := make(chan struct{})
	var runs atomic.Int64
	ran := make(chan struct{}, 1) // a run finished
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, release, ok := s.Acquire("m")
				if !ok {
					errs <- errors.New("no active model during a swap")
					return
				}
				out, err := m.Run(input())
				v := m.Ref().Version
				release()
				if err != nil {
					errs <- fmt.Errorf("run of version %s: %w", v, err)
					return
				}
				if got := out[0].Data.([]float32); !closeTo(got, want[v]) {
					errs <- fmt.Errorf("version %s gave %v; want %v", v, got, want[v])
					return
				}
				runs.Add(1)
				select {
				case ran <- struct{}{}:
				default:
				}
			}
		}()
	}
	// Swap only after some runs happened since the previous swap, so that
	// swaps and runs interleave even on a slow machine.
	for i := 1; i < versions; i++ {
		for start := runs.Load(); runs.Load() < start+20; {
			select {
			case err := <-errs:
				t.Fatal(err)
			case <-ran:
			}
		}
		prev, had := s.Swap(models[i])
		if !had || prev.Version != fmt.Sprint(i) {
			t.Fatalf("Swap %d = %+v, %v", i, prev, had)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var counted uint64
	for _, m := range models {
		counted += m.Predictions()
	}
	if counted != uint64(runs.Load()) {
		t.Errorf("the versions counted %d predictions; %d runs succeeded", counted, runs.Load())
	}
	for _, m := range models[:versions-1] {
		if !isClosed(m) {
			t.Errorf("version %s not closed after all runs released it", m.Ref().Version)
		}
	}
	s.Close()
	if !isClosed(models[versions-1]) {
		t.Error("last version not closed by Set.Close")
	}
	t.Logf("%d runs across %d swaps", runs.Load(), versions-1)
}

func BenchmarkAcquireRelease(b *testing.B) {
	s := NewSet()
	s.Swap(open(b, 1, "1"))
	defer s.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, release, _ := s.Acquire("m")
			release()
		}
	})
}
