package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
)

const driftReportJSON = `{"model":"m1","policy":{"metric":"psi","threshold":0.2,"min_samples":500,"windows":3},
 "windows":[
  {"version":"1","cohort":"all","start":"2026-03-01T00:00:00Z","end":"2026-03-01T01:00:00Z","records":2,"samples":600,
   "psi":0.0001,"js":0,"ks":0,"breach":false,"features":[{"name":"a","side":"input","psi":0.0001},{"name":"b","side":"input","psi":0}]},
  {"version":"1","cohort":"all","start":"2026-03-01T01:00:00Z","end":"2026-03-01T02:00:00Z","records":2,"samples":600,
   "psi":4.3463,"js":0.39,"ks":0.5,"breach":true,"features":[
    {"name":"a","side":"input","psi":4.3463},{"name":"b","side":"input","psi":0},{"name":"c","side":"input","error":"no values in the window"},
    {"name":"label","side":"output","psi":0.25},{"name":"d","side":"input","psi":0.01}]},
  {"version":"2","cohort":"all","start":"2026-03-01T01:00:00Z","end":"2026-03-01T02:00:00Z","records":1,"samples":10,
   "error":"model \"m1\" version \"2\" has no reference profile to compare with","features":[]}]}`

const alertsJSON = `{"alerts":[{"id":"m1/1/all/0","model":"m1","version":"1","cohort":"all",
 "policy":{"metric":"psi","threshold":0.2,"min_samples":500,"windows":3},"streak_start":"2026-03-01T00:00:00Z",
 "windows":[{"start":"2026-03-01T02:00:00Z","end":"2026-03-01T03:00:00Z","samples":600,"psi":1.5,"js":0.3,"ks":0.4}],
 "top_features":[{"name":"a","side":"input","psi":1.5},{"name":"label","side":"output","psi":0.3}],
 "raised_at":"2026-03-01T03:05:00Z"}]}`

// cannedServer answers each path with its JSON, and records the queries.
func cannedServer(t *testing.T, answers map[string]string) (string, *[]string) {
	t.Helper()
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		asked = append(asked, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, a)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &asked
}

func TestDriftTable(t *testing.T) {
	url, asked := cannedServer(t, map[string]string{"/api/v1/drift/m1": driftReportJSON, "/api/v1/alerts": alertsJSON})
	out, _, err := run(t, url, "drift", "m1", "--version", "1", "--cohort", "profile:rpi4", "--last", "48h")
	if err != nil {
		t.Fatal(err)
	}
	if got := (*asked)[0]; got != "GET /api/v1/drift/m1?cohort=profile%3Arpi4&last=48h0m0s&version=1 " {
		t.Errorf("asked %q", got)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("output:\n%s", out)
	}
	for i, want := range [][]string{
		{"policy: alert when psi >= 0.2 with at least 500 samples in 3 windows in a row"},
		{"VERSION", "WINDOW (UTC)", "SAMPLES", "PSI", "TOP FEATURES (PSI)", "BREACH"},
		{"1", "all", "2026-03-01 00:00", "600", "0.000", "a 0.000, b 0.000"},
		{"2026-03-01 01:00", "4.346", "a 4.346, label 0.250, d 0.010", "!"},
		{"2", "no reference profile"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q does not hold %q", i, lines[i], w)
			}
		}
	}
	if strings.Contains(lines[2], "!") || strings.Contains(lines[3], " c ") {
		t.Errorf("output:\n%s", out)
	}

	out, _, err = run(t, url, "alerts", "--model", "m1")
	if err != nil {
		t.Fatal(err)
	}
	if got := (*asked)[1]; got != "GET /api/v1/alerts?model=m1 " {
		t.Errorf("asked %q", got)
	}
	for _, w := range []string{"RAISED (UTC)", "2026-03-01 03:05", "psi>=0.2", "1.500", "2026-03-01 00:00", "a, label"} {
		if !strings.Contains(out, w) {
			t.Errorf("alerts output does not hold %q:\n%s", w, out)
		}
	}
}

// TestDriftCommands runs the commands against a control plane: the routes
// are wired, a policy round-trips, and an empty model reads plainly.
func TestDriftCommands(t *testing.T) {
	cp := controltest.Start(t)
	url := cp.URL()

	if _, _, err := run(t, url, "drift", "policy", "m1"); err == nil || !strings.Contains(err.Error(), "no drift policy") {
		t.Errorf("drift policy before any = %v; want an error saying there is none", err)
	}
	if _, _, err := run(t, url, "drift", "policy", "m1", "--windows", "2"); err == nil || !strings.Contains(err.Error(), "--threshold") {
		t.Errorf("drift policy without --threshold = %v; want an error asking for it", err)
	}
	if _, _, err := run(t, url, "drift", "policy", "m1", "--metric", "kl", "--threshold", "0.2"); err == nil || !strings.Contains(err.Error(), "metric") {
		t.Errorf("drift policy --metric kl = %v; want an error about the metric", err)
	}
	out, _, err := run(t, url, "drift", "policy", "m1", "--metric", "js", "--threshold", "0.1", "--min-samples", "100", "--windows", "2")
	if err != nil || !strings.Contains(out, "alert when js >= 0.1 with at least 100 samples in 2 windows in a row") {
		t.Fatalf("drift policy set = %q, %v", out, err)
	}
	out, _, err = run(t, url, "drift", "policy", "m1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var p client.DriftPolicy
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Metric != "js" || p.Threshold != 0.1 || p.MinSamples != 100 || p.Windows != 2 || p.UpdatedAt.IsZero() {
		t.Errorf("drift policy --json = %s (%v)", out, err)
	}
	out, _, err = run(t, url, "drift", "m1")
	if err != nil || !strings.Contains(out, "alert when js >= 0.1") || !strings.Contains(out, "no data statistics") {
		t.Errorf("drift m1 = %q, %v", out, err)
	}
	out, _, err = run(t, url, "alerts")
	if err != nil || strings.TrimSpace(out) != "no alerts" {
		t.Errorf("alerts = %q, %v", out, err)
	}
	if _, _, err := run(t, url, "drift", "m1", "--cohort", "rpi4"); err == nil || !strings.Contains(err.Error(), "cohort") {
		t.Errorf("drift --cohort rpi4 = %v; want an error about the cohort", err)
	}
}
