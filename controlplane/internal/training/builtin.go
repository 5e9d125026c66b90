package training

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Builtin is the trainers written in Go, picked by Spec.Trainer: logistic
// (softmax) regression for classification and linear regression for
// regression ("logistic" or "linear"), and a multi-layer perceptron
// ("mlp"). Both minimise their loss (softmax cross-entropy, or squared
// error) with Adam over shuffled mini-batches, keep the weights of the
// epoch with the lowest validation loss, and stop early after
// Spec.Patience epochs without one. The same seed gives the same model,
// byte for byte, on the same platform.
type Builtin struct{}

var _ Trainer = Builtin{}

// validationSeed separates the validation split's draw from the holdout's.
const validationSeed = 0x5851f42d4c957f2d

// evalRows bounds the rows run through the network at once when measuring.
const evalRows = 1024

// Train trains a model on data as spec says, reporting each epoch to
// progress. Errors: see Trainer.
func (Builtin) Train(ctx context.Context, spec Spec, data Data, progress func(Progress)) (*Result, error) {
	res, _, err := train(ctx, spec, data, progress)
	return res, err
}

// train is Builtin.Train, and also returns the model for tests to compare
// with ONNX Runtime.
func train(ctx context.Context, spec Spec, data Data, progress func(Progress)) (*Result, *model, error) {
	const op = "training.Train"
	spec = spec.Defaults()
	if err := spec.validate(op); err != nil {
		return nil, nil, err
	}
	d, err := check(op, data, spec.Task)
	if err != nil {
		return nil, nil, err
	}
	clf := spec.Task == Classification
	rest, held := Split(d.Y, spec.Holdout, clf, spec.Seed)
	fitAt, valAt := Split(pick(d.Y, rest), spec.ValidationSplit, clf, spec.Seed^validationSeed)
	fit, val := pick(rest, fitAt), pick(rest, valAt)
	if len(fit) == 0 || len(val) == 0 || len(held) == 0 {
		return nil, nil, shoalerr.E(shoalerr.Invalid, op,
			"data set: %d rows are too few to split into training (%d), validation (%d) and holdout (%d) rows; give more rows, or change holdout (%g) and validation_split (%g)",
			len(d.X), len(fit), len(val), len(held), spec.Holdout, spec.ValidationSplit)
	}
	sc, imputed, err := fitScaler(op, d.X, fit, d.Features)
	if err != nil {
		return nil, nil, err
	}
	act, _ := activation(spec.Activation)
	outputs := 1
	if clf {
		outputs = d.classes
	}
	sizes := append(append([]int{len(d.Features)}, spec.Hidden...), outputs)
	params := 0
	for l := 0; l+1 < len(sizes); l++ {
		params += sizes[l]*sizes[l+1] + sizes[l+1]
	}
	if params > maxParameters {
		return nil, nil, shoalerr.E(shoalerr.Invalid, op, "training spec: layers %v have %d parameters; the most is %d", sizes, params, maxParameters)
	}

	r := &run{
		spec: spec, net: newNetwork(sizes, act, spec.Seed), progress: progress,
		xFit: sc.apply(d.X, fit), yFit: pick(d.Y, fit),
		xVal: sc.apply(d.X, val), yVal: pick(d.Y, val),
		shift: 0, scale: 1,
	}
	if !clf {
		// Regression learns a standardised target, as Adam's steps are of
		// about the learning rate whatever the target's scale; the last
		// layer takes the scale back when exported.
		r.shift, r.scale = meanStd(r.yFit)
		for _, y := range [][]float64{r.yFit, r.yVal} {
			for i := range y {
				y[i] = (y[i] - r.shift) / r.scale
			}
		}
	}
	if err := r.fit(ctx); err != nil {
		return nil, nil, err
	}

	m := newModel(r.net, sc, spec.Task, r.shift, r.scale)
	onnx, err := m.onnx(spec, d)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: export: %w", op, err)
	}
	res := &Result{
		Model: onnx, Input: modelInput, Outputs: m.outputNames(),
		Metrics:   map[string]float64{},
		Epochs:    len(r.history),
		BestEpoch: r.best,
		History:   r.history,
		Imputed:   imputed,
		TrainRows: len(fit), ValidationRows: len(val), HoldoutRows: len(held),
	}
	heldOut, fitOut := m.outputs(pick(d.X, held)), m.outputs(pick(d.X, fit))
	width := m.width()
	res.Metrics[MetricTrainLoss] = loss(spec.Task, fitOut, pick(d.Y, fit), len(fit), width, nil)
	if clf {
		acc, f1, err := ScoreClassification(Argmax(heldOut, width), pick(d.Y, held), d.classes)
		if err != nil {
			return nil, nil, fmt.Errorf("score the holdout: %w", err)
		}
		res.Metrics[MetricAccuracy], res.Metrics[MetricMacroF1] = acc, f1
	} else {
		res.Metrics[MetricRMSE], res.Metrics[MetricMAE] = ScoreRegression(heldOut, pick(d.Y, held))
	}
	return res, m, nil
}

// run is one training run's state.
type run struct {
	spec         Spec
	net          *network
	progress     func(Progress)
	xFit, yFit   []float64
	xVal, yVal   []float64
	shift, scale float64 // of the regression target
	history      []Progress
	best         int // epoch whose weights the network holds at the end
}

func (r *run) fit(ctx context.Context) error {
	const op = "training.Train"
	s, n := r.spec, r.net
	width := n.sizes[0]
	rows := len(r.yFit)
	batch := min(s.BatchSize, rows)
	xb, yb := make([]float64, batch*width), make([]float64, batch)
	opt := newAdam(s.LearningRate, len(n.params))
	order := make([]int, rows)
	for i := range order {
		order[i] = i
	}
	shuffle := rand.New(rand.NewPCG(s.Seed, streamShuffle))
	bestLoss, bestParams := math.Inf(1), make([]float64, len(n.params))
	since := 0
	for epoch := 1; epoch <= s.Epochs; epoch++ {
		shuffle.Shuffle(rows, func(i, j int) { order[i], order[j] = order[j], order[i] })
		var sum float64
		for start := 0; start < rows; start += batch {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("%s: stopped at epoch %d: %w", op, epoch, err)
			}
			k := min(batch, rows-start)
			for i, row := range order[start : start+k] {
				copy(xb[i*width:(i+1)*width], r.xFit[row*width:(row+1)*width])
				yb[i] = r.yFit[row]
			}
			sum += n.lossGrad(s.Task, xb, yb, k, s.L2) * float64(k)
			opt.step(n.params, n.grads)
		}
		p := Progress{Epoch: epoch, Epochs: s.Epochs, TrainLoss: sum / float64(rows)}
		p.ValidationLoss, p.ValidationMetric, p.Metric = r.validate()
		if s.Task == Regression {
			p.TrainLoss *= r.scale * r.scale
		}
		if math.IsNaN(p.TrainLoss) || math.IsInf(p.TrainLoss, 0) || math.IsNaN(p.ValidationLoss) {
			return shoalerr.E(shoalerr.Invalid, op, "training diverged at epoch %d (training loss %g); lower learning_rate (now %g)", epoch, p.TrainLoss, s.LearningRate)
		}
		r.history = append(r.history, p)
		if r.progress != nil {
			r.progress(p)
		}
		if p.ValidationLoss < bestLoss {
			bestLoss, r.best, since = p.ValidationLoss, epoch, 0
			copy(bestParams, n.params)
			continue
		}
		if since++; s.Patience > 0 && since >= s.Patience {
			break
		}
	}
	copy(n.params, bestParams)
	return nil
}

// validate measures the network on the validation split: its loss, and
// accuracy (classification) or RMSE (regression), in the target's units.
func (r *run) validate() (mean, metric float64, name string) {
	width := r.net.sizes[len(r.net.sizes)-1]
	out := evaluate(r.net, r.xVal, len(r.yVal))
	mean = loss(r.spec.Task, out, r.yVal, len(r.yVal), width, nil)
	if r.spec.Task == Classification {
		// The validation rows' labels are the data set's classes, and
		// Argmax gives indexes below width: no error is possible.
		acc, _, _ := ScoreClassification(Argmax(out, width), r.yVal, width)
		return mean, acc, MetricAccuracy
	}
	mean *= r.scale * r.scale
	return mean, math.Sqrt(mean), MetricRMSE
}

// evaluate runs rows rows of x through n, evalRows at a time, and returns
// a copy of the outputs.
func evaluate(n *network, x []float64, rows int) []float64 {
	width, outW := n.sizes[0], n.sizes[len(n.sizes)-1]
	out := make([]float64, rows*outW)
	for start := 0; start < rows; start += evalRows {
		k := min(evalRows, rows-start)
		copy(out[start*outW:], n.forward(x[start*width:(start+k)*width], k))
	}
	return out
}

func pick[T any](v []T, at []int) []T {
	out := make([]T, len(at))
	for i, j := range at {
		out[i] = v[j]
	}
	return out
}

func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	std = math.Sqrt(std / float64(len(v)))
	if !(std > 0) {
		std = 1
	}
	return mean, std
}
