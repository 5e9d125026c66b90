package localapi

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/procstats"
)

// scrape GETs /metrics and returns the samples by name.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != procstats.ContentType {
		t.Fatalf("GET /metrics = %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$`)
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample line: %q", line)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}

func TestMetrics(t *testing.T) {
	queued := 7.0
	srv, _ := server(t, Config{Metrics: func() []procstats.Metric {
		return []procstats.Metric{{Name: "shoal_agent_outbox_records", Kind: procstats.Gauge, Value: queued}}
	}})
	m := scrape(t, srv.URL)
	for name, want := range map[string]float64{
		"shoal_agent_predictions_total": 0, "shoal_agent_prediction_failures_total": 0,
		"shoal_agent_models_loaded": float64(len(sharedModels(t).Names())), "shoal_agent_outbox_records": 7,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (present: %v); want %v", name, got, ok, want)
		}
	}
	if m["go_goroutines"] < 1 || m["process_uptime_seconds"] <= 0 {
		t.Errorf("process metrics missing: %v", m)
	}

	// Two predictions (one a model failure) and a refused request, which
	// the telemetry does not count either.
	do(t, srv, "POST", "/v2/models/reshape/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,2,3]}]}`)
	do(t, srv, "POST", "/v2/models/reshape/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[4],"data":[1,2,3,4]}]}`)
	do(t, srv, "POST", "/v2/models/reshape/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[4],"data":[1,2,3]}]}`)
	queued = 9
	m = scrape(t, srv.URL)
	if m["shoal_agent_predictions_total"] != 2 || m["shoal_agent_prediction_failures_total"] != 1 || m["shoal_agent_outbox_records"] != 9 {
		t.Errorf("after 2 predictions (1 failed) and a bad request: predictions %v, failures %v, outbox %v",
			m["shoal_agent_predictions_total"], m["shoal_agent_prediction_failures_total"], m["shoal_agent_outbox_records"])
	}

	// Without extras, and with the wrong method.
	plain, _ := server(t, Config{})
	if m := scrape(t, plain.URL); m["shoal_agent_predictions_total"] != 0 {
		t.Errorf("predictions on a fresh handler = %v", m["shoal_agent_predictions_total"])
	}
	if r := do(t, plain, "POST", "/metrics", ""); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET" {
		t.Errorf("POST /metrics = %d, Allow %q", r.status, r.header.Get("Allow"))
	}
}
