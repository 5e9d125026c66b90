package outbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// TestKillLosesNothing: with no sync at all, a record is safe from a crash
// of the agent (kill -9) once Append has returned: Badger's log is a shared
// mapping of its file, so the record is in the kernel's page cache, which
// outlives the process. (A power cut loses what the kernel has not written
// back: that is what SyncInterval bounds.)
func TestKillLosesNothing(t *testing.T) {
	if dir := os.Getenv("OUTBOX_CHILD"); dir != "" {
		o, err := Open(dir, Options{SyncInterval: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; ; i++ {
			seq, err := o.Append(record(i))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("appended %d\n", seq)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillLosesNothing$")
	cmd.Env = append(os.Environ(), "OUTBOX_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var last uint64
	for last < 2000 && sc.Scan() {
		n, err := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "appended "), 10, 64)
		if err != nil {
			t.Fatalf("child: %q", sc.Text())
		}
		last = n
	}
	// SIGKILL right after an Append returned, while the child appends on.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if last < 2000 {
		t.Fatalf("the child stopped at %d: %v", last, sc.Err())
	}

	o := openAt(t, dir, Options{})
	defer o.Close()
	if o.LastSeq() < last {
		t.Fatalf("after kill -9: LastSeq %d; Append had returned %d", o.LastSeq(), last)
	}
	recs, err := o.Pending(int(last))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		want := record(i + 1)
		want.Seq = uint64(i + 1)
		if !proto.Equal(r, want) {
			t.Fatalf("record %d after kill -9 = %v; want %v", i+1, r, want)
		}
	}
	if len(recs) != int(last) {
		t.Fatalf("after kill -9: %d records; Append had returned %d", len(recs), last)
	}
}

// ticker drives an outbox's maintenance loop by hand (Options.ticks), so
// that a test's verdict on what the loop did is on ticks that happened.
type ticker chan tick

// tick has the loop run once at the time at, and returns once it has.
func (c ticker) tick(at time.Time) {
	done := make(chan struct{})
	c <- tick{at, done}
	<-done
}

// TestPeriodicSync: without SyncWrites the maintenance loop syncs Badger's
// log every SyncInterval, and only when something was written.
func TestPeriodicSync(t *testing.T) {
	const interval = time.Second // the loop ticks every interval
	ticks := make(ticker)
	o := openAt(t, t.TempDir(), Options{SyncInterval: interval, ticks: ticks})
	defer o.Close()
	at := time.Now()
	next := func() {
		at = at.Add(interval)
		ticks.tick(at)
	}
	appendN(t, o, 1, 1)
	next()
	st := o.Stats()
	if st.Syncs != 1 || !st.LastSync.Equal(at) || st.SyncErrors != 0 {
		t.Fatalf("after a write and a tick: %+v", st)
	}
	for range 10 {
		next()
	}
	if n := o.Stats().Syncs; n != st.Syncs {
		t.Fatalf("%d syncs in ten ticks with nothing written", n-st.Syncs)
	}
	if err := o.Ack(1, 1); err != nil {
		t.Fatal(err)
	}
	next()
	if st := o.Stats(); st.Syncs != 2 || !st.LastSync.Equal(at) {
		t.Fatalf("after an ack and a tick: %+v", st)
	}
}

// TestPeriodicSyncSlowerThanTheLoop: a SyncInterval over maintainEvery
// leaves the loop ticking every maintainEvery and syncing every so many
// ticks: with twice maintainEvery, every other tick.
func TestPeriodicSyncSlowerThanTheLoop(t *testing.T) {
	ticks := make(ticker)
	o := openAt(t, t.TempDir(), Options{SyncInterval: 2 * maintainEvery, ticks: ticks})
	defer o.Close()
	start := time.Now()
	for i, want := range []uint64{1, 1, 2, 2, 3} { // a write before every tick
		appendN(t, o, i+1, 1)
		ticks.tick(start.Add(time.Duration(i) * maintainEvery))
		if st := o.Stats(); st.Syncs != want {
			t.Fatalf("tick %d, %s in: %d syncs; want %d", i, time.Duration(i)*maintainEvery, st.Syncs, want)
		}
	}
}

// TestNoPeriodicSync: with SyncInterval negative, or SyncWrites, the loop
// never syncs.
func TestNoPeriodicSync(t *testing.T) {
	for _, opts := range []Options{{SyncInterval: -1}, {SyncWrites: true, SyncInterval: 5 * time.Millisecond}} {
		ticks := make(ticker)
		opts.ticks = ticks
		o := openAt(t, t.TempDir(), opts)
		at := time.Now()
		for i := range 10 {
			appendN(t, o, i+1, 1)
			at = at.Add(maintainEvery)
			ticks.tick(at)
		}
		if n := o.Stats().Syncs; n != 0 {
			t.Errorf("%+v: %d periodic syncs in ten ticks after writes", opts, n)
		}
		o.Close()
	}
}

// TestPeriodicSyncOnItsOwn: the loop runs on a ticker of its own.
func TestPeriodicSyncOnItsOwn(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{SyncInterval: 5 * time.Millisecond})
	defer o.Close()
	appendN(t, o, 1, 1)
	shoaltest.Eventually(t, "a sync after a write", shoaltest.Holds(
		func() bool { return o.Stats().Syncs > 0 }, statsOf(o)))
}
