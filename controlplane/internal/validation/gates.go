// Package validation judges a trained model before it may be deployed: its
// holdout metrics against thresholds, against the deployed champion on the
// same holdout rows, ONNX Runtime's agreement with the trainer, and its
// latency on the control plane. Every metric is computed through ONNX
// Runtime, as the agents will run the model.
package validation

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Defaults of Gates.
const (
	DefaultChampionMargin = 0.02
	DefaultMaxLatencyP95  = 50 * time.Millisecond
	DefaultLatencyRuns    = 50
	// ParityTolerance bounds how far a metric computed through ONNX
	// Runtime may be from the trainer's own (relative for RMSE and MAE).
	ParityTolerance = 1e-4
	maxLatencyRuns  = 10_000
)

// Gates are what a candidate model must pass (JSON "gates" in a job spec).
// A zero threshold is no threshold.
type Gates struct {
	MinAccuracy float64 `json:"min_accuracy,omitempty"`
	MinF1       float64 `json:"min_macro_f1,omitempty"`
	MaxRMSE     float64 `json:"max_rmse,omitempty"`
	MaxMAE      float64 `json:"max_mae,omitempty"`
	// ChampionMargin is how much worse than the champion the candidate
	// may be: accuracy points for classification, a share of the
	// champion's RMSE for regression. 0 is DefaultChampionMargin.
	ChampionMargin float64 `json:"champion_margin,omitempty"`
	// MaxLatencyP95 bounds the 95th percentile of LatencyRuns runs of one
	// row (JSON a duration string, "50ms"). 0 is DefaultMaxLatencyP95.
	MaxLatencyP95 time.Duration `json:"-"`
	LatencyRuns   int           `json:"latency_runs,omitempty"`
}

// gatesJSON is Gates with the latency budget as a duration string.
type gatesJSON struct {
	gatesFields
	MaxLatencyP95 string `json:"max_latency_p95,omitempty"`
}

type gatesFields Gates // no methods: no recursion

// MarshalJSON writes the latency budget as "50ms".
func (g Gates) MarshalJSON() ([]byte, error) {
	j := gatesJSON{gatesFields: gatesFields(g)}
	if g.MaxLatencyP95 != 0 {
		j.MaxLatencyP95 = g.MaxLatencyP95.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the latency budget as a Go duration string.
func (g *Gates) UnmarshalJSON(b []byte) error {
	var j gatesJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*g = Gates(j.gatesFields)
	if j.MaxLatencyP95 != "" {
		d, err := time.ParseDuration(j.MaxLatencyP95)
		if err != nil {
			return &json.UnmarshalTypeError{Value: fmt.Sprintf("%q (want a duration such as \"50ms\")", j.MaxLatencyP95),
				Type: reflect.TypeFor[time.Duration](), Field: "max_latency_p95"}
		}
		g.MaxLatencyP95 = d
	}
	return nil
}

// Defaults returns g with every unset default filled in.
func (g Gates) Defaults() Gates {
	if g.ChampionMargin == 0 {
		g.ChampionMargin = DefaultChampionMargin
	}
	if g.MaxLatencyP95 == 0 {
		g.MaxLatencyP95 = DefaultMaxLatencyP95
	}
	if g.LatencyRuns == 0 {
		g.LatencyRuns = DefaultLatencyRuns
	}
	return g
}

// Check reports whether g can judge a model of task ("" for either).
// Errors: Invalid, naming the gate.
func (g Gates) Check(task training.Task) error {
	const op = "validation.Check"
	bad := func(format string, args ...any) error {
		return shoalerr.E(shoalerr.Invalid, op, "gates: "+format, args...)
	}
	switch {
	case g.MinAccuracy < 0 || g.MinAccuracy > 1:
		return bad("min_accuracy %g is out of range; give a share in [0, 1]", g.MinAccuracy)
	case g.MinF1 < 0 || g.MinF1 > 1:
		return bad("min_macro_f1 %g is out of range; give a share in [0, 1]", g.MinF1)
	case g.MaxRMSE < 0:
		return bad("max_rmse %g is negative; give a positive bound or leave it out", g.MaxRMSE)
	case g.MaxMAE < 0:
		return bad("max_mae %g is negative; give a positive bound or leave it out", g.MaxMAE)
	case g.ChampionMargin < 0 || g.ChampionMargin > 1:
		return bad("champion_margin %g is out of range; give a value in [0, 1], or leave it out for %g", g.ChampionMargin, DefaultChampionMargin)
	case g.MaxLatencyP95 < 0:
		return bad("max_latency_p95 %s is negative; give a budget such as \"50ms\"", g.MaxLatencyP95)
	case g.LatencyRuns < 0 || g.LatencyRuns > maxLatencyRuns:
		return bad("latency_runs %d is out of range; give 1 to %d", g.LatencyRuns, maxLatencyRuns)
	case task == training.Classification && (g.MaxRMSE != 0 || g.MaxMAE != 0):
		return bad("max_rmse and max_mae judge regression models, but this is a classification job; use min_accuracy or min_macro_f1")
	case task == training.Regression && (g.MinAccuracy != 0 || g.MinF1 != 0):
		return bad("min_accuracy and min_macro_f1 judge classification models, but this is a regression job; use max_rmse or max_mae")
	}
	return nil
}
