package training

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// datasetDir holds the shared data sets (see its README.md); $SHOAL_DATASETS
// overrides it.
func datasetDir() string {
	if d := os.Getenv("SHOAL_DATASETS"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "..", "..", "shared", "datasets")
}

var datasets sync.Map // file name → *loaded

type loaded struct {
	once sync.Once
	data Data
	err  error
}

// loadCSV reads a shared data set: a header row, numeric features, and the
// label in column labelCol (-1: the last); classes are the labels' distinct
// values, sorted. It is a loader for these tests only: the product's CSV
// parser is the dataset package. It skips the test when the file is absent.
func loadCSV(t testing.TB, name string, labelCol int) Data {
	t.Helper()
	v, _ := datasets.LoadOrStore(name, &loaded{})
	l := v.(*loaded)
	l.once.Do(func() { l.data, l.err = readCSV(filepath.Join(datasetDir(), name), labelCol) })
	if errors.Is(l.err, fs.ErrNotExist) {
		t.Skipf("data set %s is absent (%v); it lives in the shared datasets folder next to the repository, or set $SHOAL_DATASETS", name, l.err)
	}
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.data
}

func readCSV(path string, labelCol int) (Data, error) {
	f, err := os.Open(path)
	if err != nil {
		return Data{}, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return Data{}, err
	}
	if labelCol < 0 {
		labelCol = len(header) - 1
	}
	var d Data
	for i, h := range header {
		if i == labelCol {
			d.Target = strings.TrimSpace(h)
		} else {
			d.Features = append(d.Features, strings.TrimSpace(h))
		}
	}
	var labels []string
	for line := 2; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Data{}, err
		}
		row := make([]float64, 0, len(rec)-1)
		for i, s := range rec {
			if i == labelCol {
				labels = append(labels, strings.TrimSpace(s))
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return Data{}, err
			}
			row = append(row, v)
		}
		d.X = append(d.X, row)
	}
	d.Classes = slices.Compact(slices.Sorted(slices.Values(labels)))
	for _, l := range labels {
		d.Y = append(d.Y, float64(slices.Index(d.Classes, l)))
	}
	return d, nil
}

func TestIris(t *testing.T) {
	d := loadCSV(t, "iris.csv", -1)
	if len(d.X) != 150 || len(d.Classes) != 3 || d.Features[1] != "Sepal width" {
		t.Fatalf("iris: %d rows, classes %v, features %q", len(d.X), d.Classes, d.Features)
	}
	for _, spec := range []Spec{
		{Trainer: Logistic, Task: Classification, Seed: 1, Epochs: 200},
		{Trainer: MLP, Task: Classification, Seed: 1, Hidden: []int{16}, LearningRate: 0.01, Epochs: 200},
	} {
		t.Run(spec.Trainer, func(t *testing.T) {
			res, err := Builtin{}.Train(context.Background(), spec, d, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: holdout accuracy %.3f, macro F1 %.3f over %d rows; %d epochs, best %d",
				spec.Trainer, res.Metrics[MetricAccuracy], res.Metrics[MetricMacroF1], res.HoldoutRows, res.Epochs, res.BestEpoch)
			if acc := res.Metrics[MetricAccuracy]; acc < 0.9 {
				t.Errorf("holdout accuracy %.3f; want ≥ 0.9", acc)
			}
			if res.HoldoutRows != 30 {
				t.Errorf("holdout rows %d; want 30 (a stratified fifth of 150)", res.HoldoutRows)
			}
		})
	}
}

// mnistSpec is the MLP the MNIST test and benchmark train.
var mnistSpec = Spec{Trainer: MLP, Task: Classification, Hidden: []int{128}, Epochs: 8, BatchSize: 64, LearningRate: 0.001, Seed: 1, Patience: 3}

// TestMNIST trains on the 5,000-row subset and measures the exported model,
// run by ONNX Runtime, on the 500 test rows.
func TestMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("trains an MLP on 5,000 MNIST rows (seconds; more with -race)")
	}
	trainSet := loadCSV(t, "mnist_train.csv", 0)
	test := loadCSV(t, "mnist_test.csv", 0)
	if len(trainSet.Features) != 784 || len(trainSet.Classes) != 10 {
		t.Fatalf("mnist: %d features, classes %v", len(trainSet.Features), trainSet.Classes)
	}
	onnxrt.MustInitForTest(t)
	var epochs []int
	res, m, err := train(context.Background(), mnistSpec, trainSet, func(p Progress) { epochs = append(epochs, p.Epoch) })
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range epochs {
		if e != i+1 {
			t.Fatalf("progress epochs %v", epochs)
		}
	}
	outs := runONNX(t, res, test.X)
	probs, labels := outs[0].Data.([]float32), outs[1].Data.([]int64)
	correct := 0
	for i, l := range labels {
		if float64(l) == test.Y[i] {
			correct++
		}
	}
	acc := float64(correct) / float64(len(labels))
	t.Logf("MNIST: test accuracy %.3f (ONNX Runtime, %d rows); holdout %.3f; %d epochs, best %d", acc, len(labels), res.Metrics[MetricAccuracy], res.Epochs, res.BestEpoch)
	if acc < 0.85 {
		t.Errorf("test accuracy %.3f; want ≥ 0.85", acc)
	}
	logits, p := m.outputs(test.X), make([]float64, 10)
	for r := range test.X {
		softmax(p, logits[r*10:(r+1)*10])
		for j, v := range p {
			if d := math.Abs(float64(probs[r*10+j]) - v); d > 1e-4 {
				t.Fatalf("row %d class %d: ONNX Runtime %g, Go %g", r, j, probs[r*10+j], v)
			}
		}
	}
}

// BenchmarkTrainMNIST times training the 784-128-10 MLP on the 5,000-row
// MNIST subset (4,000 rows after the holdout and validation splits) for
// a fixed 5 epochs, and reports the time per epoch.
func BenchmarkTrainMNIST(b *testing.B) {
	d := loadCSV(b, "mnist_train.csv", 0)
	spec := mnistSpec
	spec.Epochs, spec.Patience = 5, -1
	for b.Loop() {
		if _, err := (Builtin{}).Train(context.Background(), spec, d, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N*spec.Epochs), "s/epoch")
}

// runONNX runs the model with ONNX Runtime on rows x.
func runONNX(t testing.TB, res *Result, x [][]float64) []onnxrt.Tensor {
	t.Helper()
	s, err := onnxrt.Open(res.Model, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	width := len(x[0])
	in := make([]float32, 0, len(x)*width)
	for _, row := range x {
		for _, v := range row {
			in = append(in, float32(v))
		}
	}
	outs, err := s.Run([]onnxrt.Tensor{{Name: res.Input, DataType: onnxrt.FP32, Shape: []int64{int64(len(x)), int64(width)}, Data: in}})
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if o.Name != res.Outputs[i] {
			t.Fatalf("output %d is %q; the result names %q", i, o.Name, res.Outputs)
		}
	}
	return outs
}
