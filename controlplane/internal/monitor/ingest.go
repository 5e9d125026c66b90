package monitor

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// SchemaVersion is the schema_version of the messages this package reads
// and writes.
const SchemaVersion = 1

// Bounds of one TelemetryBatch. A batch is stored in one transaction, and
// Badger bounds a transaction (15% of a memtable: about 2.5 MB with the
// control plane's 16 MiB memtables). At these bounds the worst case, 10,000
// records of a device with a 128-character id, is 1.6 MB of keys plus at
// most 512 KiB of records, plus MaxBatchVersions aggregates of under 1 KB
// each and MaxBatchStatsBytes of data statistics aggregates: about 2.4 MB,
// it fits. Agents must keep within both bounds; a batch over them is
// refused (and, never acknowledged, sent again).
const (
	MaxBatchBytes   = 512 << 10
	MaxBatchRecords = 10_000
)

// IngestStats counts telemetry batches and records by outcome.
type IngestStats struct {
	Batches          uint64 // stored and acknowledged (duplicates included)
	Records          uint64 // records stored for the first time
	DuplicateRecords uint64 // records already stored, skipped
	Unaggregated     uint64 // records stored for the first time but in no version aggregate (see MaxBatchVersions)
	AckErrors        uint64 // stored, but the Ack could not be published
	BadTopic         uint64
	TooLarge         uint64
	Malformed        uint64 // not a TelemetryBatch
	BadSchema        uint64 // unknown schema_version
	WrongDevice      uint64 // device_id in the payload is not the topic's
	BadBatch         uint64 // inconsistent sequence numbers or drop report, too many records
	StoreErrors      uint64 // not stored, not acknowledged

	// Data statistics of records stored for the first time (stats.go).
	StatsMerged     uint64 // merged into every aggregate of their window
	StatsInvalid    uint64 // not merged: over the bounds, inconsistent, or of a record with no valid model version
	StatsMismatched uint64 // not merged into some aggregate: another shape than the one stored
	StatsOverLimit  uint64 // not merged into some aggregate: over MaxBatchStatsBytes
}

type counters struct {
	batches, records, duplicateRecords, unaggregated, ackErrors, badTopic, tooLarge, malformed, badSchema, wrongDevice, badBatch, storeErrors atomic.Uint64

	statsMerged, statsInvalid, statsMismatched, statsOverLimit atomic.Uint64
}

// Stats returns the ingest counters.
func (m *Monitor) Stats() IngestStats {
	c := &m.stats
	return IngestStats{
		Batches:          c.batches.Load(),
		Records:          c.records.Load(),
		DuplicateRecords: c.duplicateRecords.Load(),
		Unaggregated:     c.unaggregated.Load(),
		AckErrors:        c.ackErrors.Load(),
		BadTopic:         c.badTopic.Load(),
		TooLarge:         c.tooLarge.Load(),
		Malformed:        c.malformed.Load(),
		BadSchema:        c.badSchema.Load(),
		WrongDevice:      c.wrongDevice.Load(),
		BadBatch:         c.badBatch.Load(),
		StoreErrors:      c.storeErrors.Load(),
		StatsMerged:      c.statsMerged.Load(),
		StatsInvalid:     c.statsInvalid.Load(),
		StatsMismatched:  c.statsMismatched.Load(),
		StatsOverLimit:   c.statsOverLimit.Load(),
	}
}

// HandleTelemetry ingests a TelemetryBatch from {prefix}/d/{id}/telemetry.
// Records not stored before are stored, and the device's counters and its
// aggregates per model version updated, in one transaction; once it has
// committed, an Ack for the batch's range goes to {prefix}/d/{id}/ack. A
// batch stored before is acknowledged again (the agent may have missed the
// first Ack) without counting anything twice. It is a Bus handler: what it
// cannot use it counts, logs (rate-limited) and drops, unacknowledged.
func (m *Monitor) HandleTelemetry(topic string, payload []byte) {
	id, kind, err := m.scheme.Parse(topic)
	if err == nil && kind != topics.Telemetry {
		err = fmt.Errorf("topic %q is a %s topic; want telemetry", topic, kind)
	}
	if err != nil {
		m.stats.badTopic.Add(1)
		m.logLimited("topic", "", "dropped telemetry on an unexpected topic", "err", err)
		return
	}
	if len(payload) > MaxBatchBytes {
		m.stats.tooLarge.Add(1)
		m.logLimited("size", id, "dropped oversize telemetry batch", "device", id, "bytes", len(payload), "limit", MaxBatchBytes)
		return
	}
	var b shoalv1.TelemetryBatch
	if err := proto.Unmarshal(payload, &b); err != nil {
		m.stats.malformed.Add(1)
		m.logLimited("malformed", id, "dropped malformed telemetry batch", "device", id, "err", err)
		return
	}
	if v := b.GetSchemaVersion(); v != SchemaVersion {
		m.stats.badSchema.Add(1)
		m.logLimited("schema", id, "dropped telemetry batch of an unknown schema version", "device", id, "schema_version", v, "want", SchemaVersion)
		return
	}
	if d := b.GetDeviceId(); d != id {
		m.stats.wrongDevice.Add(1)
		m.logLimited("device", id, "dropped telemetry batch naming another device than its topic", "device", id, "payload_device_id", d)
		return
	}
	if err := checkBatch(&b); err != nil {
		m.stats.badBatch.Add(1)
		m.logLimited("batch", id, "dropped inconsistent telemetry batch", "device", id, "first_seq", b.GetFirstSeq(), "last_seq", b.GetLastSeq(), "err", err)
		return
	}

	res, err := m.store(id, &b)
	if err != nil {
		m.stats.storeErrors.Add(1)
		m.logLimited("store", id, "cannot store telemetry batch; not acknowledged", "device", id, "err", err)
		return
	}
	m.stats.batches.Add(1)
	m.stats.records.Add(res.added)
	m.stats.duplicateRecords.Add(res.dups)
	if n := res.badName + res.overLimit; n > 0 {
		m.stats.unaggregated.Add(n)
		m.logLimited("version", id, "telemetry records stored but left out of the per-version aggregates",
			"device", id, "invalid_model_name_or_version", res.badName, "over_version_limit", res.overLimit, "limit", MaxBatchVersions)
	}
	m.stats.statsMerged.Add(res.statsMerged)
	m.stats.statsInvalid.Add(res.statsInvalid)
	m.stats.statsMismatched.Add(res.statsMismatched)
	m.stats.statsOverLimit.Add(res.statsOverLimit)
	if res.statsInvalid+res.statsMismatched+res.statsOverLimit > 0 {
		m.logLimited("stats", id, "telemetry records stored but their data statistics left out of the drift aggregates",
			"device", id, "invalid", res.statsInvalid, "mismatched", res.statsMismatched, "over_batch_limit", res.statsOverLimit, "err", res.statsError)
	}
	if res.labelsDropped > 0 {
		m.logLimited("labels", id, "feedback labels dropped: the model keeps its bound of labels", "device", id, "dropped", res.labelsDropped, "limit", MaxCapturedRows)
	}
	m.ack(id, &b)
}

// checkBatch checks a batch's sequence numbers and drop report.
func checkBatch(b *shoalv1.TelemetryBatch) error {
	first, last := b.GetFirstSeq(), b.GetLastSeq()
	if first > last {
		return fmt.Errorf("first_seq %d is after last_seq %d", first, last)
	}
	recs := b.GetRecords()
	if len(recs) > MaxBatchRecords {
		return fmt.Errorf("%d records; at most %d are allowed in one batch", len(recs), MaxBatchRecords)
	}
	seen := make(map[uint64]bool, len(recs))
	for _, r := range recs {
		s := r.GetSeq()
		if s < first || s > last {
			return fmt.Errorf("record seq %d is outside [%d, %d]", s, first, last)
		}
		if seen[s] {
			return fmt.Errorf("record seq %d appears twice", s)
		}
		seen[s] = true
	}
	if d := b.GetDropped(); d.GetRecords() > 0 {
		if d.GetFirstSeq() > d.GetLastSeq() {
			return fmt.Errorf("drop report: first_seq %d is after last_seq %d", d.GetFirstSeq(), d.GetLastSeq())
		}
		if span := d.GetLastSeq() - d.GetFirstSeq(); d.GetRecords()-1 > span {
			return fmt.Errorf("drop report: %d records dropped in a range of %d sequence numbers", d.GetRecords(), span+1)
		}
	}
	return nil
}

// storeResult is what store did with a batch's records.
type storeResult struct {
	added, dups uint64 // new records; records stored already
	// New records left out of the version aggregates: no valid model name
	// or version; over MaxBatchVersions.
	badName, overLimit uint64
	// New records carrying data statistics: merged, invalid, mismatched,
	// over the batch's limit (see IngestStats); statsError says why the
	// first was not merged.
	statsMerged, statsInvalid, statsMismatched, statsOverLimit uint64
	statsError                                                 error
	// labelsDropped counts feedback labels over a model's bound.
	labelsDropped uint64
}

// store writes the batch's new records and updates the device's counters,
// its aggregates per model version and the data statistics aggregates in
// one transaction.
func (m *Monitor) store(id string, b *shoalv1.TelemetryBatch) (res storeResult, err error) {
	values := make([][]byte, len(b.GetRecords()))
	valid := make([]bool, len(b.GetRecords()))
	statsErr := make([]error, len(b.GetRecords())) // of records with statistics
	withStats := false
	for i, r := range b.GetRecords() {
		if values[i], err = proto.Marshal(withoutCaptures(r)); err != nil {
			return storeResult{}, fmt.Errorf("encode record %d: %w", r.GetSeq(), err)
		}
		valid[i] = validVersion(r)
		if hasStats(r) {
			withStats = true
			if !valid[i] {
				statsErr[i] = errors.New("no valid model name and version")
			} else if err := checkRecordStats(r); err != nil {
				statsErr[i] = fmt.Errorf("record %d: %w", r.GetSeq(), err)
			}
		}
	}
	var cohorts []string
	if withStats {
		cohorts = m.cohorts(id)
	}
	window := m.StatsWindowDuration()
	err = store.Retry(m.st, storeAttempts, func(tx store.Tx) error {
		res = storeResult{}
		vb := newVersionBatch(id)
		sb := newStatsBatch(window, cohorts)
		var c deviceCounters
		if _, err := store.GetJSON(tx, countersKey(id), &c); err != nil {
			return err
		}
		for i, r := range b.GetRecords() {
			key := recordKey(id, r.GetSeq())
			if _, err := tx.Get(key); err == nil {
				res.dups++
				continue
			} else if !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("read record %d: %w", r.GetSeq(), err)
			}
			if err := tx.Set(key, values[i]); err != nil {
				return fmt.Errorf("write record %d: %w", r.GetSeq(), err)
			}
			res.added++
			if err := vb.add(tx, r, valid[i]); err != nil {
				return fmt.Errorf("version aggregate of record %d: %w", r.GetSeq(), err)
			}
			if valid[i] && hasCaptures(r) {
				n, err := storeCaptures(tx, id, r)
				if err != nil {
					return fmt.Errorf("captures of record %d: %w", r.GetSeq(), err)
				}
				res.labelsDropped += n
			}
			if hasStats(r) {
				if statsErr[i] != nil {
					res.statsInvalid++
					res.statsError = cmp.Or(res.statsError, statsErr[i])
				} else if err := sb.add(tx, r); err != nil {
					return fmt.Errorf("statistics of record %d: %w", r.GetSeq(), err)
				}
			}
			c.Records++
			c.Predictions = addCapped(c.Predictions, r.GetPredictions())
			c.Errors = addCapped(c.Errors, r.GetErrors())
			c.HighestSeq = max(c.HighestSeq, r.GetSeq())
		}
		res.badName, res.overLimit = vb.badName, vb.overLimit
		if err := vb.write(tx); err != nil {
			return err
		}
		res.statsMerged, res.statsMismatched, res.statsOverLimit = sb.merged, sb.mismatched, sb.overLimit
		res.statsError = cmp.Or(res.statsError, sb.mismatchError)
		if err := sb.write(tx); err != nil {
			return err
		}
		changed := res.added > 0
		if d := b.GetDropped(); d.GetRecords() > 0 {
			key := dropKey(id, d.GetFirstSeq(), d.GetLastSeq())
			if _, err := tx.Get(key); errors.Is(err, store.ErrNotFound) {
				if err := tx.Set(key, fmt.Appendf(nil, "%d", d.GetRecords())); err != nil {
					return fmt.Errorf("write drop report: %w", err)
				}
				c.DroppedRecords = addCapped(c.DroppedRecords, d.GetRecords())
				changed = true
			} else if err != nil {
				return fmt.Errorf("read drop report: %w", err)
			}
		}
		if !changed {
			return nil // an acknowledged batch sent again
		}
		return store.PutJSON(tx, countersKey(id), c)
	})
	return res, err
}

// addCapped adds two counts, stopping at the largest uint64 instead of
// wrapping: the counts come from devices, and a total must never fall.
func addCapped(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxUint64
}

// ack tells the agent the batch's range is durably stored.
func (m *Monitor) ack(id string, b *shoalv1.TelemetryBatch) {
	payload, err := proto.Marshal(&shoalv1.Ack{
		SchemaVersion: SchemaVersion,
		DeviceId:      id,
		Stream:        shoalv1.Stream_STREAM_TELEMETRY,
		FirstSeq:      b.GetFirstSeq(),
		LastSeq:       b.GetLastSeq(),
	})
	if err == nil {
		err = m.bus.Publish(m.scheme.Device(id, topics.Ack), payload, false)
	}
	if err != nil {
		// The agent sends the batch again; it is acknowledged then.
		m.stats.ackErrors.Add(1)
		m.logLimited("ack", id, "telemetry stored but not acknowledged", "device", id, "err", err)
	}
}
