package client

import "testing"

func TestMetricsLine(t *testing.T) {
	if got := MetricsLine(map[string]float64{"macro_f1": 0.96581, "accuracy": 0.96667}); got != "accuracy 0.9667  macro_f1 0.9658" {
		t.Errorf("MetricsLine = %q", got)
	}
	if got := MetricsLine(nil); got != "-" {
		t.Errorf("MetricsLine(nil) = %q; want -", got)
	}
}
