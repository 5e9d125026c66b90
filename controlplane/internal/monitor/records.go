package monitor

import "fmt"

const (
	recordPrefix   = "monitor/rec/"
	countersPrefix = "monitor/dev/"
	dropPrefix     = "monitor/drop/"
	versionPrefix  = "monitor/ver/"
	statsPrefix    = "monitor/stats/"
)

func recordKey(id string, seq uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%016x", recordPrefix, id, seq)
}

func countersKey(id string) []byte { return []byte(countersPrefix + id) }

func dropKey(id string, first, last uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%016x-%016x", dropPrefix, id, first, last)
}

// versionScanPrefix is the prefix of every device's aggregate of a model
// version. Names hold no '/', so the trailing one keeps version "1" from
// matching "10".
func versionScanPrefix(model, version string) []byte {
	return []byte(versionPrefix + model + "/" + version + "/")
}

func versionKey(model, version, id string) []byte {
	return append(versionScanPrefix(model, version), id...)
}

// deviceCounters are one device's running totals.
type deviceCounters struct {
	Records        uint64 `json:"records"`
	Predictions    uint64 `json:"predictions"`
	Errors         uint64 `json:"errors"`
	HighestSeq     uint64 `json:"highest_seq"`
	DroppedRecords uint64 `json:"dropped_records"`
}

// versionCounters are one device's running totals on one model version.
// Sums stop at the largest uint64 rather than wrap.
type versionCounters struct {
	Records      uint64 `json:"records"`
	Predictions  uint64 `json:"predictions"`
	Errors       uint64 `json:"errors"`
	LatencySumUs uint64 `json:"latency_sum_us"`
	LatencyMaxUs uint64 `json:"latency_max_us"`
	// P95WeightedSumUs is the sum over windows of the window's p95 latency
	// times its predictions: divided by Predictions, it is the mean of the
	// windows' p95s weighted by their predictions.
	P95WeightedSumUs uint64 `json:"latency_p95_weighted_sum_us"`
	// The windows covered: the earliest start and the latest end, in unix
	// milliseconds; meaningful once Records > 0.
	FirstWindowStartMs int64 `json:"first_window_start_unix_ms"`
	LastWindowEndMs    int64 `json:"last_window_end_unix_ms"`
}
