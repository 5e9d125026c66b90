package monitor

import "fmt"

const (
	recordPrefix   = "monitor/rec/"
	countersPrefix = "monitor/dev/"
	dropPrefix     = "monitor/drop/"
)

func recordKey(id string, seq uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%016x", recordPrefix, id, seq)
}

func countersKey(id string) []byte { return []byte(countersPrefix + id) }

func dropKey(id string, first, last uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%016x-%016x", dropPrefix, id, first, last)
}

// deviceCounters are one device's running totals.
type deviceCounters struct {
	Records        uint64 `json:"records"`
	Predictions    uint64 `json:"predictions"`
	Errors         uint64 `json:"errors"`
	HighestSeq     uint64 `json:"highest_seq"`
	DroppedRecords uint64 `json:"dropped_records"`
}
