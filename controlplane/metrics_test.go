package controlplane_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// TestMetrics: GET /metrics has the process's figures and the ingest
// counters, which move with what devices send.
func TestMetrics(t *testing.T) {
	cp := controltest.Start(t)
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(cp.URL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics = %d: %s", resp.StatusCode, body)
		}
		return string(body)
	}
	before := scrape()
	for _, line := range []string{"shoal_telemetry_records_total 0", "shoal_telemetry_batches_total 0", "shoal_mqtt_refused_total 0", "process_open_fds ", "go_goroutines ",
		"shoal_data_stats_merged_total 0", "shoal_data_stats_rejected_total 0", "shoal_telemetry_unaggregated_records_total 0", "shoal_rollout_passes_total "} {
		if !strings.Contains(before, "\n"+line) {
			t.Errorf("GET /metrics lacks %q:\n%s", line, before)
		}
	}

	dev := connect(t, enroll(t, cp, "dev-1"))
	dev.publish(topics.Telemetry, &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "dev-1", FirstSeq: 1, LastSeq: 2,
		Records: []*shoalv1.TelemetryRecord{{Seq: 1, ModelName: "m", ModelVersion: "1", Predictions: 7}, {Seq: 2, ModelName: "m", ModelVersion: "1", Predictions: 3}}}, false)
	dev.next(topics.Ack)
	after := scrape()
	for _, line := range []string{"shoal_telemetry_records_total 2", "shoal_telemetry_batches_total 1", "shoal_telemetry_duplicate_records_total 0"} {
		if !strings.Contains(after, "\n"+line+"\n") {
			t.Errorf("after one batch of 2 records, GET /metrics lacks %q:\n%s", line, after)
		}
	}
}
