package monitor

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"math"
	"math/bits"
	"regexp"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// shadowDevice is what FuzzHandleTelemetry expects the store to hold for
// one device, kept from the batches it saw accepted.
type shadowDevice struct {
	records  map[uint64][]byte // seq → the record as first stored
	drops    map[[2]uint64]bool
	counters deviceCounters
	written  bool // the counters exist in the store
}

// satAdd adds without wrapping: a counter fed by devices stops at the top
// rather than fall back to a small number.
func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// satMul multiplies without wrapping.
func satMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// nameRE is the rule for model names and versions, written again for the
// oracle.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

func aggregatable(r *shoalv1.TelemetryRecord) bool {
	ok := func(s string) bool { return nameRE.MatchString(s) && s != "." && s != ".." }
	return ok(r.GetModelName()) && ok(r.GetModelVersion())
}

// shadowVersion adds a new record to the model of a version aggregate.
func shadowVersion(c *versionCounters, r *shoalv1.TelemetryRecord) {
	if c.Records == 0 || r.GetWindowStartUnixMs() < c.FirstWindowStartMs {
		c.FirstWindowStartMs = r.GetWindowStartUnixMs()
	}
	if c.Records == 0 || r.GetWindowEndUnixMs() > c.LastWindowEndMs {
		c.LastWindowEndMs = r.GetWindowEndUnixMs()
	}
	c.Records++
	c.Predictions = satAdd(c.Predictions, r.GetPredictions())
	c.Errors = satAdd(c.Errors, r.GetErrors())
	c.LatencySumUs = satAdd(c.LatencySumUs, r.GetLatencySumUs())
	c.LatencyMaxUs = max(c.LatencyMaxUs, r.GetLatencyMaxUs())
	c.P95WeightedSumUs = satAdd(c.P95WeightedSumUs, satMul(r.GetLatencyP95Us(), r.GetPredictions()))
}

// batchProblem is checkBatch's rule, written again for the oracle.
func batchProblem(b *shoalv1.TelemetryBatch) bool {
	if b.GetFirstSeq() > b.GetLastSeq() || len(b.GetRecords()) > MaxBatchRecords {
		return true
	}
	seen := map[uint64]bool{}
	for _, r := range b.GetRecords() {
		if r.GetSeq() < b.GetFirstSeq() || r.GetSeq() > b.GetLastSeq() || seen[r.GetSeq()] {
			return true
		}
		seen[r.GetSeq()] = true
	}
	d := b.GetDropped()
	return d.GetRecords() > 0 && (d.GetFirstSeq() > d.GetLastSeq() || d.GetRecords()-1 > d.GetLastSeq()-d.GetFirstSeq())
}

// FuzzHandleTelemetry feeds telemetry batches to the monitor as the broker
// delivers them from {prefix}/d/{id}/telemetry, over a real Badger store
// opened once. Against a model of what must be stored (each record once,
// as first received; each drop range counted once), every batch must move
// exactly the counters its fate calls for; an accepted batch must be
// stored, counted and then acknowledged with its own range on the
// device's ack topic, and a refused one neither stored nor acknowledged.
// The device's totals, and the fleet's, and each device's totals per model
// version must equal the model's: they only grow, and stop at the top of
// their range rather than wrap. A record with a bad model name or version,
// or of a version past MaxBatchVersions in its batch, has no version
// aggregate. Seeds:
// testdata/fuzz/FuzzHandleTelemetry, from TestFuzzHandleTelemetryCorpus.
func FuzzHandleTelemetry(f *testing.F) {
	st, err := badgerstore.Open(f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	pub := &recorder{}
	mon := New(st, pub, scheme, nil, nil)
	shadow := map[string]*shadowDevice{}
	versions := map[[2]string]map[string]*versionCounters{} // (model, version) → device → totals
	nVersions := 0

	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		before := mon.Stats()
		pub.mu.Lock()
		pub.msgs = nil
		pub.mu.Unlock()

		want := before
		var b shoalv1.TelemetryBatch
		id, kind, perr := scheme.Parse(topic)
		accepted := false
		switch {
		case perr != nil || kind != topics.Telemetry:
			want.BadTopic++
		case len(payload) > MaxBatchBytes:
			want.TooLarge++
		case proto.Unmarshal(payload, &b) != nil:
			want.Malformed++
		case b.GetSchemaVersion() != SchemaVersion:
			want.BadSchema++
		case b.GetDeviceId() != id:
			want.WrongDevice++
		case batchProblem(&b):
			want.BadBatch++
		default:
			accepted = true
			want.Batches++
		}
		var sd *shadowDevice
		var touched [][2]string // the versions this batch aggregates, first seen first
		if accepted {
			sd = shadow[id]
			if sd == nil {
				sd = &shadowDevice{records: map[uint64][]byte{}, drops: map[[2]uint64]bool{}}
				shadow[id] = sd
			}
			for _, r := range b.GetRecords() {
				if sd.records[r.GetSeq()] != nil {
					want.DuplicateRecords++
					continue
				}
				v, err := proto.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				sd.records[r.GetSeq()] = append(v, 0)[:len(v)] // non-nil even when empty
				want.Records++
				if v := [2]string{r.GetModelName(), r.GetModelVersion()}; !aggregatable(r) {
					want.Unaggregated++
				} else if !slices.Contains(touched, v) && len(touched) == MaxBatchVersions {
					want.Unaggregated++
				} else {
					if !slices.Contains(touched, v) {
						touched = append(touched, v)
					}
					if versions[v] == nil {
						versions[v] = map[string]*versionCounters{}
					}
					if versions[v][id] == nil {
						versions[v][id] = &versionCounters{}
						nVersions++
					}
					shadowVersion(versions[v][id], r)
				}
				c := &sd.counters
				c.Records++
				c.Predictions = satAdd(c.Predictions, r.GetPredictions())
				c.Errors = satAdd(c.Errors, r.GetErrors())
				c.HighestSeq = max(c.HighestSeq, r.GetSeq())
				sd.written = true
			}
			if d := b.GetDropped(); d.GetRecords() > 0 && !sd.drops[[2]uint64{d.GetFirstSeq(), d.GetLastSeq()}] {
				sd.drops[[2]uint64{d.GetFirstSeq(), d.GetLastSeq()}] = true
				sd.counters.DroppedRecords = satAdd(sd.counters.DroppedRecords, d.GetRecords())
				sd.written = true
			}
		}

		mon.HandleTelemetry(topic, payload)

		if got := mon.Stats(); got != want {
			t.Fatalf("stats moved from %+v to %+v; want %+v", before, got, want)
		}
		pub.mu.Lock()
		msgs := pub.msgs
		pub.mu.Unlock()
		if !accepted {
			if len(msgs) != 0 {
				t.Fatalf("a refused batch was acknowledged on %s", msgs[0].topic)
			}
			if sd := shadow[id]; perr == nil && sd != nil {
				checkTotals(t, mon, id, sd)
			}
			return
		}
		if len(msgs) != 1 || msgs[0].topic != scheme.Device(id, topics.Ack) || msgs[0].retained {
			t.Fatalf("published %+v; want one ack on %s", msgs, scheme.Device(id, topics.Ack))
		}
		var a shoalv1.Ack
		if err := proto.Unmarshal(msgs[0].payload, &a); err != nil {
			t.Fatal(err)
		}
		if a.GetSchemaVersion() != SchemaVersion || a.GetDeviceId() != id || a.GetStream() != shoalv1.Stream_STREAM_TELEMETRY ||
			a.GetFirstSeq() != b.GetFirstSeq() || a.GetLastSeq() != b.GetLastSeq() {
			t.Fatalf("ack %v for batch %d..%d of %s", &a, b.GetFirstSeq(), b.GetLastSeq(), id)
		}
		// Acknowledged means stored: every record of the batch is there,
		// as first received.
		if err := st.View(func(tx store.Tx) error {
			for _, r := range b.GetRecords() {
				v, err := tx.Get(recordKey(id, r.GetSeq()))
				if err != nil {
					return err
				}
				if !bytes.Equal(v, sd.records[r.GetSeq()]) {
					t.Fatalf("record %d stored as %x; first received as %x", r.GetSeq(), v, sd.records[r.GetSeq()])
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("acknowledged a batch not stored: %v", err)
		}
		checkTotals(t, mon, id, sd)
		checkFleetTotals(t, mon, shadow)
		for _, v := range touched {
			checkVersion(t, mon, v, versions[v])
		}
		n := 0
		if err := st.View(func(tx store.Tx) error {
			return tx.Scan([]byte(versionPrefix), func(_, _ []byte) error { n++; return nil })
		}); err != nil {
			t.Fatal(err)
		}
		if n != nVersions {
			t.Fatalf("%d version aggregates stored; want %d", n, nVersions)
		}
	})
}

// checkVersion compares VersionStats of a model version with the model's
// totals of each device.
func checkVersion(t *testing.T, mon *Monitor, v [2]string, devices map[string]*versionCounters) {
	t.Helper()
	got, err := mon.VersionStats(ctx, v[0], v[1])
	if err != nil {
		t.Fatalf("VersionStats(%q, %q): %v", v[0], v[1], err)
	}
	var want []VersionStats
	for _, id := range slices.Sorted(maps.Keys(devices)) {
		want = append(want, devices[id].stats(id))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("VersionStats(%q, %q) = %+v; want %+v", v[0], v[1], got, want)
	}
}

// checkFleetTotals compares the monitor's totals over every device with
// the model's.
func checkFleetTotals(t *testing.T, mon *Monitor, shadow map[string]*shadowDevice) {
	t.Helper()
	var want Totals
	for _, sd := range shadow {
		c := sd.counters
		want.Records = satAdd(want.Records, c.Records)
		want.Predictions = satAdd(want.Predictions, c.Predictions)
		want.Errors = satAdd(want.Errors, c.Errors)
		want.DroppedRecords = satAdd(want.DroppedRecords, c.DroppedRecords)
	}
	sum, err := mon.Summary(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != want {
		t.Fatalf("fleet totals = %+v; want %+v", sum.Total, want)
	}
}

// checkTotals compares the monitor's summary of id with the model's.
func checkTotals(t *testing.T, mon *Monitor, id string, sd *shadowDevice) {
	t.Helper()
	sum, err := mon.Summary(ctx, id)
	if !sd.written {
		if err == nil {
			t.Fatalf("a summary for %s, which has stored nothing: %+v", id, sum)
		}
		return
	}
	if err != nil {
		t.Fatalf("Summary(%q): %v", id, err)
	}
	c := sd.counters
	want := DeviceSummary{DeviceID: id, Records: c.Records, Predictions: c.Predictions, Errors: c.Errors, HighestSeq: c.HighestSeq, DroppedRecords: c.DroppedRecords}
	if len(sum.Devices) != 1 || sum.Devices[0] != want {
		t.Fatalf("summary of %s = %+v; want %+v", id, sum.Devices, want)
	}
}

func fuzzTelemetrySeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	seed := func(name string, valid bool, topic string, b *shoalv1.TelemetryBatch) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{topic, marshal(t, b)}}
	}
	tel := func(id string) string { return scheme.Device(id, topics.Telemetry) }
	withDrop := batch("a", 14, 15, 10, 0)
	withDrop.Dropped = &shoalv1.DropReport{Records: 4, FirstSeq: 10, LastSeq: 13, FromUnixMs: 1000, ToUnixMs: 2000}
	gap := batch("a", 20, 22, 1, 0)
	gap.Records = append(gap.Records[:1], gap.Records[2:]...) // 21 missing: the agent dropped it
	big := batch("pump-7", 1, 2, 1, 0)
	big.Records[0].Predictions, big.Records[0].Errors = math.MaxUint64-1, math.MaxUint64-1
	reversed := batch("a", 5, 6, 1, 0)
	reversed.FirstSeq, reversed.LastSeq = 6, 5
	outside := batch("a", 1, 3, 1, 0)
	outside.Records[1].Seq = 9
	twice := batch("a", 1, 3, 1, 0)
	twice.Records[2].Seq = 1
	badDrop := batch("a", 30, 30, 1, 0)
	badDrop.Dropped = &shoalv1.DropReport{Records: 5, FirstSeq: 10, LastSeq: 11}
	schema2 := batch("a", 1, 1, 1, 0)
	schema2.SchemaVersion = 2
	twoVersions := batch("c", 1, 4, 10, 1)
	twoVersions.Records[1].ModelVersion, twoVersions.Records[3].ModelVersion = "2", "2"
	twoVersions.Records[2].LatencyP95Us = 5000
	badName := batch("c", 8, 10, 1, 0)
	badName.Records[0].ModelName, badName.Records[1].ModelVersion, badName.Records[2].ModelName = "", "..", "m/1"
	good := marshal(t, batch("a", 1, 3, 10, 1))
	return []fuzzcorpus.Seed{
		seed("three-records", true, tel("a"), batch("a", 1, 3, 10, 1)),
		seed("overlap", true, tel("a"), batch("a", 3, 5, 10, 1)),
		seed("drop-report", true, tel("a"), withDrop),
		seed("gap", true, tel("a"), gap),
		seed("near-max-counts", true, tel("pump-7"), big),
		seed("two-versions", true, tel("c"), twoVersions),
		seed("bad-model-name", true, tel("c"), badName),
		seed("empty-batch", true, tel("b"), &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "b", FirstSeq: 4, LastSeq: 4}),
		seed("reversed-range", false, tel("a"), reversed),
		seed("record-outside-range", false, tel("a"), outside),
		seed("seq-twice", false, tel("a"), twice),
		seed("drop-report-too-many", false, tel("a"), badDrop),
		seed("schema-2", false, tel("a"), schema2),
		seed("other-device", false, tel("b"), batch("a", 1, 1, 1, 0)),
		seed("ack-topic", false, scheme.Device("a", topics.Ack), batch("a", 1, 1, 1, 0)),
		{Name: "truncated", Values: []any{tel("a"), good[:len(good)-3]}},
	}
}

// TestFuzzHandleTelemetryCorpus keeps testdata/fuzz/FuzzHandleTelemetry in
// step with the seeds above (-update-fuzz-corpus rewrites it): valid
// seeds are acknowledged, the others dropped.
func TestFuzzHandleTelemetryCorpus(t *testing.T) {
	e := newEnv(t)
	fuzzcorpus.Sync(t, "FuzzHandleTelemetry", fuzzTelemetrySeeds(t), func(v []any) error {
		before := e.mon.Stats().Batches
		e.mon.HandleTelemetry(v[0].(string), v[1].([]byte))
		if e.mon.Stats().Batches == before {
			return errors.New("dropped")
		}
		return nil
	})
}
