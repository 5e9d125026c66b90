package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// MaxBatchVersions bounds the model versions whose aggregates one batch
// updates, so that a batch still fits in one transaction (see
// MaxBatchBytes). The agent writes one record per model version and
// window, so a batch holds a few versions. New records of further versions
// are stored and counted for the device, but left out of the version
// aggregates (IngestStats.Unaggregated) for good: sent again, they
// are duplicates.
const MaxBatchVersions = 64

// maxNameLen bounds model names and versions, as the registry does.
const maxNameLen = 128

// VersionStats is one device's telemetry totals on one model version, over
// every window it reported on that version: what a rollout's health gate
// compares with the device's previous version.
//
// Latencies are derived from per-window figures. LatencyMeanUs is the sum
// of latencies over predictions. LatencyP95Us is the mean of the windows'
// p95 latencies weighted by their predictions: an approximation, not the
// p95 of all predictions, which would need the windows' histograms. Both
// count failed predictions, as the agent measures them.
type VersionStats struct {
	DeviceID    string `json:"device_id"`
	Records     uint64 `json:"records"` // telemetry windows
	Predictions uint64 `json:"predictions"`
	Errors      uint64 `json:"errors"`
	// ErrorRate is Errors / Predictions: the agent counts a failed
	// prediction in both. It is 0 with no predictions and errors, and 1
	// where a device reports more errors than predictions (which the agent
	// never does), so that a gate errs on the side of failing.
	ErrorRate     float64 `json:"error_rate"`
	LatencyMeanUs float64 `json:"latency_mean_us"`
	LatencyMaxUs  uint64  `json:"latency_max_us"`
	LatencyP95Us  float64 `json:"latency_p95_us"` // prediction-weighted mean of window p95s
	// Saturated is set when a sum reached the largest uint64 and stopped
	// there: only a device sending absurd counts gets there, and the means
	// derived from the sums are then meaningless.
	Saturated   bool      `json:"saturated"`
	FirstWindow time.Time `json:"first_window"` // start of the earliest window
	LastWindow  time.Time `json:"last_window"`  // end of the latest window
}

// VersionStats returns each device's totals on model version, ordered by
// device id; none (an empty slice) if no device has reported on it.
// Errors: Invalid (model or version is not a valid name), Internal.
func (m *Monitor) VersionStats(ctx context.Context, model, version string) ([]VersionStats, error) {
	const op = "monitor.VersionStats"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkName("model name", model); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "telemetry of a model version")
	}
	if err := checkName("version", version); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "telemetry of model %q", model)
	}
	prefix := versionScanPrefix(model, version)
	out := []VersionStats{}
	err := m.st.View(func(tx store.Tx) error {
		return tx.Scan(prefix, func(k, v []byte) error {
			var c versionCounters
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			out = append(out, c.stats(strings.TrimPrefix(string(k), string(prefix))))
			return nil
		})
	})
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read telemetry of model %q version %q", model, version)
	}
	return out, nil
}

// checkName returns an error unless s is a model name or version the
// registry accepts (names.Check); field says which.
func checkName(field, s string) error { return names.Check(field, s) }

// validVersion reports whether r names a model version that can key an
// aggregate.
func validVersion(r *shoalv1.TelemetryRecord) bool {
	return checkName("model name", r.GetModelName()) == nil && checkName("version", r.GetModelVersion()) == nil
}

// versionBatch gathers the new records of one batch by model version, so
// that each version's aggregate is read and written once. It lives for one
// transaction attempt.
type versionBatch struct {
	device    string
	keys      [][]byte // in the order first seen
	aggs      map[string]*versionCounters
	badName   uint64 // new records left out: no valid model name or version
	overLimit uint64 // new records left out: over MaxBatchVersions
}

func newVersionBatch(device string) *versionBatch {
	return &versionBatch{device: device, aggs: map[string]*versionCounters{}}
}

// add counts a new record in its version's aggregate, reading the stored
// aggregate the first time the version is seen.
func (vb *versionBatch) add(tx store.Tx, r *shoalv1.TelemetryRecord, valid bool) error {
	if !valid {
		vb.badName++
		return nil
	}
	key := versionKey(r.GetModelName(), r.GetModelVersion(), vb.device)
	c := vb.aggs[string(key)]
	if c == nil {
		if len(vb.keys) == MaxBatchVersions {
			vb.overLimit++
			return nil
		}
		c = new(versionCounters)
		if _, err := store.GetJSON(tx, key, c); err != nil {
			return err
		}
		vb.aggs[string(key)] = c
		vb.keys = append(vb.keys, key)
	}
	c.add(r)
	return nil
}

// write stores the updated aggregates.
func (vb *versionBatch) write(tx store.Tx) error {
	for _, k := range vb.keys {
		if err := store.PutJSON(tx, k, vb.aggs[string(k)]); err != nil {
			return err
		}
	}
	return nil
}

// add counts one window's record.
func (c *versionCounters) add(r *shoalv1.TelemetryRecord) {
	if c.Records == 0 {
		c.FirstWindowStartMs, c.LastWindowEndMs = r.GetWindowStartUnixMs(), r.GetWindowEndUnixMs()
	} else {
		c.FirstWindowStartMs = min(c.FirstWindowStartMs, r.GetWindowStartUnixMs())
		c.LastWindowEndMs = max(c.LastWindowEndMs, r.GetWindowEndUnixMs())
	}
	c.Records = addCapped(c.Records, 1)
	c.Predictions = addCapped(c.Predictions, r.GetPredictions())
	c.Errors = addCapped(c.Errors, r.GetErrors())
	c.LatencySumUs = addCapped(c.LatencySumUs, r.GetLatencySumUs())
	c.LatencyMaxUs = max(c.LatencyMaxUs, r.GetLatencyMaxUs())
	c.P95WeightedSumUs = addCapped(c.P95WeightedSumUs, mulCapped(r.GetLatencyP95Us(), r.GetPredictions()))
}

// stats derives what VersionStats reports of device id.
func (c *versionCounters) stats(id string) VersionStats {
	s := VersionStats{
		DeviceID:     id,
		Records:      c.Records,
		Predictions:  c.Predictions,
		Errors:       c.Errors,
		LatencyMaxUs: c.LatencyMaxUs,
		Saturated: c.Records == math.MaxUint64 || c.Predictions == math.MaxUint64 || c.Errors == math.MaxUint64 ||
			c.LatencySumUs == math.MaxUint64 || c.P95WeightedSumUs == math.MaxUint64,
		FirstWindow: time.UnixMilli(c.FirstWindowStartMs).UTC(),
		LastWindow:  time.UnixMilli(c.LastWindowEndMs).UTC(),
	}
	switch {
	case c.Errors > c.Predictions:
		s.ErrorRate = 1
	case c.Predictions > 0:
		s.ErrorRate = float64(c.Errors) / float64(c.Predictions)
	}
	if c.Predictions > 0 {
		s.LatencyMeanUs = float64(c.LatencySumUs) / float64(c.Predictions)
		s.LatencyP95Us = float64(c.P95WeightedSumUs) / float64(c.Predictions)
	}
	return s
}

// mulCapped multiplies two counts, stopping at the largest uint64 instead
// of wrapping.
func mulCapped(a, b uint64) uint64 {
	if hi, lo := bits.Mul64(a, b); hi == 0 {
		return lo
	}
	return math.MaxUint64
}
