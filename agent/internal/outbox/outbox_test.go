package outbox

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openAt(t testing.TB, dir string, opts Options) *Outbox {
	t.Helper()
	o, err := Open(dir, opts, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// record i has the window [i s, i+1 s) and a fixed encoded size while its
// sequence is under 128.
func record(i int) *shoalv1.TelemetryRecord {
	return &shoalv1.TelemetryRecord{
		ModelName: "mnist", ModelVersion: "3",
		WindowStartUnixMs: 1_700_000_000_000 + int64(i)*1000, WindowEndUnixMs: 1_700_000_001_000 + int64(i)*1000,
		Predictions: 10, LatencySumUs: 500, LatencyP50Us: 40,
	}
}

// appendN appends record(from) to record(from+n-1).
func appendN(t testing.TB, o *Outbox, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := o.Append(record(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func seqs(recs []*shoalv1.TelemetryRecord) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func wantSeqs(t *testing.T, o *Outbox, max int, first, last uint64) {
	t.Helper()
	recs, err := o.Pending(max)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != int(last-first+1) || recs[0].Seq != first || recs[len(recs)-1].Seq != last {
		t.Fatalf("Pending(%d) = %v; want %d..%d", max, seqs(recs), first, last)
	}
	for i, r := range recs {
		if r.Seq != first+uint64(i) {
			t.Fatalf("Pending(%d) = %v; want %d..%d in order", max, seqs(recs), first, last)
		}
	}
}

func TestAppendPendingAck(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{})
	defer o.Close()
	if recs, err := o.Pending(10); err != nil || len(recs) != 0 {
		t.Fatalf("empty Pending = %v, %v", recs, err)
	}
	appendN(t, o, 1, 5)
	size := int64(proto.Size(record(1))) + 2 // + seq field
	if o.Len() != 5 || o.Bytes() != 5*size || o.LastSeq() != 5 {
		t.Fatalf("Len %d Bytes %d LastSeq %d; want 5, %d, 5", o.Len(), o.Bytes(), o.LastSeq(), 5*size)
	}
	recs, err := o.Pending(3)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(recs); len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("Pending(3) = %v", got)
	}
	want := record(1)
	want.Seq = 1
	if !proto.Equal(recs[0], want) {
		t.Errorf("record 1 = %v; want %v", recs[0], want)
	}
	if err := o.Ack(1, 2); err != nil {
		t.Fatal(err)
	}
	if o.Len() != 3 || o.Bytes() != 3*size {
		t.Fatalf("after Ack(1,2): Len %d Bytes %d", o.Len(), o.Bytes())
	}
	wantSeqs(t, o, 10, 3, 5)
	// Duplicate, unknown and overlapping acks are harmless.
	for _, r := range [][2]uint64{{1, 2}, {100, 200}, {0, 0}, {2, 3}} {
		if err := o.Ack(r[0], r[1]); err != nil {
			t.Fatalf("Ack(%d,%d): %v", r[0], r[1], err)
		}
	}
	wantSeqs(t, o, 10, 4, 5)
	if err := o.Ack(5, 4); err == nil {
		t.Error("Ack(5,4) accepted")
	}
	if o.TakeDropReport() != nil {
		t.Error("drop report without drops")
	}
}

// TestAppendLeavesTheRecordAlone: Append never changes the caller's
// record, not even its Seq (a caller may hand the same record to others,
// or in again); the stored record carries the sequence Append assigned,
// encoded as proto.Marshal encodes the record with that sequence.
func TestAppendLeavesTheRecordAlone(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{})
	defer o.Close()
	appendN(t, o, 1, 200) // sequences past 127 take a longer varint
	for _, callerSeq := range []uint64{0, 7, 1 << 40} {
		t.Run(fmt.Sprint("seq=", callerSeq), func(t *testing.T) {
			rec := record(3)
			rec.Seq = callerSeq
			before := proto.Clone(rec)
			seq, err := o.Append(rec)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Seq != callerSeq || !proto.Equal(rec, before) {
				t.Fatalf("Append(%v) changed the record to %v", before, rec)
			}
			want := record(3)
			want.Seq = seq
			wantVal, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			if err := o.db.View(func(txn *badgerTxn) (err error) {
				got, err = get(txn, recKey(seq))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wantVal) {
				t.Fatalf("record %d stored as %x; want %x", seq, got, wantVal)
			}
			if err := o.Ack(1, seq-1); err != nil {
				t.Fatal(err)
			}
			recs, err := o.Pending(10)
			if err != nil || len(recs) != 1 || !proto.Equal(recs[0], want) {
				t.Fatalf("Pending = %v, %v; want [%v]", recs, err, want)
			}
		})
	}
	if got, want := o.Bytes(), int64(proto.Size(&shoalv1.TelemetryRecord{Seq: o.LastSeq()})+proto.Size(record(3))); got != want {
		t.Errorf("Bytes = %d; want %d", got, want)
	}
}

func TestAckLargeRange(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{})
	defer o.Close()
	const n = 2*ackChunk + 10 // several delete transactions
	for i := 0; i < n; i++ {
		if _, err := o.Append(record(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Ack(3, n-1); err != nil {
		t.Fatal(err)
	}
	recs, _ := o.Pending(10)
	if got := seqs(recs); o.Len() != 3 || len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != n {
		t.Fatalf("Len %d, Pending %v", o.Len(), got)
	}
}

func TestRestartKeepsRecordsAndSequence(t *testing.T) {
	dir := t.TempDir()
	o := openAt(t, dir, Options{SyncWrites: true})
	appendN(t, o, 1, 3)
	if err := o.Ack(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Everything was acked: the sequence still continues after a restart.
	o = openAt(t, dir, Options{})
	if o.Len() != 0 || o.LastSeq() != 3 {
		t.Fatalf("reopened: Len %d LastSeq %d; want 0, 3", o.Len(), o.LastSeq())
	}
	appendN(t, o, 4, 2)
	size := o.Bytes()
	o.Close()

	o = openAt(t, dir, Options{})
	defer o.Close()
	if o.Len() != 2 || o.Bytes() != size {
		t.Fatalf("reopened: Len %d Bytes %d; want 2, %d", o.Len(), o.Bytes(), size)
	}
	wantSeqs(t, o, 10, 4, 5)
	if seq, err := o.Append(record(6)); err != nil || seq != 6 {
		t.Fatalf("Append after restart = %d, %v; want 6", seq, err)
	}
}

func TestMaxBytesDropsOldestWithExactReport(t *testing.T) {
	dir := t.TempDir()
	size := int64(proto.Size(record(1))) + 2
	o := openAt(t, dir, Options{MaxBytes: 5 * size})
	appendN(t, o, 1, 8) // 1..3 must go
	if o.Len() != 5 || o.Bytes() != 5*size {
		t.Fatalf("Len %d Bytes %d; want 5, %d", o.Len(), o.Bytes(), 5*size)
	}
	wantSeqs(t, o, 10, 4, 8)
	want := &shoalv1.DropReport{Records: 3, FirstSeq: 1, LastSeq: 3,
		FromUnixMs: record(1).WindowStartUnixMs, ToUnixMs: record(3).WindowEndUnixMs}
	got := o.TakeDropReport()
	if !proto.Equal(got, want) {
		t.Fatalf("drop report = %v; want %v", got, want)
	}

	// The report was handed to batch 4..8; drops from now on go to the
	// next report, and this one is returned again until 4..8 is acked,
	// also across a restart.
	appendN(t, o, 9, 2) // drops 4, 5
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("report changed after it was sent: %v", got)
	}
	o.Close()
	o = openAt(t, dir, Options{MaxBytes: 5 * size})
	defer o.Close()
	wantSeqs(t, o, 10, 6, 10)
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("after restart: report = %v; want %v", got, want)
	}
	// An ack that does not cover the batch keeps the report.
	if err := o.Ack(6, 7); err != nil {
		t.Fatal(err)
	}
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("after a partial ack: report = %v; want %v", got, want)
	}
	wantSeqs(t, o, 10, 8, 10)
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("report = %v; want %v", got, want)
	}
	// Acked in parts: the report goes with the last part.
	if err := o.Ack(8, 9); err != nil {
		t.Fatal(err)
	}
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("after a partial ack: report = %v; want %v", got, want)
	}
	if err := o.Ack(10, 10); err != nil {
		t.Fatal(err)
	}
	// 4 and 5 were dropped after the first report went out.
	want2 := &shoalv1.DropReport{Records: 2, FirstSeq: 4, LastSeq: 5,
		FromUnixMs: record(4).WindowStartUnixMs, ToUnixMs: record(5).WindowEndUnixMs}
	if got := o.TakeDropReport(); !proto.Equal(got, want2) {
		t.Fatalf("second report = %v; want %v", got, want2)
	}
}

func TestRecordTooLargeAndClosedDatabase(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{MaxBytes: 10})
	r := record(1)
	if _, err := o.Append(r); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversize record: err = %v", err)
	}
	if r.Seq != 0 || o.Len() != 0 {
		t.Fatalf("refused record left seq %d, Len %d", r.Seq, o.Len())
	}
	if _, err := o.Append(nil); err == nil {
		t.Error("nil record accepted")
	}
	// Badger itself failing (its database closed under the outbox): the
	// write fails, is counted, and the outbox reopens the database.
	if err := o.db.Close(); err != nil {
		t.Fatal(err)
	}
	o.opts.MaxBytes = DefaultMaxBytes
	if _, err := o.Append(record(1)); err == nil || !strings.Contains(err.Error(), "append record") {
		t.Errorf("Append on a closed database: err = %v", err)
	}
	if st := o.Stats(); st.WriteErrors != 1 || st.Open {
		t.Errorf("after a failed write: %+v", st)
	}
	// The reopened database is empty: the sequence goes on above the
	// floor, past anything that may have been handed out.
	seq, err := o.Append(record(2))
	if err != nil || seq <= 1 {
		t.Errorf("Append after the reopen = %d, %v; want a sequence above 1 (never reused)", seq, err)
	}
	if recs, err := o.Pending(10); err != nil || len(recs) != 1 || recs[0].Seq != seq {
		t.Errorf("Pending after the reopen = %v, %v", recs, err)
	}
	if st := o.Stats(); st.Reopens != 1 || !st.Open || st.Records != 1 {
		t.Errorf("after the reopen: %+v", st)
	}
	o.Close()
	if _, err := o.Append(record(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := o.Pending(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Pending after Close: %v", err)
	}
	if err := o.Ack(1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close: %v", err)
	}
	if o.TakeDropReport() != nil {
		t.Error("TakeDropReport after Close")
	}
}

func TestUndecodableRecordIsReportedAsDropped(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{})
	defer o.Close()
	appendN(t, o, 1, 3)
	// Corrupt record 2 on disk.
	if err := o.db.Update(func(txn *badgerTxn) error { return txn.Set(recKey(2), []byte{0xff, 0xff, 0xff}) }); err != nil {
		t.Fatal(err)
	}
	recs, err := o.Pending(10)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(recs); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("Pending = %v; want [1 3]", got)
	}
	if o.Len() != 2 {
		t.Errorf("Len = %d; want 2", o.Len())
	}
	if d := o.TakeDropReport(); d.GetRecords() != 1 || d.GetFirstSeq() != 2 || d.GetLastSeq() != 2 {
		t.Errorf("drop report = %v", d)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	o := openAt(t, dir, Options{})
	defer o.Close()
	// Badger locks its directory: a second open must fail, not corrupt.
	if _, err := Open(dir, Options{}, nil); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: err = %v", err)
	}
}

// TestBigRecordDropsManySmallOnes: a record that needs more of the oldest
// records dropped than one Badger transaction can delete goes in after
// them, and the report counts them all.
func TestBigRecordDropsManySmallOnes(t *testing.T) {
	size := int64(proto.Size(record(1))) + 2
	o := openAt(t, t.TempDir(), Options{MaxBytes: 100 << 10})
	defer o.Close()
	n := int((100 << 10) / size)
	appendN(t, o, 1, n)
	big := record(0)
	big.ModelName = strings.Repeat("m", MaxRecordBytes-200)
	seq, err := o.Append(big)
	if err != nil {
		t.Fatal(err)
	}
	d := o.TakeDropReport()
	if d.GetRecords() <= ackChunk || d.GetFirstSeq() != 1 || o.Bytes() > 100<<10 {
		t.Fatalf("drop report %v, %d bytes queued", d, o.Bytes())
	}
	if o.Len() != n-int(d.GetRecords())+1 {
		t.Fatalf("Len %d; want %d", o.Len(), n-int(d.GetRecords())+1)
	}
	recs, err := o.Pending(n)
	if err != nil || recs[0].Seq != d.GetLastSeq()+1 || recs[len(recs)-1].Seq != seq {
		t.Fatalf("Pending: %v, first %d last %d", err, recs[0].Seq, recs[len(recs)-1].Seq)
	}
}
