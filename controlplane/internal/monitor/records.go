package monitor

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

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

// getJSON reads key into v; found is false if the key is missing.
func getJSON(tx store.Tx, key []byte, v any) (found bool, err error) {
	b, err := tx.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

func putJSON(tx store.Tx, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := tx.Set(key, b); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}
