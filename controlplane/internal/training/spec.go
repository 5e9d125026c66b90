package training

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Trainer turns a data set and a spec into a model. progress, when not nil,
// is called from the goroutine that called Train. Errors: shoalerr.Invalid
// for a spec or data set the trainer cannot use (the message says which
// field or row) and for a trainer that fails on its own terms (a command
// that exits non-zero, writes no model, runs past its timeout: the message
// quotes it); an error wrapping ctx.Err() when ctx ends.
type Trainer interface {
	Train(ctx context.Context, spec Spec, data Data, progress func(Progress)) (*Result, error)
}

// Task is what a model predicts.
type Task string

// The tasks.
const (
	Classification Task = "classification"
	Regression     Task = "regression"
)

// The built-in trainers' names. Linear is Logistic under the name that
// fits a regression task; both train a model with no hidden layer.
const (
	Logistic = "logistic"
	Linear   = "linear"
	MLP      = "mlp"
)

// Spec says how to train. The zero value of every field but Trainer, Task
// and Seed means its default (see Defaults); JSON names are those of the
// API and of spec.json in the command trainer's contract.
type Spec struct {
	Trainer string `json:"trainer"`
	Task    Task   `json:"task"`
	// Hidden lists the hidden layers' widths (mlp only; default [64]).
	Hidden []int `json:"hidden,omitempty"`
	// Activation between layers: "relu" (default) or "tanh".
	Activation string `json:"activation,omitempty"`
	// LearningRate is Adam's step size; default 0.01 for logistic and
	// linear, 0.001 for mlp.
	LearningRate float64 `json:"learning_rate,omitempty"`
	// Epochs is the most passes over the training split (default 100).
	Epochs int `json:"epochs,omitempty"`
	// BatchSize is the mini-batch size (default 32).
	BatchSize int `json:"batch_size,omitempty"`
	// L2 is the weight decay λ: the loss gains λ/2·Σw² over the weights
	// (not the biases). Default 0.
	L2   float64 `json:"l2,omitempty"`
	Seed uint64  `json:"seed"`
	// ValidationSplit is the share of the training rows kept aside to pick
	// the best epoch and stop early (default 0.1).
	ValidationSplit float64 `json:"validation_split,omitempty"`
	// Patience stops training after this many epochs without a lower
	// validation loss (default 10; -1 never stops early). Either way the
	// model keeps the weights of the best epoch.
	Patience int `json:"patience,omitempty"`
	// Holdout is the share of the rows kept out of training to measure the
	// model (default 0.2).
	Holdout float64 `json:"holdout,omitempty"`
}

// Defaults of Spec's fields.
const (
	DefaultEpochs          = 100
	DefaultBatchSize       = 32
	DefaultValidationSplit = 0.1
	DefaultPatience        = 10
	DefaultHoldout         = 0.2
	DefaultHidden          = 64
	DefaultActivation      = "relu"
)

// Limits that keep a spec from asking for what a control plane cannot give.
const (
	maxEpochs     = 100_000
	maxHidden     = 16
	maxWidth      = 1 << 14
	maxBatchSize  = 1 << 16
	maxSplitShare = 0.9
	maxLearnRate  = 10
	// maxParameters keeps a network, its gradient and Adam's two moments
	// within about 1 GiB.
	maxParameters = 1 << 25
)

// Defaults returns s with every unset field at its default for s.Trainer.
func (s Spec) Defaults() Spec {
	if s.Trainer == MLP && len(s.Hidden) == 0 {
		s.Hidden = []int{DefaultHidden}
	}
	if s.Activation == "" {
		s.Activation = DefaultActivation
	}
	if s.LearningRate == 0 {
		s.LearningRate = 0.01
		if s.Trainer == MLP {
			s.LearningRate = 0.001
		}
	}
	if s.Epochs == 0 {
		s.Epochs = DefaultEpochs
	}
	if s.BatchSize == 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.ValidationSplit == 0 {
		s.ValidationSplit = DefaultValidationSplit
	}
	if s.Patience == 0 {
		s.Patience = DefaultPatience
	}
	if s.Holdout == 0 {
		s.Holdout = DefaultHoldout
	}
	s.Hidden = append([]int(nil), s.Hidden...)
	return s
}

// validate checks a spec with its defaults applied, for a built-in trainer.
func (s Spec) validate(op string) error {
	bad := func(format string, args ...any) error {
		return shoalerr.E(shoalerr.Invalid, op, "training spec: "+format, args...)
	}
	switch s.Trainer {
	case Logistic, Linear:
		if len(s.Hidden) > 0 {
			return bad("trainer %q has no hidden layers but hidden is %v; use trainer \"mlp\" or drop hidden", s.Trainer, s.Hidden)
		}
	case MLP:
	case "":
		return bad("trainer is empty; use %q, %q or %q", Logistic, Linear, MLP)
	default:
		return bad("trainer %q is not built in; use %q, %q or %q, or register a command trainer", s.Trainer, Logistic, Linear, MLP)
	}
	switch s.Task {
	case Classification, Regression:
	case "":
		return bad("task is empty; use %q or %q", Classification, Regression)
	default:
		return bad("task %q is unknown; use %q or %q", s.Task, Classification, Regression)
	}
	if len(s.Hidden) > maxHidden {
		return bad("%d hidden layers; the most is %d", len(s.Hidden), maxHidden)
	}
	for i, w := range s.Hidden {
		if w < 1 || w > maxWidth {
			return bad("hidden layer %d has width %d; use 1 to %d", i, w, maxWidth)
		}
	}
	if _, err := activation(s.Activation); err != nil {
		return bad("%v", err)
	}
	switch {
	case !(s.LearningRate > 0 && s.LearningRate <= maxLearnRate):
		return bad("learning_rate %g is out of range; use a value in (0, %d], such as 0.001", s.LearningRate, maxLearnRate)
	case s.Epochs < 1 || s.Epochs > maxEpochs:
		return bad("epochs %d is out of range; use 1 to %d", s.Epochs, maxEpochs)
	case s.BatchSize < 1 || s.BatchSize > maxBatchSize:
		return bad("batch_size %d is out of range; use 1 to %d", s.BatchSize, maxBatchSize)
	case !(s.L2 >= 0) || math.IsInf(s.L2, 0):
		return bad("l2 %g is out of range; use 0 or more", s.L2)
	case !(s.ValidationSplit > 0 && s.ValidationSplit <= maxSplitShare):
		return bad("validation_split %g is out of range; use a share in (0, %g]", s.ValidationSplit, maxSplitShare)
	case !(s.Holdout > 0 && s.Holdout <= maxSplitShare):
		return bad("holdout %g is out of range; use a share in (0, %g]", s.Holdout, maxSplitShare)
	case s.Patience < -1:
		return bad("patience %d is out of range; use -1 (never stop early) or more", s.Patience)
	}
	return nil
}

func activation(name string) (onnxbuild.Activation, error) {
	switch strings.ToLower(name) {
	case "relu":
		return onnxbuild.ReLU, nil
	case "tanh":
		return onnxbuild.Tanh, nil
	}
	return "", fmt.Errorf("activation %q is unknown; use \"relu\" or \"tanh\"", name)
}

// Data is a data set: X holds rows of features, y one target per row.
// A NaN in X is a missing value: the trainers replace it with the feature's
// mean over the training rows and the model does the same (Result.Imputed).
type Data struct {
	X [][]float64
	// Y is the class index (0, 1, ...) for classification, the value for
	// regression.
	Y []float64
	// Features names X's columns; default "x0", "x1", ...
	Features []string
	// Target names the y column; default "target".
	Target string
	// Classes names the class indexes of Y (classification); default
	// "0", "1", ... up to the largest index in Y.
	Classes []string
}

// Progress is one step of training: an epoch of a built-in trainer, or a
// line a command trainer printed.
type Progress struct {
	Epoch  int `json:"epoch,omitempty"`
	Epochs int `json:"epochs,omitempty"`
	// TrainLoss is the mean loss over the epoch's batches: cross-entropy
	// (nats) for classification, squared error for regression; the L2
	// penalty is not included.
	TrainLoss float64 `json:"train_loss,omitempty"`
	// ValidationLoss and ValidationMetric are measured on the validation
	// split; Metric names the latter ("accuracy" or "rmse").
	ValidationLoss   float64 `json:"validation_loss,omitempty"`
	ValidationMetric float64 `json:"validation_metric,omitempty"`
	Metric           string  `json:"metric,omitempty"`
	// Line is a line a command trainer wrote, and Stream where to
	// ("stdout" or "stderr"); empty for a built-in trainer.
	Line   string `json:"line,omitempty"`
	Stream string `json:"stream,omitempty"`
}

// Metric names in Result.Metrics.
const (
	MetricAccuracy  = "accuracy"
	MetricMacroF1   = "macro_f1"
	MetricRMSE      = "rmse"
	MetricMAE       = "mae"
	MetricTrainLoss = "train_loss"
)

// Result is a trained model.
type Result struct {
	// Model is the ONNX model. Built-in trainers' models take the raw
	// features (standardisation, and imputation where there were missing
	// values, are in the graph) as FP32 [batch, features].
	Model []byte
	// Input and Outputs name the model's (first) input and its outputs:
	// "input"; "probabilities" and "label" for classification, "output"
	// for regression (built-in trainers).
	Input   string
	Outputs []string
	// Metrics are measured on the holdout rows: accuracy and macro_f1 for
	// classification, rmse and mae for regression, and train_loss on the
	// training split (built-in trainers). A command trainer's are those it
	// wrote.
	Metrics map[string]float64
	// Epochs is how many epochs ran; BestEpoch the one whose weights the
	// model holds.
	Epochs, BestEpoch int
	History           []Progress
	Imputed           []Imputation
	// Rows in each split (built-in trainers).
	TrainRows, ValidationRows, HoldoutRows int
}

// Imputation says that a feature had missing values and what replaced them.
type Imputation struct {
	Feature string  `json:"feature"`
	Missing int     `json:"missing"`
	Value   float64 `json:"value"`
}
