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

// TestPeriodicSync: without SyncWrites the log is synced every SyncInterval,
// and only when something was written.
func TestPeriodicSync(t *testing.T) {
	o := openAt(t, t.TempDir(), Options{SyncInterval: 5 * time.Millisecond})
	defer o.Close()
	appendN(t, o, 1, 1)
	deadline := time.Now().Add(wait)
	for o.Stats().Syncs == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no sync after a write")
		}
		time.Sleep(time.Millisecond)
	}
	st := o.Stats()
	if st.LastSync.IsZero() || st.SyncErrors != 0 {
		t.Fatalf("after a sync: %+v", st)
	}
	time.Sleep(50 * time.Millisecond) // ten intervals with nothing written
	if n := o.Stats().Syncs; n != st.Syncs {
		t.Fatalf("%d syncs with nothing written", n-st.Syncs)
	}
	if err := o.Ack(1, 1); err != nil {
		t.Fatal(err)
	}
	for o.Stats().Syncs == st.Syncs {
		if time.Now().After(deadline) {
			t.Fatal("no sync after an ack")
		}
		time.Sleep(time.Millisecond)
	}

	for _, opts := range []Options{{SyncInterval: -1}, {SyncWrites: true, SyncInterval: 5 * time.Millisecond}} {
		o := openAt(t, t.TempDir(), opts)
		appendN(t, o, 1, 3)
		time.Sleep(30 * time.Millisecond)
		if n := o.Stats().Syncs; n != 0 {
			t.Errorf("%+v: %d periodic syncs", opts, n)
		}
		o.Close()
	}
}
