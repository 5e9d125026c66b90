package training

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// fakeTrainer returns a Command running testdata/fake-trainer.sh in mode,
// and the model it writes.
func fakeTrainer(t *testing.T, mode string) (*Command, []byte) {
	t.Helper()
	model, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "fake", Layers: onnxbuild.RandomLayers(1, 2, 3), Classifier: true})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, model, 0o600); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "fake-trainer.sh"))
	if err != nil {
		t.Fatal(err)
	}
	return &Command{Path: script, Env: []string{"FAKE_MODE=" + mode, "FAKE_MODEL=" + path}, Timeout: 20 * time.Second, TempDir: t.TempDir()}, model
}

var commandData = Data{
	X:        [][]float64{{1, 0.5}, {2, math.NaN()}, {3, 1e-7}, {4.25, -2}},
	Y:        []float64{0, 1, 1, 0},
	Features: []string{"speed", "load, kg"},
	Target:   "fault",
	Classes:  []string{"no", "yes"},
}

var commandSpecJSON = `{"trainer":"torch","task":"classification","epochs":2,"seed":5,"features":["speed","load, kg"],"target":"fault","classes":["no","yes"]}`

func TestCommandTrainer(t *testing.T) {
	t.Setenv("SHOAL_TEST_SECRET", "hunter2") // must not reach the trainer
	c, model := fakeTrainer(t, "ok")
	var got []Progress
	res, err := c.Train(context.Background(), Spec{Trainer: "torch", Task: Classification, Epochs: 2, Seed: 5}, commandData, func(p Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Model, model) || res.Input != "input" || !slices.Equal(res.Outputs, []string{"probabilities", "label"}) {
		t.Errorf("model of %d bytes, input %q, outputs %q", len(res.Model), res.Input, res.Outputs)
	}
	if res.Metrics["accuracy"] != 0.93 || res.Metrics["macro_f1"] != 0.91 || len(res.Metrics) != 2 {
		t.Errorf("metrics %v", res.Metrics)
	}
	var lines []string
	for _, p := range got {
		lines = append(lines, p.Stream+": "+p.Line)
	}
	want := []string{
		`stdout: header: speed,"load, kg",fault`,
		"stdout: row 3: 3,1e-07,1",
		"stdout: rows: 4",
		"stdout: spec: " + commandSpecJSON,
		"stdout: secret: unset",
		`stdout: {"epoch": 1, "epochs": 2, "train_loss": 0.9, "validation_metric": 0.5, "metric": "accuracy"}`,
		"stderr: warming up",
		`stdout: {"epoch": 2, "epochs": 2, "train_loss": 0.4, "validation_metric": 0.75, "metric": "accuracy"}`,
	}
	// stdout and stderr are read apart: compare each stream's order.
	for _, stream := range []string{"stdout", "stderr"} {
		if g, w := only(lines, stream), only(want, stream); !slices.Equal(g, w) {
			t.Errorf("%s lines:\n%s\nwant:\n%s", stream, strings.Join(g, "\n"), strings.Join(w, "\n"))
		}
	}
	if res.Epochs != 2 || len(res.History) != 2 || res.History[1].ValidationMetric != 0.75 || res.History[0].TrainLoss != 0.9 || res.History[1].Metric != MetricAccuracy {
		t.Errorf("epochs %d, history %+v", res.Epochs, res.History)
	}
	if left, _ := os.ReadDir(c.TempDir); len(left) != 0 {
		t.Errorf("work directory left behind: %v", left)
	}
}

func only(lines []string, stream string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, stream+": ") {
			out = append(out, l)
		}
	}
	return out
}

func TestCommandTrainerFails(t *testing.T) {
	spec := Spec{Trainer: "torch", Task: Classification}
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{"fail", []string{"trainer fake-trainer.sh failed (exit status 3)", "stderr: CUDA out of memory", "stdout: {\"epoch\": 2"}},
		{"nomodel", []string{"exited 0 but wrote no model: model.onnx is missing", "$SHOAL_OUT/model.onnx"}},
		{"notonnx", []string{"its model.onnx is not an ONNX model"}},
		{"nometrics", []string{"wrote no metrics: metrics.json is missing"}},
		{"badjson", []string{"its metrics.json is not a JSON object of numbers", `"{\"accuracy\": 0.9"`}},
		{"notnumber", []string{`gives "accuracy" as "high", not a number`}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			c, _ := fakeTrainer(t, tc.mode)
			_, err := c.Train(context.Background(), spec, commandData, nil)
			if !shoalerr.Is(err, shoalerr.Invalid) {
				t.Fatalf("error %v; want Invalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestCommandTrainerLongLine(t *testing.T) {
	c, _ := fakeTrainer(t, "longline")
	var got []string
	if _, err := c.Train(context.Background(), Spec{Task: Classification}, commandData, func(p Progress) {
		if p.Stream == "stdout" {
			got = append(got, p.Line)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if n := len(got); n < 2 || got[n-1] != "after" || got[n-2] != strings.Repeat("x", maxLineBytes) {
		t.Errorf("last lines %.40q", got[max(0, n-2):])
	}
}

func TestCommandTrainerTimeoutAndCancel(t *testing.T) {
	spec := Spec{Task: Classification}
	c, _ := fakeTrainer(t, "sleep")
	c.Timeout = 300 * time.Millisecond
	start := time.Now()
	_, err := c.Train(context.Background(), spec, commandData, nil)
	if !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), "ran past its timeout of 300ms") {
		t.Errorf("error %v; want a timeout", err)
	}
	// The script's sleep is in its process group: it must not hold the
	// pipes open for its 30 s.
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("took %s to stop", d)
	}

	c.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	_, err = c.Train(ctx, spec, commandData, func(p Progress) {
		if p.Epoch == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v; want context.Canceled", err)
	}
}

func TestCommandTrainerRejects(t *testing.T) {
	c, _ := fakeTrainer(t, "ok")
	c.Path = filepath.Join(t.TempDir(), "missing-trainer")
	_, err := c.Train(context.Background(), Spec{Task: Regression}, commandData, nil)
	if !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), "cannot start trainer missing-trainer") {
		t.Errorf("error %v", err)
	}
	_, err = c.Train(context.Background(), Spec{}, commandData, nil)
	if !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), `task "" is unknown`) {
		t.Errorf("error %v", err)
	}
}
