package validation

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// toy is a two-class set: class 1 where x0 + x1 > 0.
func toy(rows int, seed uint64) (x [][]float64, y []float64) {
	r := rand.New(rand.NewPCG(seed, 2))
	for range rows {
		a, b := r.Float64()*2-1, r.Float64()*2-1
		c := 0.0
		if a+b > 0 {
			c = 1
		}
		x, y = append(x, []float64{a, b}), append(y, c)
	}
	return x, y
}

// linear is a classifier scoring class 1 as k·(x0 + x1): k > 0 is the
// rule itself, k < 0 its opposite.
func linear(t *testing.T, k float32) []byte {
	t.Helper()
	b, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "linear", Classifier: true,
		Layers: []onnxbuild.Dense{{In: 2, Out: 2, W: []float32{-k, k, -k, k}, B: []float32{0, 0}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func find(r Report, name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

func TestValidate(t *testing.T) {
	onnxrt.MustInitForTest(t)
	x, y := toy(200, 1)
	good, bad := linear(t, 1), linear(t, -1)
	generous := Gates{MaxLatencyP95: time.Minute, LatencyRuns: 5}
	tests := []struct {
		name      string
		in        Input
		gates     Gates
		passed    bool
		failed    string // the check that fails
		reason    string // in Reasons
		wantCheck []string
	}{
		{name: "passing candidate beats its champion",
			in:     Input{Candidate: good, Champion: bad, ChampionVersion: "1"},
			gates:  Gates{MinAccuracy: 0.9, MinF1: 0.9, MaxLatencyP95: time.Minute, LatencyRuns: 5},
			passed: true, wantCheck: []string{"accuracy", "macro_f1", CheckChampion, CheckLatency}},
		{name: "below the accuracy threshold",
			in:     Input{Candidate: bad},
			gates:  Gates{MinAccuracy: 0.9, MaxLatencyP95: time.Minute, LatencyRuns: 5},
			failed: "accuracy", reason: "accuracy 0 < 0.9"},
		{name: "worse than the champion by more than the margin",
			in:     Input{Candidate: bad, Champion: good, ChampionVersion: "3"},
			gates:  generous,
			failed: CheckChampion, reason: "champion 3's 1"},
		{name: "latency budget that cannot be met",
			in:     Input{Candidate: good},
			gates:  Gates{MaxLatencyP95: time.Nanosecond, LatencyRuns: 3},
			failed: CheckLatency, reason: "budget 1ns"},
		{name: "champion on other inputs is not compared",
			in:     Input{Candidate: good, Champion: []byte("not onnx"), ChampionVersion: "2"},
			gates:  generous,
			passed: true, wantCheck: []string{CheckChampion}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.X, in.Y, in.Task, in.Classes = x, y, training.Classification, 2
			in.Lineage = json.RawMessage(`{"dataset":"toy"}`)
			rep, err := Validate(context.Background(), in, tt.gates)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed() != tt.passed {
				t.Fatalf("status %s, want passed=%v; checks %+v", rep.Status, tt.passed, rep.Checks)
			}
			if rep.ValidatedAt.IsZero() || string(rep.Lineage) != `{"dataset":"toy"}` || rep.HoldoutRows != 200 {
				t.Errorf("report %+v lacks its lineage, rows or time", rep)
			}
			for _, name := range tt.wantCheck {
				if c, ok := find(rep, name); !ok || !c.Passed {
					t.Errorf("check %s = %+v, %v; want a passed check", name, c, ok)
				}
			}
			if tt.failed == "" {
				if len(rep.Reasons) != 0 {
					t.Errorf("reasons %q for a passing report", rep.Reasons)
				}
				return
			}
			if c, ok := find(rep, tt.failed); !ok || c.Passed {
				t.Errorf("check %s = %+v, %v; want a failed check", tt.failed, c, ok)
			}
			if !strings.Contains(rep.Summary(), tt.reason) {
				t.Errorf("reasons %q do not say %q", rep.Reasons, tt.reason)
			}
		})
	}
}

func TestValidateTrainedModelParity(t *testing.T) {
	onnxrt.MustInitForTest(t)
	for _, task := range []training.Task{training.Classification, training.Regression} {
		t.Run(string(task), func(t *testing.T) {
			x, y := toy(300, 7)
			if task == training.Regression {
				for i, row := range x {
					y[i] = 3*row[0] - 2*row[1] + 10
				}
			}
			spec := training.Spec{Task: task, Trainer: "logistic", Epochs: 30}.Defaults()
			if task == training.Regression {
				spec.Trainer = "linear"
			}
			res, err := training.Builtin{}.Train(context.Background(), spec, training.Data{X: x, Y: y}, func(training.Progress) {})
			if err != nil {
				t.Fatal(err)
			}
			_, held := training.Split(y, spec.Holdout, task == training.Classification, spec.Seed)
			in := Input{Candidate: res.Model, Input: res.Input, Task: task, Classes: 2, Reported: res.Metrics}
			for _, i := range held {
				in.X, in.Y = append(in.X, x[i]), append(in.Y, y[i])
			}
			g := Gates{MaxLatencyP95: time.Minute, LatencyRuns: 3}
			rep, err := Validate(context.Background(), in, g)
			if err != nil {
				t.Fatal(err)
			}
			if c, ok := find(rep, CheckParity); !ok || !c.Passed {
				t.Fatalf("parity %+v, %v; want passed (trainer %v)", c, ok, res.Metrics)
			}
			// A trainer that misreports its metrics fails parity.
			in.Reported = map[string]float64{}
			for k, v := range res.Metrics {
				in.Reported[k] = v*1.1 + 0.01
			}
			rep, err = Validate(context.Background(), in, g)
			if err != nil {
				t.Fatal(err)
			}
			if c, _ := find(rep, CheckParity); c.Passed || rep.Passed() {
				t.Fatalf("parity %+v with misreported metrics; want failed", c)
			}
		})
	}
}

func TestValidateRefuses(t *testing.T) {
	onnxrt.MustInitForTest(t)
	x, y := toy(10, 1)
	tests := []struct {
		name  string
		in    Input
		gates Gates
		want  string
	}{
		{"regression gate on a classifier", Input{Candidate: linear(t, 1), X: x, Y: y, Task: training.Classification, Classes: 2}, Gates{MaxRMSE: 1}, "max_rmse"},
		{"accuracy above 1", Input{Candidate: linear(t, 1), X: x, Y: y, Task: training.Classification, Classes: 2}, Gates{MinAccuracy: 90}, "min_accuracy 90"},
		{"no holdout", Input{Candidate: linear(t, 1), Task: training.Classification, Classes: 2}, Gates{}, "holdout has 0 rows"},
		{"candidate not a model", Input{Candidate: []byte("x"), X: x, Y: y, Task: training.Classification, Classes: 2}, Gates{}, "candidate model does not load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Validate(context.Background(), tt.in, tt.gates)
			if !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want Invalid saying %q", err, tt.want)
			}
		})
	}
}

func TestGatesJSON(t *testing.T) {
	var g Gates
	if err := json.Unmarshal([]byte(`{"min_accuracy":0.9,"max_latency_p95":"20ms","champion_margin":0.05}`), &g); err != nil {
		t.Fatal(err)
	}
	if g.MinAccuracy != 0.9 || g.MaxLatencyP95 != 20*time.Millisecond || g.ChampionMargin != 0.05 {
		t.Fatalf("decoded %+v", g)
	}
	b, err := json.Marshal(g)
	if err != nil || !strings.Contains(string(b), `"max_latency_p95":"20ms"`) {
		t.Fatalf("encoded %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"max_latency_p95":"soon"}`), &g); err == nil || !strings.Contains(err.Error(), "50ms") {
		t.Fatalf("bad duration: err = %v", err)
	}
	d := Gates{}.Defaults()
	if d.ChampionMargin != DefaultChampionMargin || d.MaxLatencyP95 != DefaultMaxLatencyP95 || d.LatencyRuns != DefaultLatencyRuns || d.MinAccuracy != 0 {
		t.Fatalf("defaults %+v", d)
	}
}
