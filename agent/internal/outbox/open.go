package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Next to the outbox directory dir ({data-dir}/outbox) live:
//
//	outbox.lock                locked by the process that has it open
//	outbox.opening             present while an Open runs: the number of
//	                           opens in a row that did not finish
//	outbox.crash               while an Open runs, where the Go runtime
//	                           writes a crash (debug.SetCrashOutput)
//	outbox.crashes             how many opens in a row crashed the agent
//	outbox.seq                 the sequence floor: no sequence above it has
//	                           been handed out
//	outbox.corrupt-<UTC time>  databases that could not be opened, moved
//	                           aside (at most keepMovedAside of them)
const (
	lockSuffix    = ".lock"
	openingSuffix = ".opening"
	crashSuffix   = ".crash"
	crashesSuffix = ".crashes"
	seqSuffix     = ".seq"
	corruptInfix  = ".corrupt-"
	// keepMovedAside bounds the databases kept after moving them aside,
	// so that a device failing again and again cannot fill its disk.
	keepMovedAside = 2
	// maxCrashedOpens is how many opens in a row may crash the agent (a
	// panic in one of Badger's goroutines, a fatal fault) before the next
	// one moves the database aside rather than crash again. Opens cut
	// short by a kill or a power cut do not count: they leave no crash.
	maxCrashedOpens = 2
	// seqLease is how far the sequence floor runs ahead of the last
	// sequence handed out: the floor file is written once per seqLease
	// records.
	seqLease = 10000
)

// errLocked marks a database another process holds; it is never moved
// aside.
var errLocked = errors.New("another process is using this outbox (is a second agent running with the same --data-dir?)")

// errNoRoom is the cause while the file system is too full to open or
// write the database.
var errNoRoom = errors.New("the file system is nearly full")

// opened is a database opened by openDB and what was read from it.
type opened struct {
	db         *badger.DB
	st         diskState
	movedAside bool
}

// openDB opens the Badger database in o.dir and reads its state. A
// database that cannot be opened or read — a damaged MANIFEST or table, an
// unreadable directory, opens that crashed the agent twice in a row — is
// moved aside and an empty one is started in its place: an agent must come
// up and serve rather than crash-loop over its telemetry queue. A database
// held by another process is an error, and so is one that cannot be moved
// aside. The caller holds o.mu (or is Open) and has checked room.
func (o *Outbox) openDB() (opened, error) {
	crashed, crash := o.crashedOpens()
	var reason string
	if crashed >= maxCrashedOpens {
		reason = fmt.Sprintf("the last %d attempts to open it crashed the agent (%s)", crashed, crash)
	} else if fi, err := os.Stat(o.dir); err == nil && !fi.IsDir() {
		reason = "it is not a directory"
	} else if err := o.checkTables(); err != nil {
		reason = err.Error()
	}
	moved := false
	if reason != "" {
		if err := o.moveAside(reason); err != nil {
			return opened{}, err
		}
		moved = true
		os.Remove(o.dir + crashesSuffix)
	}
	for {
		if err := os.MkdirAll(o.dir, 0o700); err != nil {
			return opened{}, fmt.Errorf("open outbox: %w", err)
		}
		db, st, err := o.openWatched()
		if err == nil {
			return opened{db: db, st: st, movedAside: moved}, nil
		}
		if moved || errors.Is(err, errLocked) || errors.Is(err, errNoRoom) {
			return opened{}, fmt.Errorf("open outbox in %s: %w", o.dir, err)
		}
		if err := o.moveAside(err.Error()); err != nil {
			return opened{}, err
		}
		moved = true
	}
}

// crashedOpens returns how many opens in a row crashed the agent, and the
// first line of the last crash. An open that did not finish left its
// marker and its crash log, where the Go runtime printed the panic or
// fatal error that ended it; an empty crash log means it was killed or
// lost power, which says nothing about the database and does not count.
func (o *Outbox) crashedOpens() (uint64, string) {
	counter := o.dir + crashesSuffix
	if _, err := os.Stat(o.dir + openingSuffix); err != nil {
		os.Remove(counter)
		return 0, ""
	}
	b, _ := os.ReadFile(o.dir + crashSuffix)
	crash, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if crash == "" {
		os.Remove(counter)
		o.log.Warn("the last start stopped while it opened the telemetry outbox, without a crash (killed, or a power cut); opening it again", "dir", o.dir)
		return 0, ""
	}
	n := readCount(counter) + 1
	_ = writeFileSync(counter, []byte(strconv.FormatUint(n, 10)+"\n"))
	o.log.Error("the last start crashed while it opened the telemetry outbox", "dir", o.dir, "crash", crash, "in_a_row", n)
	return n, crash
}

// openHook, when set (tests), runs while an open is watched for crashes.
var openHook func()

// openWatched runs openAndLoad with the open marker and the crash log in
// place, and removes them (and the crash count) once it returns.
func (o *Outbox) openWatched() (*badger.DB, diskState, error) {
	marker, crashLog := o.dir+openingSuffix, o.dir+crashSuffix
	_ = writeFileSync(marker, []byte(strconv.FormatUint(readCount(marker)+1, 10)+"\n"))
	watching := false
	if f, err := os.Create(crashLog); err == nil {
		// Process-wide, for the few milliseconds of the open: nothing else
		// in the agent sets a crash output.
		watching = debug.SetCrashOutput(f, debug.CrashOptions{}) == nil
		f.Close()
	}
	if openHook != nil {
		openHook()
	}
	db, st, err := o.openAndLoad()
	if watching {
		debug.SetCrashOutput(nil, debug.CrashOptions{})
	}
	os.Remove(crashLog)
	os.Remove(marker)
	if err == nil {
		os.Remove(o.dir + crashesSuffix)
	}
	return db, st, err
}

// openAndLoad opens Badger and reads the outbox's state. Panics in this
// goroutine (Badger decoding a damaged file) become errors.
func (o *Outbox) openAndLoad() (db *badger.DB, st diskState, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("reading it panicked: %v", r)
		}
	}()
	db, err = badger.Open(badgerOptions(o.dir, o.opts, o.log))
	if err != nil {
		// Badger flattens the errors it wraps into text.
		switch msg := err.Error(); {
		case strings.Contains(msg, "Cannot acquire directory lock"):
			return nil, st, fmt.Errorf("%w: %v", errLocked, err)
		case strings.Contains(msg, "no space left on device"), strings.Contains(msg, "disk quota exceeded"):
			return nil, st, fmt.Errorf("%w: %v", errNoRoom, err)
		}
		return nil, st, err
	}
	if st, err = load(db, o.queue.acked); err != nil {
		db.Close()
		return nil, st, err
	}
	return db, st, nil
}

// checkTables reads the MANIFEST and verifies the checksums of every table
// it lists, in this goroutine: Badger opens tables in goroutines of its own,
// where a damaged table's index makes it panic beyond any recover (a
// truncated table did, in TestDamagedDatabaseIsMovedAside). It reads every
// table once at each start: a few tens of MiB at most.
func (o *Outbox) checkTables() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading its MANIFEST panicked: %v", r)
		}
	}()
	dir := o.dir
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new database
	}
	if err != nil {
		return err
	}
	defer f.Close()
	m, _, err := badger.ReplayManifestFile(f, 0, badgerOptions(dir, o.opts, o.log))
	if err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	ids := make([]uint64, 0, len(m.Tables))
	for id := range m.Tables {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if err := checkTable(table.NewFilename(id, dir), m.Tables[id].Compression); err != nil {
			return err
		}
	}
	return nil
}

func checkTable(path string, c options.CompressionType) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return fmt.Errorf("table %s: %w", filepath.Base(path), err)
	}
	defer mf.Close(-1)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("table %s is damaged: %v", filepath.Base(path), r)
		}
	}()
	// NoVerification here, VerifyChecksum below: OpenTable closes the file
	// itself when its own verification fails, and it must be closed once.
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.NoVerification, Compression: c, BlockSize: 4 << 10})
	if err != nil {
		return fmt.Errorf("table %s: %w", filepath.Base(path), err)
	}
	if err := t.VerifyChecksum(); err != nil {
		return fmt.Errorf("table %s: %w", filepath.Base(path), err)
	}
	return nil
}

// moveAside renames the outbox directory to outbox.corrupt-<time>, keeping
// the newest keepMovedAside such directories and deleting older ones.
func (o *Outbox) moveAside(reason string) error {
	to := o.dir + corruptInfix + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(o.dir, to); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the telemetry outbox %s cannot be opened (%s), nor moved aside: %w; move or delete it by hand", o.dir, reason, err)
	}
	parent := filepath.Dir(o.dir)
	_ = syncDir(parent)
	o.stats.MovedAside++
	o.log.Error("the telemetry outbox cannot be opened; moved it aside and started an empty one: the telemetry queued in it will not be sent",
		"dir", o.dir, "moved_to", to, "reason", reason)
	old, _ := filepath.Glob(o.dir + corruptInfix + "*")
	sort.Strings(old) // by time: the suffix sorts like the time it names
	for len(old) > keepMovedAside {
		if err := os.RemoveAll(old[0]); err != nil {
			o.log.Warn("cannot delete an old moved-aside outbox", "dir", old[0], "err", err)
		} else {
			o.log.Info("deleted an old moved-aside outbox", "dir", old[0], "keep", keepMovedAside)
		}
		old = old[1:]
	}
	return nil
}

// readCount returns the number in the file at path (0 if it is missing or
// unreadable).
func readCount(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// writeFileSync replaces the file at path with b durably: a temporary file,
// fsync, rename, fsync of the directory.
func writeFileSync(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ensureFloor makes sure the sequence floor on disk is at least seq before
// seq is handed out, so that an outbox started empty (moved aside, or
// deleted by hand) never reuses a sequence number the control plane may
// have stored: it de-duplicates by sequence and would drop the new records.
// It writes at most once per seqLease sequences; a failure is logged and
// retried with a later record. The caller holds o.mu.
func (o *Outbox) ensureFloor(seq uint64) {
	if seq <= o.floor {
		return
	}
	if now := time.Now(); now.Before(o.floorRetry) {
		return
	}
	next := seq - 1 + seqLease
	if err := writeFileSync(o.dir+seqSuffix, []byte(strconv.FormatUint(next, 10)+"\n")); err != nil {
		o.floorRetry = time.Now().Add(logEvery)
		o.logs.Log(o.log, slog.LevelWarn, "floor", "cannot record the telemetry sequence floor; if the outbox is lost, the control plane may take new records for ones it has", "err", err)
		return
	}
	o.floor = next
}
