package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// irisCSV returns the shared iris.csv, or skips the test.
func irisCSV(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SHOAL_DATASETS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "datasets")
	}
	path := filepath.Join(dir, "iris.csv")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("iris.csv is absent (%v); it lives in the shared datasets folder next to the repository, or set $SHOAL_DATASETS", err)
	}
	return path
}

// TestTrainCommands trains iris through the CLI against a real control
// plane: --wait --json gives the job with its holdout metrics and the
// version it made, and the model is in the registry with its profile.
func TestTrainCommands(t *testing.T) {
	cp := controltest.Start(t)
	s := cp.URL()
	if _, _, err := run(t, s, "dataset", "push", "--name", "iris", "--label", "Species", irisCSV(t)); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, s, "jobs")
	if err != nil || !strings.Contains(out, "no training jobs yet") {
		t.Fatalf("empty job list: %q %v", out, err)
	}

	out, _, err = run(t, s, "train", "--dataset", "iris", "--model", "iris", "--trainer", "logistic", "--seed", "7", "--wait", "--json", "--poll", "10ms")
	var j client.Job
	if err != nil || json.Unmarshal([]byte(out), &j) != nil {
		t.Fatalf("train --wait --json: %q %v", out, err)
	}
	if j.State != "succeeded" || j.Result == nil || j.Result.ModelVersion != "1" || j.Result.Metrics["accuracy"] < 0.9 ||
		j.Result.Lineage.DatasetVersion != 1 || j.Result.Lineage.Spec.Seed != 7 || j.Result.ProfileBytes == 0 || len(j.History) == 0 {
		t.Fatalf("job = %+v, result %+v", j, j.Result)
	}
	c, _ := client.New(s)
	if mv, err := c.ModelVersion(t.Context(), "iris", "1"); err != nil || mv.SHA256 != j.Result.ModelSHA256 {
		t.Errorf("registry has %+v, %v", mv, err)
	}

	// Without --wait: the id, to follow with `shoal job show`.
	out, stderr, err := run(t, s, "train", "--dataset", "iris", "--dataset-version", "1", "--model", "iris", "--trainer", "mlp", "--hidden", "8,4", "--epochs", "3", "--champion-margin", "1")
	id := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(id, "job-") || !strings.Contains(stderr, "shoal job show "+id) {
		t.Fatalf("train: %q %q %v", out, stderr, err)
	}
	done, err := c.WaitJob(t.Context(), id, 10*time.Millisecond, nil)
	if err != nil || done.State != "succeeded" || done.Result.ModelVersion != "2" || len(done.Spec.Hidden) != 2 {
		t.Fatalf("second job = %+v, %v", done, err)
	}
	out, _, err = run(t, s, "job", "show", id)
	for _, want := range []string{id + " succeeded: mlp on dataset iris v1, model iris", "epoch 3/3", "made iris version 2", "holdout accuracy", "from dataset iris v1",
		"validation PASSED", "champion version 1", "CHECK", "ort_parity", "latency_p95_ms", "pass"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("job show: %q %v; want %q", out, err, want)
		}
	}
	out, _, err = run(t, s, "model", "show", "iris", "2")
	for _, want := range []string{"validation", "passed", "ort_parity"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("model show: %q %v; want %q", out, err, want)
		}
	}
	out, _, err = run(t, s, "jobs")
	for _, want := range []string{"JOB", "STATE", id, j.ID, "succeeded", "iris latest", "iris v1", "accuracy"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("jobs: %q %v; want %q", out, err, want)
		}
	}

	// A model below its gate is kept unsigned, and says so.
	out, _, err = run(t, s, "train", "--dataset", "iris", "--model", "iris", "--trainer", "mlp", "--hidden", "2", "--epochs", "1",
		"--min-accuracy", "0.999", "--champion-margin", "1", "--wait", "--poll", "10ms")
	if err == nil || !strings.Contains(out, "validation FAILED: kept unsigned, cannot be deployed") || !strings.Contains(out, "FAIL") {
		t.Errorf("train below its gate: %q %v", out, err)
	}
	if out, _, err := run(t, s, "model", "show", "iris", "3"); err != nil || !strings.Contains(out, "failed: ") {
		t.Errorf("model show of a failed version: %q %v", out, err)
	}
	if _, _, err := run(t, s, "deploy", "--model", "iris", "--version", "3"); err == nil || !strings.Contains(err.Error(), "cannot be deployed") {
		t.Errorf("deploy of a failed version: %v", err)
	}

	// --wait on a job that fails prints why and exits non-zero.
	out, _, err = run(t, s, "train", "--dataset", "nope", "--model", "m", "--wait", "--poll", "10ms")
	if err == nil || !strings.Contains(err.Error(), "failed") || !strings.Contains(out, `dataset "nope" has no versions`) {
		t.Errorf("failing train --wait: %q %v", out, err)
	}
	if _, _, err := run(t, s, "job", "cancel", id); err == nil || !strings.Contains(err.Error(), "has succeeded already") {
		t.Errorf("cancel of a finished job: %v", err)
	}
	if _, _, err := run(t, s, "train", "--model", "m"); err == nil || !strings.Contains(err.Error(), "--dataset") {
		t.Errorf("train without --dataset: %v", err)
	}
	if _, _, err := run(t, s, "train", "--dataset", "iris", "--model", "m", "--trainer", "forest"); err == nil || !strings.Contains(err.Error(), `trainer "forest" is unknown`) {
		t.Errorf("train with an unknown trainer: %v", err)
	}
}
