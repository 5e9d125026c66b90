package training

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// TestGradientsMatchFiniteDifferences checks backpropagation, with the L2
// penalty, against central differences of the loss, for every parameter.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		task   Task
		act    onnxbuild.Activation
		hidden []int
		l2     float64
	}{
		{Classification, onnxbuild.ReLU, nil, 0},
		{Classification, onnxbuild.ReLU, []int{5, 4}, 0.1},
		{Classification, onnxbuild.Tanh, []int{6}, 0},
		{Regression, onnxbuild.ReLU, nil, 0.05},
		{Regression, onnxbuild.Tanh, []int{5, 4}, 0.1},
		{Regression, onnxbuild.ReLU, []int{7}, 0},
	} {
		t.Run(fmt.Sprintf("%s-%s-%v-l2=%g", tc.task, tc.act, tc.hidden, tc.l2), func(t *testing.T) {
			const rows, in = 7, 3
			out := 1
			if tc.task == Classification {
				out = 4
			}
			r := rand.New(rand.NewPCG(3, 4))
			x := make([]float64, rows*in)
			for i := range x {
				x[i] = r.NormFloat64()
			}
			y := make([]float64, rows)
			for i := range y {
				if tc.task == Classification {
					y[i] = float64(r.IntN(out))
				} else {
					y[i] = r.NormFloat64()
				}
			}
			n := newNetwork(append(append([]int{in}, tc.hidden...), out), tc.act, 9)
			for i := range n.params {
				n.params[i] += 0.1 * r.NormFloat64() // biases too
			}
			n.lossGrad(tc.task, x, y, rows, tc.l2)
			analytic := append([]float64(nil), n.grads...)
			objective := func() float64 {
				return loss(tc.task, n.forward(x, rows), y, rows, out, nil) + n.penalty(tc.l2)
			}
			const h = 1e-6
			for i := range n.params {
				p := n.params[i]
				n.params[i] = p + h
				up := objective()
				n.params[i] = p - h
				down := objective()
				n.params[i] = p
				numeric := (up - down) / (2 * h)
				if d := math.Abs(numeric - analytic[i]); d > 1e-6*(1+math.Abs(numeric)) {
					t.Errorf("parameter %d: backprop %.9g, finite difference %.9g", i, analytic[i], numeric)
				}
			}
		})
	}
}

func TestSoftmaxCrossEntropyLargeLogits(t *testing.T) {
	for _, tc := range []struct {
		logits []float64
		class  int
		want   float64 // cross-entropy
	}{
		{[]float64{1000, 999, -1000}, 0, math.Log1p(math.Exp(-1))},
		{[]float64{1000, 999, -1000}, 2, 2000 + math.Log1p(math.Exp(-1))},
		{[]float64{-1000, -1000}, 1, math.Ln2},
		{[]float64{1e300, 0}, 1, 1e300},
		{[]float64{0, 0, 0, 0}, 3, math.Log(4)},
	} {
		width := len(tc.logits)
		dz := make([]float64, width)
		got := loss(Classification, tc.logits, []float64{float64(tc.class)}, 1, width, dz)
		if math.Abs(got-tc.want) > 1e-12*(1+math.Abs(tc.want)) {
			t.Errorf("%v, class %d: cross-entropy %g; want %g", tc.logits, tc.class, got, tc.want)
		}
		p := make([]float64, width)
		softmax(p, tc.logits)
		var sum, gradSum float64
		for j := range p {
			sum += p[j]
			gradSum += dz[j]
			if math.IsNaN(p[j]) || math.IsNaN(dz[j]) || p[j] < 0 {
				t.Errorf("%v: probabilities %v, gradient %v", tc.logits, p, dz)
			}
			// ∂CE/∂z = softmax - one-hot.
			want := p[j]
			if j == tc.class {
				want--
			}
			if math.Abs(dz[j]-want) > 1e-12 {
				t.Errorf("%v: gradient %v; want softmax - one-hot", tc.logits, dz)
			}
		}
		if math.Abs(sum-1) > 1e-12 || math.Abs(gradSum) > 1e-12 {
			t.Errorf("%v: probabilities sum to %g, gradient to %g", tc.logits, sum, gradSum)
		}
	}
}

// separable is two clouds of points either side of the plane x0 + x1 = 0,
// at least margin from it.
func separable(n int, margin float64, seed uint64) Data {
	r := rand.New(rand.NewPCG(seed, 0))
	var d Data
	for len(d.X) < n {
		x := []float64{r.Float64()*8 - 4, r.Float64()*8 - 4, r.NormFloat64()}
		s := (x[0] + x[1]) / math.Sqrt2
		if math.Abs(s) < margin {
			continue
		}
		d.X = append(d.X, x)
		d.Y = append(d.Y, map[bool]float64{false: 0, true: 1}[s > 0])
	}
	return d
}

func TestLinearlySeparable(t *testing.T) {
	d := separable(400, 0.5, 1)
	for _, spec := range []Spec{
		{Trainer: Logistic, Task: Classification, Seed: 2, Epochs: 100},
		{Trainer: MLP, Task: Classification, Seed: 2, Epochs: 100, Hidden: []int{8}, LearningRate: 0.01},
	} {
		res, err := Builtin{}.Train(context.Background(), spec, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if acc, f1 := res.Metrics[MetricAccuracy], res.Metrics[MetricMacroF1]; acc != 1 || f1 != 1 {
			t.Errorf("%s: holdout accuracy %g, macro F1 %g; want 1 on a separable set", spec.Trainer, acc, f1)
		}
		if res.Metrics[MetricTrainLoss] > 0.1 {
			t.Errorf("%s: training loss %g", spec.Trainer, res.Metrics[MetricTrainLoss])
		}
	}
}

// TestLinearRegressionRecoversCoefficients reads the exported model's
// coefficients back through ONNX Runtime: f(0) is the intercept, f(eᵢ) -
// f(0) the coefficient of xᵢ.
func TestLinearRegressionRecoversCoefficients(t *testing.T) {
	onnxrt.MustInitForTest(t)
	coef, intercept := []float64{3, -2, 0.5}, 40.0
	r := rand.New(rand.NewPCG(5, 6))
	var d Data
	for range 500 {
		x := []float64{r.NormFloat64() * 10, r.Float64() * 3, r.NormFloat64() + 100}
		y := intercept + r.NormFloat64()*0.01
		for i, c := range coef {
			y += c * x[i]
		}
		d.X, d.Y = append(d.X, x), append(d.Y, y)
	}
	res, err := Builtin{}.Train(context.Background(), Spec{Trainer: Linear, Task: Regression, Seed: 1, Epochs: 300, LearningRate: 0.05, Patience: -1}, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	probe := [][]float64{{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	f := runONNX(t, res, probe)[0].Data.([]float32)
	got := []float64{float64(f[1] - f[0]), float64(f[2] - f[0]), float64(f[3] - f[0])}
	for i, c := range coef {
		if math.Abs(got[i]-c) > 0.01 {
			t.Errorf("coefficient %d: %g; want %g", i, got[i], c)
		}
	}
	if math.Abs(float64(f[0])-intercept) > 0.5 {
		t.Errorf("intercept %g; want %g", f[0], intercept)
	}
	if rmse := res.Metrics[MetricRMSE]; rmse > 0.05 {
		t.Errorf("holdout RMSE %g; the noise is 0.01", rmse)
	}
	t.Logf("coefficients %.4f, intercept %.3f, RMSE %.4f, MAE %.4f", got, f[0], res.Metrics[MetricRMSE], res.Metrics[MetricMAE])
}

func TestMetrics(t *testing.T) {
	// Class 0: TP 2, FN 1; class 1: TP 1, FP 1, FN 1; class 2: FP 1.
	acc, f1, err := ScoreClassification([]float64{0, 0, 1, 1, 2}, []float64{0, 0, 0, 1, 1}, 3)
	if err != nil {
		t.Fatal(err)
	}
	wantF1 := (2*2.0/(4+0+1) + 2*1.0/(2+1+1) + 0) / 3
	if acc != 0.6 || math.Abs(f1-wantF1) > 1e-12 {
		t.Errorf("accuracy %g, macro F1 %g; want 0.6, %g", acc, f1, wantF1)
	}
	if _, _, err := ScoreClassification([]float64{3}, []float64{0}, 3); err == nil || !strings.Contains(err.Error(), "row 0: class 3") {
		t.Errorf("a class out of range: err = %v; want one naming row 0 and class 3", err)
	}
	rmse, mae := ScoreRegression([]float64{1, 2, 3}, []float64{1, 4, 2})
	if math.Abs(rmse-math.Sqrt(5.0/3)) > 1e-12 || mae != 1 {
		t.Errorf("RMSE %g, MAE %g", rmse, mae)
	}
}
