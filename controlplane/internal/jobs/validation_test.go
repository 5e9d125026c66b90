package jobs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// TestGatesPassSignFailKeepUnsigned: a job whose model passes its gates
// makes a signed, deployable version with the report; the next job, held
// to a latency budget no model meets, makes a version that is kept,
// unsigned and refused by Manifest, and the job fails saying why.
func TestGatesPassSignFailKeepUnsigned(t *testing.T) {
	e := newEnv(t)
	e.pushIris()
	ctx := context.Background()

	spec := irisSpec("iris", training.Logistic)
	spec.Gates = validation.Gates{MinAccuracy: 0.8, MaxLatencyP95: time.Minute, LatencyRuns: 5}
	j := e.wait(e.submit(spec).ID)
	if j.State != Succeeded || j.Result.Validation == nil || !j.Result.Validation.Passed() {
		t.Fatalf("job = %s (%s), result %+v; want succeeded with a passed report", j.State, j.Error, j.Result)
	}
	rep := j.Result.Validation
	if rep.Champion != "" || rep.HoldoutRows != j.Result.HoldoutRows || !strings.Contains(string(rep.Lineage), `"dataset":"iris"`) {
		t.Errorf("report = %+v; want no champion, the holdout rows and the lineage", rep)
	}
	names := map[string]bool{}
	for _, c := range rep.Checks {
		names[c.Name] = true
	}
	for _, n := range []string{training.MetricAccuracy, validation.CheckParity, validation.CheckLatency} {
		if !names[n] {
			t.Errorf("report lacks check %s: %+v", n, rep.Checks)
		}
	}
	mv, err := e.reg.Get(ctx, "iris", "1")
	if err != nil || mv.Signature == "" || mv.ValidationStatus() != validation.Passed {
		t.Fatalf("version 1 = %+v, %v; want signed and passed", mv, err)
	}

	spec.Gates = validation.Gates{MaxLatencyP95: time.Nanosecond, LatencyRuns: 3}
	j = e.wait(e.submit(spec).ID)
	if j.State != Failed || j.Result == nil || j.Result.ModelVersion != "2" ||
		!strings.Contains(j.Error, "version 2 of iris failed validation: ") || !strings.Contains(j.Error, "budget 1ns") {
		t.Fatalf("job = %s %q, result %+v; want failed by the latency gate, version 2 kept", j.State, j.Error, j.Result)
	}
	if got := j.Result.Validation; got == nil || got.Champion != "1" {
		t.Errorf("report = %+v; want version 1 as the champion", got)
	}
	mv, err = e.reg.Get(ctx, "iris", "2")
	if err != nil || mv.Signature != "" || mv.ValidationStatus() != validation.Failed {
		t.Fatalf("version 2 = %+v, %v; want unsigned and failed", mv, err)
	}
	if _, _, err := e.reg.Manifest(ctx, "iris", "2", registry.ManifestOptions{}); !shoalerr.Is(err, shoalerr.Conflict) {
		t.Errorf("Manifest of the failed version: %v; want Conflict", err)
	}

	// A failed version is never the champion: the next job compares with 1.
	spec.Gates = validation.Gates{MaxLatencyP95: time.Minute, LatencyRuns: 3}
	j = e.wait(e.submit(spec).ID)
	if j.State != Succeeded || j.Result.Validation.Champion != "1" {
		t.Errorf("third job = %s %q, report %+v; want succeeded against champion 1", j.State, j.Error, j.Result.Validation)
	}
}

func TestGatesChecked(t *testing.T) {
	e := newEnv(t)
	spec := irisSpec("iris", training.Logistic)
	spec.Task, spec.Gates = training.Classification, validation.Gates{MaxRMSE: 1}
	if _, err := e.runner.Submit(context.Background(), spec); !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), "max_rmse") {
		t.Fatalf("Submit = %v; want Invalid naming max_rmse", err)
	}
}
