package monitor

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func ackRanges(acks []*shoalv1.Ack) string {
	var s []string
	for _, a := range acks {
		s = append(s, fmt.Sprintf("%s:%d-%d", a.GetDeviceId(), a.GetFirstSeq(), a.GetLastSeq()))
	}
	return strings.Join(s, " ")
}

func TestExactCountsWithDuplicatesAndOverlaps(t *testing.T) {
	e := newEnv(t)
	e.send(t, batch("a", 1, 3, 10, 1))
	e.send(t, batch("a", 1, 3, 10, 1)) // the agent missed the ack: acked again, not counted
	over := batch("a", 3, 5, 10, 1)
	over.Records[0].Predictions = 999 // seq 3 again, altered: the stored one stands
	e.send(t, over)
	e.send(t, batch("b", 7, 7, 4, 0))

	// Drops: counted once per range, however often reported.
	d := batch("a", 14, 15, 10, 0)
	d.Dropped = &shoalv1.DropReport{Records: 4, FirstSeq: 10, LastSeq: 13}
	e.send(t, d)
	e.send(t, d)
	d2 := batch("a", 16, 16, 10, 0)
	d2.Dropped = &shoalv1.DropReport{Records: 4, FirstSeq: 10, LastSeq: 13}
	e.send(t, d2)
	d3 := batch("a", 20, 20, 10, 0)
	d3.Dropped = &shoalv1.DropReport{Records: 2, FirstSeq: 17, LastSeq: 19}
	e.send(t, d3)

	if got, want := ackRanges(e.pub.acks(t)), "a:1-3 a:1-3 a:3-5 b:7-7 a:14-15 a:14-15 a:16-16 a:20-20"; got != want {
		t.Fatalf("acks = %s; want %s", got, want)
	}
	want := DeviceSummary{DeviceID: "a", Records: 9, Predictions: 90, Errors: 5, HighestSeq: 20, DroppedRecords: 6}
	if got := e.summary(t, "a"); got != want {
		t.Fatalf("summary = %+v; want %+v", got, want)
	}
	all, err := e.mon.Summary(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Devices) != 2 || all.Devices[0].DeviceID != "a" || all.Devices[1].DeviceID != "b" ||
		all.Total != (Totals{Records: 10, Predictions: 94, Errors: 5, DroppedRecords: 6}) {
		t.Fatalf("summary of all = %+v", all)
	}
	st := e.mon.Stats()
	if st.Batches != 8 || st.Records != 10 || st.DuplicateRecords != 6 || st.AckErrors+st.StoreErrors+st.BadBatch != 0 {
		t.Errorf("Stats = %+v", st)
	}

	// Each record is stored, once, as first received.
	e.st.View(func(tx store.Tx) error {
		v, err := tx.Get(recordKey("a", 3))
		if err != nil {
			t.Fatal(err)
		}
		var r shoalv1.TelemetryRecord
		if err := proto.Unmarshal(v, &r); err != nil || r.GetPredictions() != 10 {
			t.Errorf("stored record 3 = %v, %v; want the first one (10 predictions)", &r, err)
		}
		n := 0
		tx.Scan([]byte(recordPrefix+"a/"), func(_, _ []byte) error { n++; return nil })
		if n != 9 {
			t.Errorf("%d records stored for a; want 9", n)
		}
		return nil
	})

	// The JSON of docs/API.md.
	b, _ := json.Marshal(all)
	for _, k := range []string{`"devices":[{"device_id":"a","records":9,"predictions":90,"errors":5,"highest_seq":20,"dropped_records":6}`, `"total":{"records":10,"predictions":94,"errors":5,"dropped_records":6}`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("summary JSON %s lacks %s", b, k)
		}
	}
}

func TestCountsSurviveRestart(t *testing.T) {
	e := newEnv(t)
	e.send(t, batch("a", 1, 100, 2, 1))
	e.reopen(t)
	e.send(t, batch("a", 51, 150, 2, 1)) // half of it stored before the restart
	want := DeviceSummary{DeviceID: "a", Records: 150, Predictions: 300, Errors: 150, HighestSeq: 150}
	if got := e.summary(t, "a"); got != want {
		t.Fatalf("summary after restart = %+v; want %+v", got, want)
	}
	if got := ackRanges(e.pub.acks(t)); got != "a:1-100 a:51-150" {
		t.Errorf("acks = %s", got)
	}
}

func TestAckOnlyAfterStore(t *testing.T) {
	e := newEnv(t)
	e.st.setFail(true)
	e.send(t, batch("a", 1, 3, 1, 0))
	if acks := e.pub.acks(t); len(acks) != 0 {
		t.Fatalf("acked %s though the store failed", ackRanges(acks))
	}
	if st := e.mon.Stats(); st.StoreErrors != 1 || st.Batches != 0 {
		t.Errorf("Stats = %+v", st)
	}
	if _, err := e.mon.Summary(ctx, "a"); shoalerr.CodeOf(err) != shoalerr.NotFound {
		t.Errorf("Summary after a failed store: %v; want NotFound", err)
	}

	// When the ack goes out, the batch is already committed.
	e.st.setFail(false)
	e.pub.before = func(string, []byte) {
		if got := e.summary(t, "a"); got.Records != 3 {
			t.Errorf("ack published with %d records stored; want 3", got.Records)
		}
	}
	e.send(t, batch("a", 1, 3, 1, 0))
	if got := ackRanges(e.pub.acks(t)); got != "a:1-3" {
		t.Fatalf("acks = %q", got)
	}
}

func TestAckPublishFailureIsCountedAndRecovers(t *testing.T) {
	e := newEnv(t)
	e.pub.fail = errBoom
	e.send(t, batch("a", 1, 3, 1, 0))
	if st := e.mon.Stats(); st.AckErrors != 1 || st.Records != 3 {
		t.Fatalf("Stats = %+v", st)
	}
	e.pub.fail = nil
	e.send(t, batch("a", 1, 3, 1, 0)) // the agent resends the unacked batch
	if got := ackRanges(e.pub.acks(t)); got != "a:1-3" {
		t.Fatalf("acks = %q", got)
	}
	if got := e.summary(t, "a"); got.Records != 3 {
		t.Errorf("records = %d; want 3", got.Records)
	}
}

func TestMaxBatchIsStoredInOneTransaction(t *testing.T) {
	e := newEnv(t)
	id := strings.Repeat("d", topics.MaxDeviceIDLen) // the longest id: the longest keys
	b := batch(id, 1, MaxBatchRecords, 1, 0)
	// Pad the records until the batch is as large as allowed.
	for pad := 200; ; pad-- {
		for _, r := range b.Records {
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
	if st := e.mon.Stats(); st.StoreErrors != 0 || st.Records != MaxBatchRecords {
		t.Fatalf("Stats = %+v; %d logged", st, e.logs.count("cannot store"))
	}
	if got := ackRanges(e.pub.acks(t)); got != fmt.Sprintf("%s:1-%d", id, MaxBatchRecords) {
		t.Fatalf("acks = %.60q", got)
	}
}

func TestMalformedTelemetry(t *testing.T) {
	good := func() *shoalv1.TelemetryBatch { return batch("a", 1, 3, 1, 0) }
	enc := func(mod func(b *shoalv1.TelemetryBatch)) func(*testing.T) []byte {
		return func(t *testing.T) []byte { b := good(); mod(b); return marshal(t, b) }
	}
	tel := scheme.Device("a", topics.Telemetry)
	for _, tc := range []struct {
		name    string
		topic   string
		payload func(*testing.T) []byte
		counter func(IngestStats) uint64
	}{
		{"truncated", tel, func(t *testing.T) []byte { b := marshal(t, good()); return b[:len(b)-3] },
			func(s IngestStats) uint64 { return s.Malformed }},
		{"garbage", tel, func(*testing.T) []byte { return []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01} },
			func(s IngestStats) uint64 { return s.Malformed }},
		{"empty", tel, func(*testing.T) []byte { return nil },
			func(s IngestStats) uint64 { return s.BadSchema }},
		{"schema 2", tel, enc(func(b *shoalv1.TelemetryBatch) { b.SchemaVersion = 2 }),
			func(s IngestStats) uint64 { return s.BadSchema }},
		{"wrong device", tel, enc(func(b *shoalv1.TelemetryBatch) { b.DeviceId = "b" }),
			func(s IngestStats) uint64 { return s.WrongDevice }},
		{"giant", tel, func(*testing.T) []byte { return make([]byte, MaxBatchBytes+1) },
			func(s IngestStats) uint64 { return s.TooLarge }},
		{"reported topic", scheme.Device("a", topics.Reported), enc(func(*shoalv1.TelemetryBatch) {}),
			func(s IngestStats) uint64 { return s.BadTopic }},
		{"foreign topic", "x/d/a/telemetry", enc(func(*shoalv1.TelemetryBatch) {}),
			func(s IngestStats) uint64 { return s.BadTopic }},
		{"first after last", tel, enc(func(b *shoalv1.TelemetryBatch) { b.FirstSeq, b.LastSeq = 3, 1 }),
			func(s IngestStats) uint64 { return s.BadBatch }},
		{"record outside range", tel, enc(func(b *shoalv1.TelemetryBatch) { b.Records[2].Seq = 4 }),
			func(s IngestStats) uint64 { return s.BadBatch }},
		{"record twice", tel, enc(func(b *shoalv1.TelemetryBatch) { b.Records[2].Seq = 2 }),
			func(s IngestStats) uint64 { return s.BadBatch }},
		{"too many records", tel, enc(func(b *shoalv1.TelemetryBatch) {
			b.FirstSeq, b.LastSeq, b.Records = 0, MaxBatchRecords, nil
			for s := range uint64(MaxBatchRecords + 1) {
				b.Records = append(b.Records, &shoalv1.TelemetryRecord{Seq: s})
			}
		}), func(s IngestStats) uint64 { return s.BadBatch }},
		{"drop range reversed", tel, enc(func(b *shoalv1.TelemetryBatch) {
			b.Dropped = &shoalv1.DropReport{Records: 1, FirstSeq: 9, LastSeq: 8}
		}), func(s IngestStats) uint64 { return s.BadBatch }},
		{"drop count over range", tel, enc(func(b *shoalv1.TelemetryBatch) {
			b.Dropped = &shoalv1.DropReport{Records: 3, FirstSeq: 8, LastSeq: 9}
		}), func(s IngestStats) uint64 { return s.BadBatch }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.mon.HandleTelemetry(tc.topic, tc.payload(t))
			st := e.mon.Stats()
			if tc.counter(st) != 1 || st.Batches != 0 {
				t.Fatalf("Stats = %+v", st)
			}
			if acks := e.pub.acks(t); len(acks) != 0 {
				t.Errorf("malformed batch acked: %s", ackRanges(acks))
			}
			if s, err := e.mon.Summary(ctx, ""); err != nil || len(s.Devices) != 0 {
				t.Errorf("summary after a refused batch = %+v, %v", s, err)
			}
			if e.logs.count("dropped") != 1 {
				t.Error("refusal not logged once")
			}
		})
	}
}

func TestMalformedFloodIsRateLimited(t *testing.T) {
	e := newEnv(t)
	for range 500 {
		e.mon.HandleTelemetry(scheme.Device("a", topics.Telemetry), []byte{0xff})
	}
	if st := e.mon.Stats(); st.Malformed != 500 {
		t.Errorf("Malformed = %d; want 500", st.Malformed)
	}
	if n := e.logs.count("dropped"); n != 1 {
		t.Errorf("%d log lines for 500 malformed batches from one device; want 1", n)
	}
}

func TestSummaryErrors(t *testing.T) {
	e := newEnv(t)
	_, err := e.mon.Summary(ctx, "a/b")
	if shoalerr.CodeOf(err) != shoalerr.Invalid {
		t.Errorf("Summary of an invalid id: %v; want Invalid", err)
	}
	_, err = e.mon.Summary(ctx, "quiet")
	if shoalerr.CodeOf(err) != shoalerr.NotFound || !strings.Contains(err.Error(), `"quiet"`) {
		t.Errorf("Summary of a silent device: %v; want NotFound naming it", err)
	}
	s, err := e.mon.Summary(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(s); string(b) != `{"devices":[],"total":{"records":0,"predictions":0,"errors":0,"dropped_records":0}}` {
		t.Errorf("empty summary JSON = %s", b)
	}
}
