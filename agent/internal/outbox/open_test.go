package outbox

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// filledOutbox makes an outbox in a new directory with n records written
// out to a table, closes it and returns the directory.
func filledOutbox(t *testing.T, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outbox")
	o := openAt(t, dir, Options{})
	for i := 0; i < n; i++ {
		if _, err := o.Append(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Close(); err != nil { // flushes the memtable into a table
		t.Fatal(err)
	}
	return dir
}

func scribble(t *testing.T, path string, at func(size int64) int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(strings.Repeat("garbage!", 32)), at(fi.Size())); err != nil {
		t.Fatal(err)
	}
}

func tables(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(m) == 0 {
		t.Fatal("no table written")
	}
	return m
}

// TestDamagedDatabaseIsMovedAside: whatever is wrong with the database on
// disk, Open moves it aside, starts an empty one and goes on numbering
// above every sequence handed out before, so that the control plane (which
// de-duplicates by sequence) takes the new records. Some of these damages
// make Badger panic in a goroutine of its own, which no recover can catch:
// the outbox must find them first.
func TestDamagedDatabaseIsMovedAside(t *testing.T) {
	const n = 2000
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"MANIFEST garbage", func(t *testing.T, dir string) {
			scribble(t, filepath.Join(dir, "MANIFEST"), func(int64) int64 { return 0 })
		}},
		{"MANIFEST checksum", func(t *testing.T, dir string) {
			scribble(t, filepath.Join(dir, "MANIFEST"), func(s int64) int64 { return s - 8 })
		}},
		{"table index garbage", func(t *testing.T, dir string) { // panics in Badger's table loader
			for _, p := range tables(t, dir) {
				scribble(t, p, func(s int64) int64 { return s - 300 })
			}
		}},
		{"table block garbage", func(t *testing.T, dir string) {
			for _, p := range tables(t, dir) {
				scribble(t, p, func(s int64) int64 { return s / 3 })
			}
		}},
		{"table truncated", func(t *testing.T, dir string) { // panics in Badger's table loader
			for _, p := range tables(t, dir) {
				if err := os.Truncate(p, 4096); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"table missing", func(t *testing.T, dir string) {
			if err := os.Remove(tables(t, dir)[0]); err != nil {
				t.Fatal(err)
			}
		}},
		{"KEYREGISTRY garbage", func(t *testing.T, dir string) {
			scribble(t, filepath.Join(dir, "KEYREGISTRY"), func(int64) int64 { return 0 })
		}},
		{"value log garbage", func(t *testing.T, dir string) {
			m, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
			for _, p := range m {
				scribble(t, p, func(int64) int64 { return 0 })
			}
		}},
		{"not a directory", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, []byte("?"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"unreadable", func(t *testing.T, dir string) {
			if os.Geteuid() == 0 {
				t.Skip("root reads any directory")
			}
			if err := os.Chmod(dir, 0); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(dir, 0o700) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filledOutbox(t, n)
			tc.damage(t, dir)
			o, err := Open(dir, Options{}, testLog(t))
			if err != nil {
				t.Fatalf("Open = %v; want the database moved aside", err)
			}
			defer o.Close()
			if st := o.Stats(); st.MovedAside != 1 || !st.Open || st.Records != 0 || st.LastSeq < n {
				t.Fatalf("after Open: %+v; want it moved aside, open, empty, numbering from %d", st, n)
			}
			if seq, err := o.Append(record(1)); err != nil || seq <= n {
				t.Fatalf("Append = %d, %v; want a sequence above %d", seq, err, n)
			}
			wantSeqs(t, o, 10, o.LastSeq(), o.LastSeq())
			aside, _ := filepath.Glob(dir + corruptInfix + "*")
			if len(aside) != 1 {
				t.Fatalf("moved aside: %v", aside)
			}
			if _, err := os.Stat(dir + openingSuffix); !os.IsNotExist(err) {
				t.Errorf("the open marker is left: %v", err)
			}
		})
	}
}

// TestMovedAsideCopiesAreBounded: a device whose outbox is damaged again
// and again keeps only the newest few.
func TestMovedAsideCopiesAreBounded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	for i := 0; i < keepMovedAside+2; i++ {
		o := openAt(t, dir, Options{})
		appendN(t, o, 1, 1)
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		scribble(t, filepath.Join(dir, "MANIFEST"), func(int64) int64 { return 0 })
	}
	o := openAt(t, dir, Options{})
	defer o.Close()
	aside, _ := filepath.Glob(dir + corruptInfix + "*")
	if len(aside) != keepMovedAside {
		t.Fatalf("moved-aside copies: %v; want %d", aside, keepMovedAside)
	}
}

// TestHealthyDatabaseIsKept: an outbox that opens normally, or one held by
// another process, is never moved aside.
func TestHealthyDatabaseIsKept(t *testing.T) {
	dir := filledOutbox(t, 2000)
	o := openAt(t, dir, Options{})
	defer o.Close()
	if o.Len() != 2000 || o.Stats().MovedAside != 0 {
		t.Fatalf("Len %d, %+v", o.Len(), o.Stats())
	}
	if _, err := Open(dir, Options{}, nil); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Open: err = %v", err)
	}
	if aside, _ := filepath.Glob(dir + corruptInfix + "*"); len(aside) != 0 {
		t.Fatalf("a locked database was moved aside: %v", aside)
	}
	if o.Len() != 2000 {
		t.Fatalf("Len %d after the second Open", o.Len())
	}
}

// TestUndecodableDropReportKeepsTheRecords: a drop report that no longer
// decodes is logged and skipped; the queue is kept.
func TestUndecodableDropReportKeepsTheRecords(t *testing.T) {
	dir := filledOutbox(t, 10)
	db, err := badger.Open(badgerOptions(dir, Options{}, testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(keySent, []byte{0xff}) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var logs strings.Builder
	o, err := Open(dir, Options{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Len() != 10 || o.TakeDropReport() != nil || o.Stats().MovedAside != 0 {
		t.Fatalf("Len %d, %+v", o.Len(), o.Stats())
	}
	if !strings.Contains(logs.String(), "drop report on disk does not decode") {
		t.Errorf("not logged:\n%s", logs.String())
	}
}

// TestOpensThatCrashAreCounted: an open that crashes the agent (here a
// panic in another goroutine, as Badger's table loader panics on some
// damage) is told from one cut short by a kill: two crashes in a row move
// the database aside; any number of kills do not.
func TestOpensThatCrashAreCounted(t *testing.T) {
	if dir := os.Getenv("OUTBOX_CHILD"); dir != "" {
		openHook = func() {
			go panic("poisoned database")
			time.Sleep(time.Minute)
		}
		Open(dir, Options{}, nil)
		t.Fatal("the open did not crash")
	}
	dir := filledOutbox(t, 10)
	// Killed while opening, many times: the marker says so, no crash log.
	if err := os.WriteFile(dir+openingSuffix, []byte("7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := openAt(t, dir, Options{})
	if o.Len() != 10 || o.Stats().MovedAside != 0 {
		t.Fatalf("after kills while opening: Len %d, %+v", o.Len(), o.Stats())
	}
	o.Close()

	for i := 1; i <= maxCrashedOpens; i++ {
		out, err := child(t, "TestOpensThatCrashAreCounted", dir)
		if err == nil || !strings.Contains(string(out), "poisoned database") {
			t.Fatalf("child %d: %v\n%s", i, err, out)
		}
		// The marker counts the opens that did not finish (kills too).
		if b, _ := os.ReadFile(dir + openingSuffix); strings.TrimSpace(string(b)) != fmt.Sprint(i) {
			t.Fatalf("after crash %d: marker %q", i, b)
		}
	}
	var logs strings.Builder
	o, err := Open(dir, Options{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if st := o.Stats(); st.MovedAside != 1 || st.Records != 0 || st.LastSeq < 10 {
		t.Fatalf("after %d crashes: %+v", maxCrashedOpens, st)
	}
	if !strings.Contains(logs.String(), "poisoned database") {
		t.Errorf("the crash is not in the log:\n%s", logs.String())
	}
	for _, p := range []string{dir + openingSuffix, dir + crashSuffix, dir + crashesSuffix} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", p, err)
		}
	}
}
