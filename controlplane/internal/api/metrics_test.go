package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/procstats"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

func TestMetrics(t *testing.T) {
	batches := 3.0
	srv := httptest.NewServer(mustNew(t, Deps{Metrics: func() []procstats.Metric {
		return []procstats.Metric{{Name: "shoal_telemetry_batches_total", Help: "Batches.", Kind: procstats.Counter, Value: batches}}
	}}, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	get := func(url string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}

	code, ct, body := get(srv.URL + "/metrics")
	if code != http.StatusOK || ct != procstats.ContentType {
		t.Fatalf("GET /metrics = %d %q: %s", code, ct, body)
	}
	for _, want := range []string{"\n# TYPE shoal_telemetry_batches_total counter\nshoal_telemetry_batches_total 3\n", "\ngo_goroutines ", "\nprocess_uptime_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, body)
		}
	}
	batches = 4
	if _, _, body := get(srv.URL + "/metrics"); !strings.Contains(body, "\nshoal_telemetry_batches_total 4\n") {
		t.Errorf("the extra metrics are not read per scrape:\n%s", body)
	}

	// Without extras (the full API over real parts).
	e := newEnv(t)
	r := e.get("/metrics")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "\ngo_goroutines ") || strings.Contains(string(r.body), "shoal_") {
		t.Errorf("GET /metrics without extras = %d:\n%s", r.status, r.body)
	}
	e.do(http.MethodPost, "/metrics", nil).wantError(t, http.StatusMethodNotAllowed, shoalerr.Invalid, "POST")
}
