package validation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Status is a version's validation verdict.
type Status string

// The verdicts. A version pushed by hand has none ("").
const (
	Passed Status = "passed"
	Failed Status = "failed"
)

// Check names.
const (
	CheckParity   = "ort_parity"
	CheckChampion = "champion"
	CheckLatency  = "latency_p95_ms"
)

// Report is the verdict on one candidate (JSON "validation" of a model
// version, docs/API.md).
type Report struct {
	Status Status  `json:"status"`
	Checks []Check `json:"checks"`
	// Reasons say why each failed check failed.
	Reasons []string `json:"reasons,omitempty"`
	// Champion is the version compared with, if any.
	Champion    string          `json:"champion,omitempty"`
	HoldoutRows int             `json:"holdout_rows"`
	Gates       Gates           `json:"gates"`
	Lineage     json.RawMessage `json:"lineage,omitempty"`
	ValidatedAt time.Time       `json:"validated_at"`
}

// Passed reports whether every check passed.
func (r Report) Passed() bool { return r.Status == Passed }

// Check is one gate's result. Value is what was measured, Limit what it
// was held to.
type Check struct {
	Name   string  `json:"name"`
	Passed bool    `json:"passed"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Detail string  `json:"detail,omitempty"`
}

// Input is what Validate judges.
type Input struct {
	// Candidate is the new model; Champion the deployed one to compare
	// with (nil: none), ChampionVersion its version.
	Candidate, Champion []byte
	ChampionVersion     string
	// Input names the models' feature input ("" for the first): FP32 or
	// FP64 [batch, features].
	Input string
	// X and Y are the holdout rows; Y holds class indexes for
	// classification.
	X       [][]float64
	Y       []float64
	Task    training.Task
	Classes int
	// Reported are the trainer's holdout metrics, which ONNX Runtime's
	// must match within ParityTolerance; nil skips the parity check (a
	// trainer whose holdout is its own).
	Reported map[string]float64
	Lineage  json.RawMessage
	Now      func() time.Time
}

// batchRows bounds the rows run through a model at once.
const batchRows = 4096

// Validate runs the candidate (and the champion) on the holdout rows with
// ONNX Runtime and judges it by g (defaults filled in). A model that fails
// a gate is a Report with Status Failed, not an error. Errors: Invalid
// (bad gates, no holdout rows, a candidate ONNX Runtime cannot run on
// them), Unavailable (ONNX Runtime missing), the context's.
func Validate(ctx context.Context, in Input, g Gates) (Report, error) {
	const op = "validation.Validate"
	if err := g.Check(in.Task); err != nil {
		return Report{}, err
	}
	g = g.Defaults()
	if len(in.X) == 0 || len(in.X) != len(in.Y) {
		return Report{}, shoalerr.E(shoalerr.Invalid, op, "holdout has %d rows and %d targets; validation needs at least one row", len(in.X), len(in.Y))
	}
	now := in.Now
	if now == nil {
		now = time.Now
	}
	rep := Report{Gates: g, HoldoutRows: len(in.X), Lineage: in.Lineage, Champion: in.ChampionVersion}

	s, err := open(op, in.Candidate, "candidate")
	if err != nil {
		return Report{}, err
	}
	defer s.Close()
	got, err := evaluate(ctx, s, in)
	if err != nil {
		return Report{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "run the candidate model on the holdout")
	}
	clf := in.Task == training.Classification
	if clf {
		rep.add(atLeast(training.MetricAccuracy, got[training.MetricAccuracy], g.MinAccuracy))
		rep.add(atLeast(training.MetricMacroF1, got[training.MetricMacroF1], g.MinF1))
	} else {
		rep.add(atMost(training.MetricRMSE, got[training.MetricRMSE], g.MaxRMSE))
		rep.add(atMost(training.MetricMAE, got[training.MetricMAE], g.MaxMAE))
	}
	if c, ok := parity(got, in.Reported, clf); ok {
		rep.add(c)
	}
	if in.Champion != nil {
		rep.add(champion(ctx, in, got, g.ChampionMargin))
	}
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	lat, err := latency(ctx, s, in, g.LatencyRuns)
	if err != nil {
		return Report{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "time the candidate model")
	}
	rep.add(Check{Name: CheckLatency, Value: ms(lat), Limit: ms(g.MaxLatencyP95), Passed: lat <= g.MaxLatencyP95,
		Detail: fmt.Sprintf("p95 of %d runs of one row %s, budget %s", g.LatencyRuns, lat, g.MaxLatencyP95)})

	rep.Status = Passed
	for _, c := range rep.Checks {
		if !c.Passed {
			rep.Status = Failed
			rep.Reasons = append(rep.Reasons, c.Detail)
		}
	}
	rep.ValidatedAt = now().UTC()
	return rep, nil
}

// add appends c unless it is empty (a gate not asked for).
func (r *Report) add(c Check) {
	if c.Name != "" {
		r.Checks = append(r.Checks, c)
	}
}

func atLeast(name string, v, limit float64) Check {
	if limit == 0 {
		return Check{}
	}
	c := Check{Name: name, Value: v, Limit: limit, Passed: v >= limit}
	if c.Passed {
		c.Detail = fmt.Sprintf("%s %.4g >= %.4g", name, v, limit)
	} else {
		c.Detail = fmt.Sprintf("%s %.4g < %.4g", name, v, limit)
	}
	return c
}

func atMost(name string, v, limit float64) Check {
	if limit == 0 {
		return Check{}
	}
	c := Check{Name: name, Value: v, Limit: limit, Passed: v <= limit}
	if c.Passed {
		c.Detail = fmt.Sprintf("%s %.4g <= %.4g", name, v, limit)
	} else {
		c.Detail = fmt.Sprintf("%s %.4g > %.4g", name, v, limit)
	}
	return c
}

// parity compares ONNX Runtime's metrics with the trainer's: the largest
// difference, relative to the value for RMSE and MAE.
func parity(got, reported map[string]float64, clf bool) (Check, bool) {
	names := []string{training.MetricRMSE, training.MetricMAE}
	if clf {
		names = []string{training.MetricAccuracy, training.MetricMacroF1}
	}
	c := Check{Name: CheckParity, Limit: ParityTolerance, Passed: true}
	compared := false
	for _, n := range names {
		want, ok := reported[n]
		if !ok {
			continue
		}
		compared = true
		d := math.Abs(got[n] - want)
		if !clf {
			d /= max(1, math.Abs(want))
		}
		if d > c.Value || math.IsNaN(d) {
			c.Value = d
			c.Detail = fmt.Sprintf("%s through ONNX Runtime %.6g, trainer %.6g", n, got[n], want)
		}
	}
	c.Passed = c.Value <= ParityTolerance
	if c.Passed {
		c.Detail = "ONNX Runtime's holdout metrics match the trainer's"
	} else {
		c.Detail = "ONNX Runtime disagrees with the trainer: " + c.Detail
	}
	return c, compared
}

// champion holds the candidate's main metric (accuracy, or RMSE) to the
// champion's on the same rows. A champion that cannot run on them (its
// inputs differ) is not compared; the check says so and passes.
func champion(ctx context.Context, in Input, got map[string]float64, margin float64) Check {
	c := Check{Name: CheckChampion, Passed: true}
	s, err := open("validation.Validate", in.Champion, "champion")
	var theirs map[string]float64
	if err == nil {
		defer s.Close()
		theirs, err = evaluate(ctx, s, in)
	}
	if err != nil {
		c.Detail = fmt.Sprintf("champion %s not compared: it cannot run on this holdout: %v", in.ChampionVersion, err)
		return c
	}
	if in.Task == training.Classification {
		m := training.MetricAccuracy
		c.Value, c.Limit = got[m], theirs[m]-margin
		c.Passed = c.Value >= c.Limit
		c.Detail = fmt.Sprintf("accuracy %.4g vs champion %s's %.4g (may be at most %g lower)", c.Value, in.ChampionVersion, theirs[m], margin)
		return c
	}
	m := training.MetricRMSE
	c.Value, c.Limit = got[m], theirs[m]*(1+margin)
	c.Passed = c.Value <= c.Limit
	c.Detail = fmt.Sprintf("rmse %.4g vs champion %s's %.4g (may be at most %g%% higher)", c.Value, in.ChampionVersion, theirs[m], margin*100)
	return c
}

func open(op string, model []byte, which string) (*onnxrt.Session, error) {
	s, err := onnxrt.Open(model, onnxrt.Options{IntraOpThreads: 1})
	if err == nil {
		return s, nil
	}
	var me *onnxrt.ModelError
	var le *onnxrt.LocaleError
	if errors.As(err, &me) || errors.As(err, &le) {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "the %s model does not load", which)
	}
	return nil, shoalerr.Wrap(err, shoalerr.Unavailable, op, "cannot load the %s model with ONNX Runtime", which)
}

// evaluate computes the task's holdout metrics from the model's outputs.
func evaluate(ctx context.Context, s *onnxrt.Session, in Input) (map[string]float64, error) {
	spec, err := inputOf(s, in.Input)
	if err != nil {
		return nil, err
	}
	clf := in.Task == training.Classification
	out, err := outputOf(s, clf)
	if err != nil {
		return nil, err
	}
	var pred []float64
	for start := 0; start < len(in.X); start += batchRows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rows := in.X[start:min(start+batchRows, len(in.X))]
		res, err := s.Run([]onnxrt.Tensor{tensor(spec, rows)})
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(res, func(t onnxrt.Tensor) bool { return t.Name == out.Name })
		if i < 0 {
			return nil, fmt.Errorf("the model gave no output %q", out.Name)
		}
		vals := floats(res[i].Data)
		if len(vals) == 0 || len(vals)%len(rows) != 0 {
			return nil, fmt.Errorf("output %q gave %d values for %d rows", out.Name, len(vals), len(rows))
		}
		w := len(vals) / len(rows)
		switch {
		case clf && out.DataType == onnxrt.INT64 && w == 1:
			pred = append(pred, vals...)
		case clf:
			pred = append(pred, training.Argmax(vals, w)...)
		case w == 1:
			pred = append(pred, vals...)
		default:
			return nil, fmt.Errorf("regression output %q has %d values a row; want 1", out.Name, w)
		}
	}
	if clf {
		acc, f1, err := training.ScoreClassification(pred, in.Y, in.Classes)
		return map[string]float64{training.MetricAccuracy: acc, training.MetricMacroF1: f1}, err
	}
	rmse, mae := training.ScoreRegression(pred, in.Y)
	return map[string]float64{training.MetricRMSE: rmse, training.MetricMAE: mae}, nil
}

func inputOf(s *onnxrt.Session, name string) (onnxrt.TensorSpec, error) {
	ins := s.Inputs()
	for _, in := range ins {
		if in.Name == name || (name == "" && len(ins) > 0) {
			if in.DataType != onnxrt.FP32 && in.DataType != onnxrt.FP64 {
				return onnxrt.TensorSpec{}, fmt.Errorf("input %q is %s; validation feeds FP32 or FP64 features", in.Name, in.DataType)
			}
			return in, nil
		}
	}
	return onnxrt.TensorSpec{}, fmt.Errorf("the model has no input %q", name)
}

// outputOf picks what the model predicts: for classification the INT64
// output "label" (or the only INT64 one), else class scores to take the
// largest of ("probabilities", or the first float output); for regression
// "output" or the first float output.
func outputOf(s *onnxrt.Session, clf bool) (onnxrt.TensorSpec, error) {
	var label, score onnxrt.TensorSpec
	for _, o := range s.Outputs() {
		switch o.DataType {
		case onnxrt.INT64:
			if label.Name == "" || o.Name == "label" {
				label = o
			}
		case onnxrt.FP32, onnxrt.FP64:
			if score.Name == "" || o.Name == "probabilities" || o.Name == "output" {
				score = o
			}
		}
	}
	if clf && label.Name != "" {
		return label, nil
	}
	if score.Name == "" {
		return onnxrt.TensorSpec{}, fmt.Errorf("the model has no output to judge (want an INT64 label or a float output)")
	}
	return score, nil
}

func tensor(spec onnxrt.TensorSpec, rows [][]float64) onnxrt.Tensor {
	width := len(rows[0])
	t := onnxrt.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: []int64{int64(len(rows)), int64(width)}}
	if spec.DataType == onnxrt.FP64 {
		x := make([]float64, 0, len(rows)*width)
		for _, r := range rows {
			x = append(x, r...)
		}
		t.Data = x
		return t
	}
	x := make([]float32, 0, len(rows)*width)
	for _, r := range rows {
		for _, v := range r {
			x = append(x, float32(v))
		}
	}
	t.Data = x
	return t
}

func floats(data any) []float64 {
	var out []float64
	switch d := data.(type) {
	case []int64:
		for _, v := range d {
			out = append(out, float64(v))
		}
	case []float32:
		for _, v := range d {
			out = append(out, float64(v))
		}
	case []float64:
		out = d
	}
	return out
}

// latency times runs of one holdout row each, cycling through the rows,
// after one untimed warm-up run, and returns the 95th percentile.
func latency(ctx context.Context, s *onnxrt.Session, in Input, runs int) (time.Duration, error) {
	spec, err := inputOf(s, in.Input)
	if err != nil {
		return 0, err
	}
	times := make([]time.Duration, 0, runs)
	for i := -1; i < runs; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t := tensor(spec, in.X[max(i, 0)%len(in.X):][:1])
		start := time.Now()
		if _, err := s.Run([]onnxrt.Tensor{t}); err != nil {
			return 0, err
		}
		if i >= 0 {
			times = append(times, time.Since(start))
		}
	}
	slices.Sort(times)
	return times[(len(times)*95+99)/100-1], nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summary is the failed checks' reasons on one line.
func (r Report) Summary() string {
	if r.Passed() {
		return "passed"
	}
	return strings.Join(r.Reasons, "; ")
}
