package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// win is one telemetry window of a model version, as the agent reports it.
type win struct {
	seq               uint64
	model, version    string
	startMs, endMs    int64
	preds, errs       uint64
	sumUs, maxUs, p95 uint64
}

func (w win) record() *shoalv1.TelemetryRecord {
	return &shoalv1.TelemetryRecord{
		Seq: w.seq, ModelName: w.model, ModelVersion: w.version,
		WindowStartUnixMs: w.startMs, WindowEndUnixMs: w.endMs,
		Predictions: w.preds, Errors: w.errs,
		LatencySumUs: w.sumUs, LatencyMaxUs: w.maxUs, LatencyP95Us: w.p95,
		LatencyP50Us: w.p95 / 2, LatencyP99Us: w.maxUs,
	}
}

// windows builds a batch of device id holding ws, its range spanning
// their sequence numbers.
func windows(id string, ws ...win) *shoalv1.TelemetryBatch {
	b := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: id, FirstSeq: math.MaxUint64}
	for _, w := range ws {
		b.Records = append(b.Records, w.record())
		b.FirstSeq, b.LastSeq = min(b.FirstSeq, w.seq), max(b.LastSeq, w.seq)
	}
	return b
}

func (e *env) versionStats(t *testing.T, model, version string) []VersionStats {
	t.Helper()
	s, err := e.mon.VersionStats(ctx, model, version)
	if err != nil {
		t.Fatalf("VersionStats(%q, %q): %v", model, version, err)
	}
	return s
}

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

func checkVersionStats(t *testing.T, e *env, model, version string, want ...VersionStats) {
	t.Helper()
	got := e.versionStats(t, model, version)
	if len(got) != len(want) {
		t.Fatalf("VersionStats(%q, %q) = %+v; want %+v", model, version, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("VersionStats(%q, %q)[%d] = %+v; want %+v", model, version, i, got[i], want[i])
		}
	}
}

// versionKeys lists every version aggregate key stored.
func (e *env) versionKeys(t *testing.T) []string {
	t.Helper()
	var keys []string
	if err := e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(versionPrefix), func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// Device a reports m1/1 in three windows over two batches, next to m1/2,
// m1/10 (which must not be mistaken for m1/1) and m2/1; device b reports
// m1/1 once.
var (
	verA1 = windows("a",
		win{seq: 1, model: "m1", version: "1", startMs: 1000, endMs: 1999, preds: 10, errs: 1, sumUs: 10_000, maxUs: 3000, p95: 1200},
		win{seq: 2, model: "m1", version: "2", startMs: 1000, endMs: 1999, preds: 4, sumUs: 2000, maxUs: 900, p95: 800},
		win{seq: 3, model: "m1", version: "1", startMs: 2000, endMs: 2999, preds: 30, errs: 2, sumUs: 45_000, maxUs: 5000, p95: 2000},
	)
	verA2 = windows("a",
		// No predictions: its p95 weighs nothing.
		win{seq: 4, model: "m1", version: "1", startMs: 3000, endMs: 3999, p95: 9999},
		win{seq: 5, model: "m1", version: "10", startMs: 3000, endMs: 3999, preds: 8, errs: 8, sumUs: 800, maxUs: 100, p95: 100},
	)
	verB = windows("b",
		win{seq: 7, model: "m1", version: "1", startMs: 500, endMs: 1499, preds: 20, errs: 5, sumUs: 20_000, maxUs: 2500, p95: 1500},
		win{seq: 8, model: "m2", version: "1", startMs: 500, endMs: 1499, preds: 1, sumUs: 7, maxUs: 7, p95: 7},
	)
)

// Hand-computed from the windows above. m1/1 on a: p95 (1200×10 +
// 2000×30 + 9999×0) / 40 = 1800; mean 55,000 / 40 = 1375; errors 3/40.
var (
	wantA1 = VersionStats{DeviceID: "a", Records: 3, Predictions: 40, Errors: 3, ErrorRate: 0.075,
		LatencyMeanUs: 1375, LatencyMaxUs: 5000, LatencyP95Us: 1800, FirstWindow: ms(1000), LastWindow: ms(3999)}
	wantB1 = VersionStats{DeviceID: "b", Records: 1, Predictions: 20, Errors: 5, ErrorRate: 0.25,
		LatencyMeanUs: 1000, LatencyMaxUs: 2500, LatencyP95Us: 1500, FirstWindow: ms(500), LastWindow: ms(1499)}
	wantA2 = VersionStats{DeviceID: "a", Records: 1, Predictions: 4, LatencyMeanUs: 500, LatencyMaxUs: 900,
		LatencyP95Us: 800, FirstWindow: ms(1000), LastWindow: ms(1999)}
	wantA10 = VersionStats{DeviceID: "a", Records: 1, Predictions: 8, Errors: 8, ErrorRate: 1, LatencyMeanUs: 100,
		LatencyMaxUs: 100, LatencyP95Us: 100, FirstWindow: ms(3000), LastWindow: ms(3999)}
	wantM2 = VersionStats{DeviceID: "b", Records: 1, Predictions: 1, LatencyMeanUs: 7, LatencyMaxUs: 7,
		LatencyP95Us: 7, FirstWindow: ms(500), LastWindow: ms(1499)}
)

func checkAllVersions(t *testing.T, e *env) {
	t.Helper()
	checkVersionStats(t, e, "m1", "1", wantA1, wantB1)
	checkVersionStats(t, e, "m1", "2", wantA2)
	checkVersionStats(t, e, "m1", "10", wantA10)
	checkVersionStats(t, e, "m2", "1", wantM2)
}

func TestVersionStatsAcrossBatchesAndDevices(t *testing.T) {
	e := newEnv(t)
	e.send(t, verB)
	e.send(t, verA1)
	e.send(t, verA2)
	checkAllVersions(t, e)

	if got := e.versionStats(t, "m1", "3"); got == nil || len(got) != 0 {
		t.Errorf("VersionStats of a version nobody reported = %#v; want an empty slice", got)
	}
	if st := e.mon.Stats(); st.Records != 7 || st.Unaggregated != 0 || st.Batches != 3 {
		t.Errorf("Stats = %+v", st)
	}
	// The device's counters still count every record.
	if got := e.summary(t, "a"); got.Records != 5 || got.Predictions != 52 || got.Errors != 11 {
		t.Errorf("summary of a = %+v", got)
	}

	// What is stored, and under which keys.
	want := []string{"monitor/ver/m1/1/a", "monitor/ver/m1/1/b", "monitor/ver/m1/10/a", "monitor/ver/m1/2/a", "monitor/ver/m2/1/b"}
	if got := e.versionKeys(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("version keys = %q; want %q", got, want)
	}
	e.st.View(func(tx store.Tx) error {
		v, err := tx.Get(versionKey("m1", "1", "a"))
		if err != nil {
			t.Fatal(err)
		}
		const want = `{"records":3,"predictions":40,"errors":3,"latency_sum_us":55000,"latency_max_us":5000,` +
			`"latency_p95_weighted_sum_us":72000,"first_window_start_unix_ms":1000,"last_window_end_unix_ms":3999}`
		if string(v) != want {
			t.Errorf("stored aggregate = %s; want %s", v, want)
		}
		return nil
	})
}

func TestVersionStatsResentBatchNotCounted(t *testing.T) {
	e := newEnv(t)
	e.send(t, verB)
	e.send(t, verA1)
	e.send(t, verA2)
	e.send(t, verA1) // the agent missed the ack
	e.send(t, verB)
	checkAllVersions(t, e)

	// Overlapping a stored range, altered: the stored records stand, and
	// only the new one counts.
	over := windows("a",
		win{seq: 3, model: "m1", version: "1", startMs: 2000, endMs: 2999, preds: 999, errs: 999, p95: 99_999},
		win{seq: 4, model: "m1", version: "2", startMs: 3000, endMs: 3999, preds: 999},
		win{seq: 6, model: "m1", version: "1", startMs: 4000, endMs: 4999, preds: 10, errs: 1, sumUs: 5000, maxUs: 600, p95: 600},
	)
	e.send(t, over)
	// p95 (72,000 + 600×10) / 50 = 1560; mean 60,000 / 50 = 1200.
	a1 := VersionStats{DeviceID: "a", Records: 4, Predictions: 50, Errors: 4, ErrorRate: 0.08,
		LatencyMeanUs: 1200, LatencyMaxUs: 5000, LatencyP95Us: 1560, FirstWindow: ms(1000), LastWindow: ms(4999)}
	checkVersionStats(t, e, "m1", "1", a1, wantB1)
	checkVersionStats(t, e, "m1", "2", wantA2)

	// After a restart too.
	e.reopen(t)
	e.send(t, over)
	e.send(t, verA1)
	checkVersionStats(t, e, "m1", "1", a1, wantB1)
	if st := e.mon.Stats(); st.Records != 0 || st.DuplicateRecords != 6 {
		t.Errorf("Stats after the restart = %+v; want only duplicates", st)
	}
}

func TestVersionStatsDerivedFigures(t *testing.T) {
	for _, tc := range []struct {
		name string
		ws   []win // of m1/1; seq, model and version are set here
		want VersionStats
	}{
		{"one window", []win{{preds: 10, errs: 1, sumUs: 12_000, maxUs: 4000, p95: 1200}},
			VersionStats{Records: 1, Predictions: 10, Errors: 1, ErrorRate: 0.1, LatencyMeanUs: 1200, LatencyMaxUs: 4000, LatencyP95Us: 1200}},
		{"equal weights", []win{{preds: 5, sumUs: 2500, p95: 1000}, {preds: 5, sumUs: 7500, p95: 3000}},
			VersionStats{Records: 2, Predictions: 10, LatencyMeanUs: 1000, LatencyP95Us: 2000}},
		// (1000×1 + 2000×3) / 4, not the plain mean 1500.
		{"weighted by predictions", []win{{preds: 1, sumUs: 1, p95: 1000}, {preds: 3, sumUs: 2, p95: 2000}},
			VersionStats{Records: 2, Predictions: 4, LatencyMeanUs: 0.75, LatencyP95Us: 1750}},
		// (100×3 + 200×3 + 400×1) / 7 = 1300/7.
		{"three windows", []win{{preds: 3, p95: 100}, {preds: 3, p95: 200}, {preds: 1, p95: 400}},
			VersionStats{Records: 3, Predictions: 7, LatencyP95Us: 1300.0 / 7}},
		{"idle window weighs nothing", []win{{preds: 4, errs: 1, sumUs: 4000, p95: 1000}, {p95: 50_000, maxUs: 50_000}},
			VersionStats{Records: 2, Predictions: 4, Errors: 1, ErrorRate: 0.25, LatencyMeanUs: 1000, LatencyMaxUs: 50_000, LatencyP95Us: 1000}},
		{"no predictions", []win{{p95: 700}},
			VersionStats{Records: 1}},
		{"every prediction failed", []win{{preds: 6, errs: 6}},
			VersionStats{Records: 1, Predictions: 6, Errors: 6, ErrorRate: 1}},
		// The agent never sends these; a gate must not take them for health.
		{"more errors than predictions", []win{{preds: 2, errs: 3}},
			VersionStats{Records: 1, Predictions: 2, Errors: 3, ErrorRate: 1}},
		{"errors without predictions", []win{{errs: 3}},
			VersionStats{Records: 1, Errors: 3, ErrorRate: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			for i := range tc.ws {
				w := &tc.ws[i]
				w.seq, w.model, w.version = uint64(i+1), "m1", "1"
				w.startMs, w.endMs = int64(i)*10_000, int64(i)*10_000+9999
			}
			e.send(t, windows("a", tc.ws...))
			want := tc.want
			want.DeviceID, want.FirstWindow, want.LastWindow = "a", ms(0), ms(int64(len(tc.ws)-1)*10_000+9999)
			checkVersionStats(t, e, "m1", "1", want)
		})
	}
}

func TestVersionStatsSaturate(t *testing.T) {
	e := newEnv(t)
	const top = math.MaxUint64
	e.send(t, windows("a",
		// p95 × predictions overflows on its own.
		win{seq: 1, model: "m1", version: "1", startMs: 0, endMs: 999, preds: top - 1, errs: 1, sumUs: top - 1, maxUs: top - 1, p95: 3},
	))
	e.send(t, windows("a",
		win{seq: 2, model: "m1", version: "1", startMs: 1000, endMs: 1999, preds: 10, errs: top, sumUs: 5, maxUs: 7, p95: 1},
	))
	var c versionCounters
	e.st.View(func(tx store.Tx) error {
		if _, err := store.GetJSON(tx, versionKey("m1", "1", "a"), &c); err != nil {
			t.Fatal(err)
		}
		return nil
	})
	want := versionCounters{Records: 2, Predictions: top, Errors: top, LatencySumUs: top, LatencyMaxUs: top - 1,
		P95WeightedSumUs: top, FirstWindowStartMs: 0, LastWindowEndMs: 1999}
	if c != want {
		t.Fatalf("stored %+v; want %+v", c, want)
	}
	got := e.versionStats(t, "m1", "1")
	if len(got) != 1 || !got[0].Saturated || got[0].Predictions != top || got[0].ErrorRate != 1 || got[0].LatencyMaxUs != top-1 {
		t.Fatalf("VersionStats = %+v; want saturated sums", got)
	}

	// Just under the top is not saturated.
	e.send(t, windows("b", win{seq: 1, model: "m1", version: "1", preds: 1 << 32, p95: 1<<32 - 1}))
	got = e.versionStats(t, "m1", "1")
	if len(got) != 2 || got[1].Saturated || got[1].LatencyP95Us != 1<<32-1 {
		t.Fatalf("VersionStats of b = %+v; want p95 %d, not saturated", got, uint64(1<<32-1))
	}
}

func TestVersionStatsBadNames(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("v", maxNameLen+1)
	for _, tc := range []struct{ model, version, says string }{
		{"", "1", "model name is empty"},
		{"m1", "", "version is empty"},
		{"m/1", "1", `model name "m/1" has '/'`},
		{"m1", "1/a", `version "1/a" has '/'`},
		{"..", "1", `model name ".." is not allowed`},
		{"m1", ".", `version "." is not allowed`},
		{long, "1", "129 characters"},
		{"m1", "vé", `version "vé" has 'é'`},
	} {
		_, err := e.mon.VersionStats(ctx, tc.model, tc.version)
		if shoalerr.CodeOf(err) != shoalerr.Invalid || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("VersionStats(%.20q, %q): %v; want Invalid saying %s", tc.model, tc.version, err, tc.says)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.mon.VersionStats(canceled, "m1", "1"); !errors.Is(err, context.Canceled) {
		t.Errorf("VersionStats with a canceled context: %v", err)
	}

	// Records with bad names are stored and counted for the device, but
	// have no aggregate: no odd keys.
	b := windows("a",
		win{seq: 1, model: "", version: "1", preds: 1},
		win{seq: 2, model: "m1", version: "", preds: 1},
		win{seq: 3, model: "m1/x", version: "1", preds: 1},
		win{seq: 4, model: "m1", version: "1/x", preds: 1},
		win{seq: 5, model: "..", version: "1", preds: 1},
		win{seq: 6, model: "m1", version: long, preds: 1},
		win{seq: 7, model: "m 1", version: "1", preds: 1},
		win{seq: 8, model: "m1", version: "1", preds: 1},
	)
	e.send(t, b)
	e.send(t, b)
	if got, want := e.versionKeys(t), []string{"monitor/ver/m1/1/a"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("version keys = %q; want %q", got, want)
	}
	if got := e.versionStats(t, "m1", "1"); len(got) != 1 || got[0].Records != 1 || got[0].Predictions != 1 {
		t.Errorf("VersionStats = %+v; want the one good record", got)
	}
	if got := e.summary(t, "a"); got.Records != 8 || got.Predictions != 8 {
		t.Errorf("summary = %+v; want every record", got)
	}
	if st := e.mon.Stats(); st.Records != 8 || st.Unaggregated != 7 || st.DuplicateRecords != 8 {
		t.Errorf("Stats = %+v", st)
	}
	if got := ackRanges(e.pub.acks(t)); got != "a:1-8 a:1-8" {
		t.Errorf("acks = %s", got)
	}
	if n := e.logs.count("left out of the per-version aggregates"); n != 1 {
		t.Errorf("logged %d times; want once", n)
	}
}

func TestVersionStatsLimitPerBatch(t *testing.T) {
	e := newEnv(t)
	ver := func(i int) string { return fmt.Sprintf("v%d", i) }
	var ws []win
	for i := range MaxBatchVersions + 3 {
		ws = append(ws, win{seq: uint64(i + 1), model: "m1", version: ver(i), preds: 1})
	}
	n := uint64(len(ws))
	ws = append(ws,
		win{seq: n + 1, model: "m1", version: ver(0), preds: 1},                    // seen: aggregated
		win{seq: n + 2, model: "m1", version: ver(MaxBatchVersions + 1), preds: 1}, // over: not
	)
	e.send(t, windows("a", ws...))
	if st := e.mon.Stats(); st.Records != n+2 || st.Unaggregated != 4 {
		t.Fatalf("Stats = %+v; want %d records, 4 unaggregated", st, n+2)
	}
	if got := len(e.versionKeys(t)); got != MaxBatchVersions {
		t.Errorf("%d version aggregates; want %d", got, MaxBatchVersions)
	}
	if got := e.versionStats(t, "m1", ver(0)); len(got) != 1 || got[0].Records != 2 {
		t.Errorf("VersionStats of the first version = %+v; want 2 records", got)
	}
	if got := e.versionStats(t, "m1", ver(MaxBatchVersions-1)); len(got) != 1 || got[0].Records != 1 {
		t.Errorf("VersionStats of the last version in the limit = %+v; want 1 record", got)
	}
	if got := e.versionStats(t, "m1", ver(MaxBatchVersions)); len(got) != 0 {
		t.Errorf("VersionStats of a version over the limit = %+v; want none", got)
	}

	// The limit is per batch.
	e.send(t, windows("a", win{seq: n + 3, model: "m1", version: ver(MaxBatchVersions), preds: 1}))
	if got := e.versionStats(t, "m1", ver(MaxBatchVersions)); len(got) != 1 || got[0].Records != 1 {
		t.Errorf("VersionStats in the next batch = %+v; want 1 record", got)
	}
}

// TestMaxVersionsBatchIsStoredInOneTransaction stores the largest
// aggregates a batch can write (MaxBatchVersions versions with the longest
// names, of the device with the longest id, with 20-digit sums) beside the
// largest batch of records.
func TestMaxVersionsBatchIsStoredInOneTransaction(t *testing.T) {
	e := newEnv(t)
	id := strings.Repeat("d", topics.MaxDeviceIDLen)
	b := batch(id, 1, MaxBatchRecords, 1, 0)
	name := func(i int) string { return fmt.Sprintf("%03d", i) + strings.Repeat("n", maxNameLen-3) }
	for i, r := range b.Records[:MaxBatchVersions-1] {
		r.ModelName, r.ModelVersion = name(i), name(i)
		r.Predictions, r.Errors, r.LatencySumUs, r.LatencyMaxUs, r.LatencyP95Us = math.MaxUint64/3, math.MaxUint64/3, math.MaxUint64/3, math.MaxUint64/3, 2
		r.WindowStartUnixMs, r.WindowEndUnixMs = math.MinInt64, math.MinInt64
	}
	rest := b.Records[MaxBatchVersions-1:] // one version more
	for pad := 200; ; pad-- {
		for _, r := range rest {
			r.ModelName = "m-" + strings.Repeat("x", pad)
		}
		if proto.Size(b) <= MaxBatchBytes {
			break
		}
	}
	if proto.Size(b) < MaxBatchBytes*9/10 {
		t.Fatalf("batch is only %d bytes", proto.Size(b))
	}
	e.send(t, b)
	if st := e.mon.Stats(); st.StoreErrors != 0 || st.Records != MaxBatchRecords || st.Unaggregated != 0 {
		t.Fatalf("Stats = %+v; %d logged", st, e.logs.count("cannot store"))
	}
	if got := len(e.versionKeys(t)); got != MaxBatchVersions {
		t.Errorf("%d version aggregates; want %d", got, MaxBatchVersions)
	}
	if got := e.versionStats(t, name(0), name(0)); len(got) != 1 || got[0].DeviceID != id {
		t.Errorf("VersionStats = %+v", got)
	}
}
