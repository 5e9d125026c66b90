package outbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/shoaltest"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// fakeDisk is a file system whose free space a test sets.
type fakeDisk struct{ free atomic.Uint64 }

func newFakeDisk() *fakeDisk {
	d := &fakeDisk{}
	d.free.Store(1 << 40)
	return d
}

func (d *fakeDisk) stat(string) (space, bool) {
	return space{bytes: d.free.Load(), inodes: 1 << 20}, true
}

const testMinFree = 1 << 20

func (d *fakeDisk) opts(o Options) Options {
	o.MinFreeBytes, o.statSpace = testMinFree, d.stat
	return o
}

// isOpen is true once o's database is open.
func isOpen(o *Outbox) func() error {
	return shoaltest.Holds(func() bool { return o.Stats().Open }, statsOf(o))
}

func statsOf(o *Outbox) func() string {
	return func() string { return fmt.Sprintf("%+v", o.Stats()) }
}

// TestNoSpaceCountsThenReportsDrops: while the file system is nearly full
// the outbox writes nothing — Append counts, Ack takes records out of the
// queue in memory — and once there is room again the records it could not
// write are reported as dropped under sequences of their own, and the
// acked ones are deleted from disk.
func TestNoSpaceCountsThenReportsDrops(t *testing.T) {
	disk := newFakeDisk()
	dir := t.TempDir()
	o := openAt(t, dir, disk.opts(Options{SyncInterval: -1}))
	defer func() { o.Close() }()
	appendN(t, o, 1, 3)
	wantSeqs(t, o, 10, 1, 3)

	disk.free.Store(testMinFree - 1)
	writes := o.writes
	for i := 4; i <= 6; i++ {
		r := record(i)
		if seq, err := o.Append(r); seq != 0 || err != nil || r.Seq != 0 {
			t.Fatalf("Append without room = %d, %v (rec.Seq %d); want 0, nil, untouched", seq, err, r.Seq)
		}
	}
	if err := o.Ack(1, 2); err != nil {
		t.Fatalf("Ack without room: %v", err)
	}
	st := o.Stats()
	if !st.NoSpace || st.NoSpaceEvents != 1 || st.DroppedNoSpace != 3 || st.HeldRecords != 3 || st.Records != 1 {
		t.Fatalf("stats without room: %+v", st)
	}
	wantSeqs(t, o, 10, 3, 3) // 1 and 2 are acked, though still on disk
	if left, err := o.AnyIn(1, 2); err != nil || left {
		t.Fatalf("AnyIn(1, 2) = %v, %v after their ack", left, err)
	}
	if d := o.TakeDropReport(); d != nil {
		t.Fatalf("a drop report before the drops are written: %v", d)
	}
	if o.writes != writes {
		t.Fatalf("%d writes to Badger without room", o.writes-writes)
	}

	// Just over the limit is not enough once stopped (no flapping).
	disk.free.Store(testMinFree + 1)
	if seq, _ := o.Append(record(7)); seq != 0 {
		t.Fatalf("Append resumed at the limit: seq %d", seq)
	}
	disk.free.Store(1 << 40)
	seq, err := o.Append(record(8))
	if err != nil || seq != 8 {
		t.Fatalf("Append with room = %d, %v; want 8 (4..7 go to the drop report)", seq, err)
	}
	if recs, _ := o.Pending(10); len(recs) != 2 || recs[1].Seq != 8 || recs[1].WindowStartUnixMs != record(8).WindowStartUnixMs {
		t.Fatalf("Pending = %v", recs)
	}
	want := &shoalv1.DropReport{Records: 4, FirstSeq: 4, LastSeq: 7,
		FromUnixMs: record(4).WindowStartUnixMs, ToUnixMs: record(7).WindowEndUnixMs}
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("drop report = %v; want %v", got, want)
	}
	if st := o.Stats(); st.NoSpace || st.HeldRecords != 0 || st.DroppedNoSpace != 4 || st.Records != 2 {
		t.Fatalf("stats with room: %+v", st)
	}

	// All of it is on disk: acked records deleted, the report sent.
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = openAt(t, dir, disk.opts(Options{}))
	if o.Len() != 2 || o.LastSeq() != 8 {
		t.Fatalf("reopened: Len %d LastSeq %d; want 2, 8", o.Len(), o.LastSeq())
	}
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("reopened: drop report = %v; want %v", got, want)
	}
}

// TestNoSpaceAckOfTheReportedBatch: the ack that clears a drop report while
// the outbox cannot write clears it on disk once it can.
func TestNoSpaceAckOfTheReportedBatch(t *testing.T) {
	disk := newFakeDisk()
	dir := t.TempDir()
	size := int64(proto.Size(record(1))) + 2
	o := openAt(t, dir, disk.opts(Options{MaxBytes: 3 * size}))
	appendN(t, o, 1, 5) // drops 1, 2
	wantSeqs(t, o, 10, 3, 5)
	if d := o.TakeDropReport(); d.GetRecords() != 2 {
		t.Fatalf("drop report = %v", d)
	}
	disk.free.Store(0)
	if err := o.Ack(3, 5); err != nil {
		t.Fatal(err)
	}
	if d := o.TakeDropReport(); d != nil {
		t.Fatalf("drop report after its batch was acked: %v", d)
	}
	if o.Len() != 0 {
		t.Fatalf("Len = %d", o.Len())
	}
	disk.free.Store(1 << 40)
	// The maintenance loop writes it; Close does if the loop has not.
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = openAt(t, dir, disk.opts(Options{}))
	defer o.Close()
	if o.Len() != 0 || o.TakeDropReport() != nil {
		t.Fatalf("reopened: Len %d, report %v", o.Len(), o.TakeDropReport())
	}
}

// TestOpenWithoutRoom: an outbox opened on a nearly full file system does
// not touch Badger (replaying its log could fault), counts what it is given,
// and opens by itself once there is room, going on from what is on disk.
func TestOpenWithoutRoom(t *testing.T) {
	disk := newFakeDisk()
	dir := t.TempDir()
	o := openAt(t, dir, disk.opts(Options{}))
	appendN(t, o, 1, 2)
	o.Close()

	disk.free.Store(0)
	o = openAt(t, dir, disk.opts(Options{SyncInterval: 10 * time.Millisecond}))
	defer o.Close()
	if st := o.Stats(); st.Open || !st.NoSpace {
		t.Fatalf("opened without room: %+v", st)
	}
	if recs, err := o.Pending(10); len(recs) != 0 || err != nil {
		t.Fatalf("Pending = %v, %v", recs, err)
	}
	if seq, err := o.Append(record(3)); seq != 0 || err != nil {
		t.Fatalf("Append = %d, %v", seq, err)
	}
	if err := o.Ack(1, 1); err != nil {
		t.Fatal(err)
	}
	disk.free.Store(1 << 40)
	// The maintenance loop opens it.
	shoaltest.Eventually(t, "the outbox opening once there is room", isOpen(o))
	wantSeqs(t, o, 10, 2, 2) // 1 was acked before the database was open
	if d := o.TakeDropReport(); d.GetRecords() != 1 || d.GetFirstSeq() != 3 || d.GetFromUnixMs() != record(3).WindowStartUnixMs {
		t.Fatalf("drop report = %v", d)
	}
	if seq, err := o.Append(record(4)); seq != 4 || err != nil {
		t.Fatalf("Append = %d, %v; want 4", seq, err)
	}
}

// TestSenderReportsWhatTheFullDiskDropped: the batch after the disk had
// room again carries the drop report of the records it could not write.
func TestSenderReportsWhatTheFullDiskDropped(t *testing.T) {
	disk := newFakeDisk()
	o, s, pub := start(t, disk.opts(Options{}), SenderConfig{AckTimeout: time.Hour})
	appendN(t, o, 1, 1)
	disk.free.Store(0)
	for i := 2; i <= 4; i++ {
		if _, err := o.Append(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.SetConnected(true)
	b := pub.next(t)
	wantBatch(t, b, 1, 1)
	if b.Dropped != nil {
		t.Fatalf("a drop report before it was written: %v", b.Dropped)
	}
	s.HandleAck(ack(1, 1)) // applied in memory
	disk.free.Store(1 << 40)
	appendN(t, o, 5, 1) // seq 5; 2..4 become the drop report
	s.Notify()
	b = pub.next(t)
	wantBatch(t, b, 5, 5)
	want := &shoalv1.DropReport{Records: 3, FirstSeq: 2, LastSeq: 4,
		FromUnixMs: record(2).WindowStartUnixMs, ToUnixMs: record(4).WindowEndUnixMs}
	if !proto.Equal(b.Dropped, want) {
		t.Fatalf("dropped = %v; want %v", b.Dropped, want)
	}
}

// fill writes a file until the file system is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// child runs the test named name in a new process of this test binary with
// OUTBOX_CHILD=arg, and returns its output and error.
func child(t *testing.T, name, arg string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(os.Environ(), "OUTBOX_CHILD="+arg)
	return cmd.CombinedOutput()
}

// TestFullDiskForReal fills a real (tmpfs) file system under an agent's
// outbox, which then exits, and starts the next one on the full disk: no
// crash (Badger replaying its log on a full tmpfs faults), nothing
// corrupt, and once space returns the queue is all there and the new
// drops are reported. Without the outbox's guard the same steps crash the
// process (TestFullDiskCrashesBadger).
func TestFullDiskForReal(t *testing.T) {
	opts := Options{MinFreeBytes: 8 << 20, SyncInterval: 20 * time.Millisecond}
	if mnt := os.Getenv("OUTBOX_CHILD"); mnt != "" {
		ticks := make(ticker)
		childOpts := opts
		childOpts.ticks = ticks
		o := openAt(t, filepath.Join(mnt, "outbox"), childOpts)
		appendN(t, o, 1, 100)
		fill(t, mnt)
		for i := 101; i <= 200; i++ { // each would fault in Badger
			if seq, err := o.Append(record(i)); seq != 0 || err != nil {
				t.Fatalf("Append on a full disk = %d, %v", seq, err)
			}
		}
		if err := o.Ack(1, 50); err != nil {
			t.Fatal(err)
		}
		wantSeqs(t, o, 100, 51, 100)
		at := time.Now()
		for range 5 { // maintenance on a full disk, syncs included
			at = at.Add(opts.SyncInterval)
			ticks.tick(at)
		}
		if err := o.Close(); err != nil { // syncs; no flush into the full disk
			t.Fatal(err)
		}
		return
	}
	mnt := shoaltest.Tmpfs(t, 48<<20)
	if out, err := child(t, "TestFullDiskForReal", mnt); err != nil {
		t.Fatalf("the first agent: %v\n%s", err, out)
	}
	o := openAt(t, filepath.Join(mnt, "outbox"), opts)
	defer o.Close()
	if st := o.Stats(); st.Open || !st.NoSpace {
		t.Fatalf("opened on a full disk: %+v", st)
	}
	if seq, err := o.Append(record(201)); seq != 0 || err != nil {
		t.Fatalf("Append on a full disk = %d, %v", seq, err)
	}
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	shoaltest.Eventually(t, "the outbox opening once space returned", isOpen(o))
	// The first agent's acks were in memory only: 1..50 are sent again
	// (the control plane de-duplicates). Its 100 records not written were
	// logged as lost at its Close; this agent's one is reported.
	wantSeqs(t, o, 200, 1, 100)
	if d := o.TakeDropReport(); d.GetRecords() != 1 || d.GetFirstSeq() != 101 {
		t.Fatalf("drop report = %v", d)
	}
	if seq, err := o.Append(record(202)); seq != 102 || err != nil {
		t.Fatalf("Append after space returned = %d, %v; want 102", seq, err)
	}
}

// TestFullDiskRecoversInProcess: space returns while the agent runs; the
// outbox writes again by itself, reports what it could not write, and its
// database stays sound.
func TestFullDiskRecoversInProcess(t *testing.T) {
	mnt := shoaltest.Tmpfs(t, 48<<20)
	dir := filepath.Join(mnt, "outbox")
	opts := Options{MinFreeBytes: 8 << 20, SyncInterval: 20 * time.Millisecond}
	o := openAt(t, dir, opts)
	appendN(t, o, 1, 100)
	filler := fill(t, mnt)
	for i := 101; i <= 150; i++ {
		if seq, err := o.Append(record(i)); seq != 0 || err != nil {
			t.Fatalf("Append on a full disk = %d, %v", seq, err)
		}
	}
	if err := o.Ack(1, 100); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The maintenance loop catches up.
	shoaltest.Eventually(t, "a catch-up once space returned", shoaltest.Holds(
		func() bool { return o.Stats().HeldRecords == 0 }, statsOf(o)))
	want := &shoalv1.DropReport{Records: 50, FirstSeq: 101, LastSeq: 150,
		FromUnixMs: record(101).WindowStartUnixMs, ToUnixMs: record(150).WindowEndUnixMs}
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("drop report = %v; want %v", got, want)
	}
	appendN(t, o, 151, 1)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = openAt(t, dir, opts)
	defer o.Close()
	wantSeqs(t, o, 10, 151, 151)
	if got := o.TakeDropReport(); !proto.Equal(got, want) {
		t.Fatalf("reopened: drop report = %v; want %v", got, want)
	}
}

// TestFullDiskCrashesBadger is why the outbox has its guard: Badger v4
// with the check off faults fatally (SIGBUS) writing to a full tmpfs. If
// this starts failing, Badger handles ENOSPC itself now.
func TestFullDiskCrashesBadger(t *testing.T) {
	if mnt := os.Getenv("OUTBOX_CHILD"); mnt != "" {
		o, err := Open(filepath.Join(mnt, "outbox"), Options{MinFreeBytes: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, o, 1, 10)
		fill(t, mnt)
		appendN(t, o, 11, 100_000)
		t.Log("no fault")
		return
	}
	out, err := child(t, "TestFullDiskCrashesBadger", shoaltest.Tmpfs(t, 8<<20))
	if err == nil || !strings.Contains(string(out), "SIGBUS") {
		t.Fatalf("Badger on a full disk: err %v, output:\n%.2000s", err, out)
	}
}
