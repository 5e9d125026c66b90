package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// TestDatasetCommands drives `shoal dataset` against a real control plane:
// tables for people, JSON for scripts, and the parser's errors as they are.
func TestDatasetCommands(t *testing.T) {
	cp := controltest.Start(t)
	s := cp.URL()

	out, _, err := run(t, s, "dataset", "list")
	if err != nil || !strings.Contains(out, "no datasets yet") {
		t.Fatalf("empty dataset list: %q %v", out, err)
	}
	out, _, err = run(t, s, "dataset", "list", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty dataset list --json: %q %v", out, err)
	}

	soil := writeFile(t, "soil.csv", "moisture, soil ,yield\r\n0.3,clay,high\r\n0.1,sand,low\r\n0.25,clay,high\r\n0.2,silt,low\r\n")
	out, _, err = run(t, s, "dataset", "push", "--name", "soil", "--label", "yield", soil)
	for _, want := range []string{"pushed dataset soil v1  sha256:", "4 rows, 2 features (1 categorical), label \"yield\": classification, 2 classes: high, low"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("push: %q %v; want %q", out, err, want)
		}
	}
	// A second version, as a regression on another column.
	out, _, err = run(t, s, "dataset", "push", "--name", "soil", "--label", "moisture", "--task", "regression", soil, "--json")
	var v2 client.DatasetVersion
	if err != nil || json.Unmarshal([]byte(out), &v2) != nil || v2.Version != 2 || v2.Task != "regression" || v2.Label != "moisture" {
		t.Fatalf("push --json: %q %v", out, err)
	}

	bad := writeFile(t, "bad.csv", "moisture,soil,yield\n0.3,clay,high\n0.1,sand,low\nwet,clay,high\n0.2,silt,low\n")
	_, _, err = run(t, s, "dataset", "push", "--name", "soil", "--label", "yield", bad)
	if err == nil || !strings.Contains(err.Error(), `dataset soil not stored: row 4, column "moisture": "wet" is not a number`) {
		t.Errorf("push of a bad CSV: %v", err)
	}
	if _, _, err := run(t, s, "dataset", "push", "--name", "soil", soil); err == nil || !strings.Contains(err.Error(), "--label") {
		t.Errorf("push without --label: %v", err)
	}
	if _, _, err := run(t, s, "dataset", "push", "--name", "soil", "--label", "yield", "missing.csv"); err == nil || !strings.Contains(err.Error(), "open CSV file") {
		t.Errorf("push of a missing file: %v", err)
	}

	out, _, err = run(t, s, "dataset", "list")
	for _, want := range []string{"DATASET", "LATEST", "soil", "v2", "moisture", "regression"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("dataset list: %q %v; want %q", out, err, want)
		}
	}
	out, _, err = run(t, s, "dataset", "list", "--json")
	var list []client.DatasetSummary
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Versions != 2 || list[0].Rows != 4 {
		t.Errorf("dataset list --json: %q %v", out, err)
	}

	out, _, err = run(t, s, "dataset", "show", "soil")
	for _, want := range []string{"VERSION", "v1", "v2", v2.SHA256[:12], "yield", "classification"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("dataset show soil: %q %v; want %q", out, err, want)
		}
	}
	for _, version := range []string{"1", "v1"} {
		out, _, err = run(t, s, "dataset", "show", "soil", version)
		for _, want := range []string{"FIELD", "v1", "label", "yield", "classification, 2 classes: high, low", "COLUMN", "moisture", "numeric", "soil", "categorical", "3: clay, sand, silt"} {
			if err != nil || !strings.Contains(out, want) {
				t.Errorf("dataset show soil %s: %q %v; want %q", version, out, err, want)
			}
		}
	}
	out, _, err = run(t, s, "dataset", "show", "soil", "latest", "--json")
	var latest client.DatasetVersion
	if err != nil || json.Unmarshal([]byte(out), &latest) != nil || latest.Version != 2 || len(latest.Features) != 2 {
		t.Errorf("dataset show soil latest --json: %q %v", out, err)
	}
	if _, _, err := run(t, s, "dataset", "show", "soil", "first"); err == nil || !strings.Contains(err.Error(), `version "first" is not a version number`) {
		t.Errorf("show with a bad version: %v", err)
	}
	if _, _, err := run(t, s, "dataset", "show", "nope"); err == nil || !strings.Contains(err.Error(), `dataset "nope" has no versions`) {
		t.Errorf("show unknown: %v", err)
	}
}
