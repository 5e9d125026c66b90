package main

import (
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// Against a real control plane with nothing captured: zero counts, and
// --to-dataset says why there is no dataset to make.
func TestCapturesNone(t *testing.T) {
	cp := controltest.Start(t)
	out, _, err := run(t, cp.URL(), "captures", "m1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "model m1: 0 captured rows, 0 labelled" {
		t.Errorf("output %q", out)
	}
	_, _, err = run(t, cp.URL(), "captures", "m1", "--to-dataset", "m1-captures")
	if err == nil || !strings.Contains(err.Error(), "no labelled captured rows") || !strings.Contains(err.Error(), "--capture-share") {
		t.Errorf("err = %v; want one saying there are no labelled rows and how to capture some", err)
	}
}

// The counts table and the dataset made, from canned answers.
func TestCapturesTable(t *testing.T) {
	url, asked := cannedServer(t, map[string]string{
		"/api/v1/captures/m1":         `{"model":"m1","rows":5,"labelled":4,"by_version":{"2":2,"1":3}}`,
		"/api/v1/captures/m1/dataset": `{"name":"d","version":3,"rows":4,"label":"label","task":"classification","features":[{"name":"a"},{"name":"b"}]}`,
	})
	out, _, err := run(t, url, "captures", "m1")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "model m1: 5 captured rows, 4 labelled" || !strings.HasPrefix(lines[2], "1 ") || !strings.HasPrefix(lines[3], "2 ") {
		t.Errorf("output:\n%s", out)
	}
	out, _, err = run(t, url, "captures", "m1", "--to-dataset", "d", "--label", "y")
	if err != nil {
		t.Fatal(err)
	}
	if got := (*asked)[1]; got != "POST /api/v1/captures/m1/dataset?label=y&name=d " {
		t.Errorf("asked %q", got)
	}
	if want := `dataset d version 3: 4 rows, 2 features, label "label" (classification)`; strings.TrimSpace(out) != want {
		t.Errorf("output %q; want %q", out, want)
	}
}
