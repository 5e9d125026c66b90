package registry

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// TestPushValidated: a passed version is signed and deployable with its
// report; a failed one is kept, unsigned, and refused by Manifest and
// Signature with the reasons.
func TestPushValidated(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data := testModel(t, "example_dynamic_axes.onnx")
	passed := &validation.Report{Status: validation.Passed, Checks: []validation.Check{{Name: "accuracy", Passed: true, Value: 0.95, Limit: 0.9}}}
	mv, _, err := e.reg.PushValidated(ctx, "summer", "2", bytes.NewReader(data), passed)
	if err != nil {
		t.Fatal(err)
	}
	if mv.Signature == "" || mv.ValidationStatus() != validation.Passed {
		t.Fatalf("passed version = %+v; want signed and passed", mv)
	}
	if _, _, err := e.reg.Manifest(ctx, "summer", "2", ManifestOptions{}); err != nil {
		t.Fatalf("Manifest of a passed version: %v", err)
	}

	failed := &validation.Report{Status: validation.Failed, Reasons: []string{"accuracy 0.71 < 0.9"},
		Checks: []validation.Check{{Name: "accuracy", Value: 0.71, Limit: 0.9}}}
	other := testModel(t, "example_multitype.onnx")
	mv, _, err = e.reg.PushValidated(ctx, "summer", "3", bytes.NewReader(other), failed)
	if err != nil {
		t.Fatal(err)
	}
	if mv.Signature != "" || mv.KeyID != "" || mv.ValidationStatus() != validation.Failed {
		t.Fatalf("failed version = %+v; want unsigned and failed", mv)
	}
	got, err := e.reg.Get(ctx, "summer", "3")
	if err != nil || got.Validation == nil || got.Validation.Checks[0].Value != 0.71 {
		t.Fatalf("Get = %+v, %v; want the report stored", got, err)
	}
	const want = "version 3 of summer failed validation: accuracy 0.71 < 0.9; it cannot be deployed"
	if _, _, err := e.reg.Manifest(ctx, "summer", "3", ManifestOptions{}); !shoalerr.Is(err, shoalerr.Conflict) || !strings.Contains(err.Error(), want) {
		t.Errorf("Manifest of a failed version: err = %v; want Conflict saying %q", err, want)
	}
	if _, err := e.reg.Signature(ctx, "summer", "3"); !shoalerr.Is(err, shoalerr.Conflict) {
		t.Errorf("Signature of a failed version: err = %v; want Conflict", err)
	}
	if vs, err := e.reg.Versions(ctx, "summer"); err != nil || len(vs) != 2 {
		t.Errorf("Versions = %d, %v; want both kept", len(vs), err)
	}

	// A hand push has no report and is deployable, as before.
	mv, _ = e.push("summer", "4", data)
	if mv.Validation != nil || mv.ValidationStatus() != "" || mv.Signature == "" {
		t.Errorf("hand push = %+v", mv)
	}
}
