package training

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// synthetic is a data set of rows with features on different scales and
// offsets: three classes by a non-linear rule, or a smooth value. Every
// seventh row misses a value when missing is set.
func synthetic(task Task, rows int, missing bool, seed uint64) Data {
	r := rand.New(rand.NewPCG(seed, 1))
	d := Data{Features: []string{"temperature", "pressure", "vibration", "rpm"}, Target: "state"}
	if task == Classification {
		d.Classes = []string{"ok", "worn", "broken"}
	}
	for i := range rows {
		x := []float64{20 + 5*r.NormFloat64(), 1000 + 50*r.NormFloat64(), r.Float64(), 3000 * r.Float64()}
		s := (x[0]-20)/5 + x[2]*x[2]*3 - (x[1]-1000)/50
		if task == Classification {
			d.Y = append(d.Y, float64(min(2, max(0, int(s+1.5)))))
		} else {
			d.Y = append(d.Y, 10*math.Sin(s)+x[3]/1000)
		}
		if missing && i%7 == 3 {
			x[i%len(x)] = math.NaN()
		}
		d.X = append(d.X, x)
	}
	return d
}

// TestONNXMatchesForward runs the exported models with ONNX Runtime on
// every row and compares them with the trainer's own forward pass.
func TestONNXMatchesForward(t *testing.T) {
	onnxrt.MustInitForTest(t)
	for _, tc := range []struct {
		spec    Spec
		missing bool
	}{
		{Spec{Trainer: Logistic, Task: Classification}, false},
		{Spec{Trainer: Linear, Task: Regression}, true},
		{Spec{Trainer: MLP, Task: Classification, Hidden: []int{16, 8}}, true},
		{Spec{Trainer: MLP, Task: Regression, Hidden: []int{12}, Activation: "tanh"}, false},
		{Spec{Trainer: MLP, Task: Classification, Hidden: []int{10}, Activation: "tanh", L2: 0.01}, false},
	} {
		t.Run(fmt.Sprintf("%s-%s-%v-%s-missing=%v", tc.spec.Trainer, tc.spec.Task, tc.spec.Hidden, tc.spec.Activation, tc.missing), func(t *testing.T) {
			spec := tc.spec
			spec.Seed, spec.Epochs, spec.LearningRate = 7, 20, 0.01
			d := synthetic(spec.Task, 300, tc.missing, 3)
			res, m, err := train(context.Background(), spec, d, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(res.Imputed) > 0; got != tc.missing {
				t.Fatalf("imputed %v", res.Imputed)
			}
			outs := runONNX(t, res, d.X)
			want := m.outputs(d.X)
			width := m.width()
			got := outs[0].Data.([]float32)
			var worst float64
			for r := range d.X {
				w := want[r*width : (r+1)*width]
				if spec.Task == Classification {
					p := make([]float64, width)
					softmax(p, w)
					w = p
					if top := int(Argmax(w, width)[0]); outs[1].Data.([]int64)[r] != int64(top) && w[top]-secondLargest(w) > 1e-4 {
						t.Errorf("row %d: ONNX label %d; Go's %d", r, outs[1].Data.([]int64)[r], top)
					}
				}
				for j, v := range w {
					worst = max(worst, math.Abs(float64(got[r*width+j])-v))
				}
			}
			t.Logf("largest difference between ONNX Runtime and Go: %.2g over %d rows (metrics %v)", worst, len(d.X), res.Metrics)
			if worst > 1e-4 {
				t.Errorf("ONNX Runtime differs from the trainer's forward pass by %g", worst)
			}
		})
	}
}

func secondLargest(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)-2]
}

func TestImputation(t *testing.T) {
	onnxrt.MustInitForTest(t)
	d := synthetic(Regression, 200, true, 4)
	res, err := Builtin{}.Train(context.Background(), Spec{Trainer: MLP, Task: Regression, Hidden: []int{4}, Epochs: 3, Seed: 1}, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	missing := map[string]int{}
	for _, row := range d.X {
		for j, v := range row {
			if math.IsNaN(v) {
				missing[d.Features[j]]++
			}
		}
	}
	if len(res.Imputed) != len(d.Features) {
		t.Fatalf("imputed %+v; every feature has missing values", res.Imputed)
	}
	row := []float64{21, 990, 0.5, 1000}
	probe := [][]float64{slices.Clone(row)}
	for j, im := range res.Imputed {
		if im.Feature != d.Features[j] || im.Missing != missing[im.Feature] {
			t.Errorf("imputation %d: %+v; want feature %q, %d missing", j, im, d.Features[j], missing[d.Features[j]])
		}
		nan, mean := slices.Clone(row), slices.Clone(row)
		nan[j], mean[j] = math.NaN(), im.Value
		probe = append(probe, nan, mean)
	}
	out := runONNX(t, res, probe)[0].Data.([]float32)
	for j := range res.Imputed {
		if nan, mean := out[1+2*j], out[2+2*j]; nan != mean || math.IsNaN(float64(nan)) {
			t.Errorf("feature %d: missing gives %g, the mean %g", j, nan, mean)
		}
	}
}

func TestReproducible(t *testing.T) {
	d := synthetic(Classification, 200, true, 5)
	spec := Spec{Trainer: MLP, Task: Classification, Hidden: []int{8, 8}, Epochs: 5, Seed: 11}
	a, err := Builtin{}.Train(context.Background(), spec, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Builtin{}.Train(context.Background(), spec, d, nil)
	if !bytes.Equal(a.Model, b.Model) {
		t.Error("the same seed gave different models")
	}
	spec.Seed++
	c, _ := Builtin{}.Train(context.Background(), spec, d, nil)
	if bytes.Equal(a.Model, c.Model) {
		t.Error("another seed gave the same model")
	}
}

// TestEarlyStoppingRestoresBest trains until the validation loss rises, and
// checks that the model is the one a run stopped at the best epoch ends
// with: the same bytes.
func TestEarlyStoppingRestoresBest(t *testing.T) {
	d := synthetic(Classification, 150, false, 6)
	// Noisy labels and a wide network overfit quickly.
	r := rand.New(rand.NewPCG(1, 1))
	for i := range d.Y {
		if r.IntN(3) == 0 {
			d.Y[i] = float64(r.IntN(3))
		}
	}
	spec := Spec{Trainer: MLP, Task: Classification, Hidden: []int{64, 64}, Epochs: 500, LearningRate: 0.01, Patience: 5, Seed: 3, ValidationSplit: 0.3}
	res, err := Builtin{}.Train(context.Background(), spec, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Epochs == spec.Epochs || res.Epochs != res.BestEpoch+spec.Patience || len(res.History) != res.Epochs {
		t.Fatalf("ran %d of %d epochs, best %d, patience %d", res.Epochs, spec.Epochs, res.BestEpoch, spec.Patience)
	}
	for _, p := range res.History {
		if p.ValidationLoss < res.History[res.BestEpoch-1].ValidationLoss {
			t.Fatalf("epoch %d has a lower validation loss than the best, %d", p.Epoch, res.BestEpoch)
		}
	}
	spec.Epochs = res.BestEpoch
	short, err := Builtin{}.Train(context.Background(), spec, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Model, short.Model) {
		t.Errorf("the model is not the best epoch's (%d of %d)", res.BestEpoch, res.Epochs)
	}
}

func TestProgressAndCancel(t *testing.T) {
	d := synthetic(Regression, 100, false, 7)
	spec := Spec{Trainer: MLP, Task: Regression, Epochs: 50, Patience: -1, Seed: 1}
	var got []Progress
	res, err := Builtin{}.Train(context.Background(), spec, d, func(p Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 || res.Epochs != 50 || !slices.Equal(got, res.History) {
		t.Fatalf("%d progress calls, %d epochs", len(got), res.Epochs)
	}
	for i, p := range got {
		if p.Epoch != i+1 || p.Epochs != 50 || p.Metric != MetricRMSE || !(p.TrainLoss > 0) || math.Abs(p.ValidationMetric-math.Sqrt(p.ValidationLoss)) > 1e-9 {
			t.Fatalf("progress %d: %+v", i, p)
		}
	}
	if got[len(got)-1].TrainLoss >= got[0].TrainLoss {
		t.Errorf("training loss went from %g to %g", got[0].TrainLoss, got[len(got)-1].TrainLoss)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err = Builtin{}.Train(ctx, spec, d, func(p Progress) {
		if calls++; p.Epoch == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || calls != 2 {
		t.Errorf("cancelled at epoch 2: %d calls, error %v", calls, err)
	}
}

func TestTrainRejects(t *testing.T) {
	good := synthetic(Classification, 50, false, 8)
	spec := Spec{Trainer: Logistic, Task: Classification, Epochs: 2}
	with := func(f func(*Spec, *Data)) (Spec, Data) {
		s, d := spec, good
		d.X = slices.Clone(d.X)
		d.Y = slices.Clone(d.Y)
		f(&s, &d)
		return s, d
	}
	for _, tc := range []struct {
		name string
		f    func(*Spec, *Data)
		want string
	}{
		{"no trainer", func(s *Spec, _ *Data) { s.Trainer = "" }, "trainer is empty"},
		{"unknown trainer", func(s *Spec, _ *Data) { s.Trainer = "xgboost" }, `trainer "xgboost" is not built in`},
		{"logistic hidden", func(s *Spec, _ *Data) { s.Hidden = []int{3} }, "has no hidden layers"},
		{"no task", func(s *Spec, _ *Data) { s.Task = "" }, "task is empty"},
		{"bad activation", func(s *Spec, _ *Data) { s.Trainer, s.Activation = MLP, "sigmoid" }, `activation "sigmoid" is unknown`},
		{"zero width", func(s *Spec, _ *Data) { s.Trainer, s.Hidden = MLP, []int{4, 0} }, "hidden layer 1 has width 0"},
		{"learning rate", func(s *Spec, _ *Data) { s.LearningRate = -1 }, "learning_rate -1"},
		{"holdout", func(s *Spec, _ *Data) { s.Holdout = 1 }, "holdout 1 is out of range"},
		{"patience", func(s *Spec, _ *Data) { s.Patience = -2 }, "patience -2"},
		{"no rows", func(_ *Spec, d *Data) { d.X, d.Y = nil, nil }, "no rows"},
		{"targets", func(_ *Spec, d *Data) { d.Y = d.Y[1:] }, "50 rows of features but 49 targets"},
		{"ragged", func(_ *Spec, d *Data) { d.X[3] = []float64{1, 2} }, "row 3 has 2 features; row 0 has 4"},
		{"infinite", func(_ *Spec, d *Data) { d.X[2] = []float64{1, math.Inf(1), 0, 0} }, `row 2, feature "pressure" is +Inf`},
		{"class index", func(_ *Spec, d *Data) { d.Y[4] = 1.5 }, `row 4: target "state" is 1.5, which is not a class index`},
		{"class beyond names", func(_ *Spec, d *Data) { d.Y[5] = 3 }, "not a class index (0 to 2)"},
		{"missing target", func(_ *Spec, d *Data) { d.Y[6] = math.NaN() }, `row 6: target "state" is NaN`},
		{"one class", func(_ *Spec, d *Data) { d.Classes = []string{"ok"}; clear(d.Y) }, "at least two classes"},
		{"empty column", func(_ *Spec, d *Data) {
			for i := range d.X {
				d.X[i] = []float64{1, math.NaN(), 2, 3}
			}
		}, `feature "pressure" has no values`},
		{"too few rows", func(_ *Spec, d *Data) { d.X, d.Y = d.X[:2], d.Y[:2] }, "too few to split"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, d := with(tc.f)
			_, err := Builtin{}.Train(context.Background(), s, d, nil)
			if !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want Invalid with %q", err, tc.want)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	y := make([]float64, 0, 161)
	for c, n := range []int{100, 50, 10, 1} {
		for range n {
			y = append(y, float64(c))
		}
	}
	train, held := Split(y, 0.2, true, 1)
	if len(train)+len(held) != len(y) {
		t.Fatalf("%d + %d rows of %d", len(train), len(held), len(y))
	}
	all := slices.Sorted(slices.Values(append(slices.Clone(train), held...)))
	for i, v := range all {
		if v != i {
			t.Fatalf("rows %v are not each row once", all)
		}
	}
	count := map[float64]int{}
	for _, i := range held {
		count[y[i]]++
	}
	if want := map[float64]int{0: 20, 1: 10, 2: 2}; fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("held out per class %v; want %v (a fifth of each, the single row kept for training)", count, want)
	}
	if slices.IsSorted(held) {
		t.Errorf("held-out rows %v are not shuffled", held)
	}
	again, _ := Split(y, 0.2, true, 1)
	other, _ := Split(y, 0.2, true, 2)
	if !slices.Equal(train, again) || slices.Equal(train, other) {
		t.Error("the split does not follow the seed")
	}
	train, held = Split(y[:10], 0.01, false, 1)
	if len(held) != 1 || len(train) != 9 {
		t.Errorf("unstratified: %d and %d rows; want 9 and 1", len(train), len(held))
	}
}

// TestModelMetadata checks the names a model carries.
func TestModelMetadata(t *testing.T) {
	d := synthetic(Classification, 60, false, 9)
	res, err := Builtin{}.Train(context.Background(), Spec{Trainer: Logistic, Task: Classification, Epochs: 1}, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m onnx.ModelProto
	if err := proto.Unmarshal(res.Model, &m); err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for _, p := range m.MetadataProps {
		meta[p.Key] = p.Value
	}
	want := map[string]string{
		MetaTrainer: "logistic", MetaTask: "classification", MetaTarget: "state",
		MetaFeatures: `["temperature","pressure","vibration","rpm"]`, MetaClasses: `["ok","worn","broken"]`,
	}
	if fmt.Sprint(meta) != fmt.Sprint(want) {
		t.Errorf("metadata %v; want %v", meta, want)
	}
	if res.Input != "input" || !slices.Equal(res.Outputs, []string{"probabilities", "label"}) {
		t.Errorf("input %q, outputs %q", res.Input, res.Outputs)
	}
}
