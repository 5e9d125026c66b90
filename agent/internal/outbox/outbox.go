// Package outbox is the agent's durable telemetry queue. Records are written
// to Badger before anything is sent, numbered with a sequence that persists
// across restarts and is never reused, and deleted only when the control
// plane acknowledges that it has stored them (an Ack naming their sequence
// range; a broker's PUBACK is not delivery). The queue is bounded: when a
// new record would pass Options.MaxBytes the oldest records are dropped,
// and a DropReport saying exactly what was dropped travels with a later
// batch, so nothing is lost silently.
//
// The outbox never lets trouble with its disk stop the agent:
//   - While the file system is nearly full (Options.MinFreeBytes) it does
//     not write at all, since Badger turns a full disk into a fatal fault
//     (see space.go). Records it cannot write are counted and reported as
//     dropped, under sequence numbers of their own, once it can write again;
//     acks are applied in memory and written then.
//   - A database that cannot be opened or read is moved aside and an empty
//     one started (see open.go); a database whose writes fail is reopened.
//   - Without SyncWrites, Badger's log is synced every SyncInterval, which
//     bounds what a power cut can take (a crash of the process alone loses
//     nothing: the log is in the operating system's page cache).
//
// A Sender moves records from an Outbox to the control plane over a
// Publisher, one batch in flight at a time, resending until acknowledged.
package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/lograte"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const (
	// DefaultMaxBytes bounds the queue when Options.MaxBytes is 0.
	DefaultMaxBytes = 16 << 20
	// MaxRecordBytes is the largest encoded record Append accepts.
	MaxRecordBytes = 64 << 10
	// DefaultSyncInterval is Options.SyncInterval when 0.
	DefaultSyncInterval = time.Second
	// MinFreeSlack is what Options.MinFreeBytes adds to MaxBytes when 0.
	// The free space the outbox keeps must cover what Badger may still
	// allocate for writes it has accepted: the rest of the memtable's log,
	// the table it is flushed to, and the compactions that follow, which
	// write new tables, up to about the queue's size, before deleting the
	// old ones. Measured with a full 16 MiB queue under a burst of writes:
	// files at 30 MiB steady, 46.6 MiB at the peak (docs/RELIABILITY.md).
	MinFreeSlack = 8 << 20
	// ackChunk bounds the deletions of one Badger transaction in Ack, well
	// under the batch limit of the small memtables (see badgerOptions).
	ackChunk = 1000
	// maintainEvery is how often the outbox looks whether it can write
	// again (open its database, write what it held back) when nothing else
	// makes it look.
	maintainEvery = 5 * time.Second
	// reopenEvery spaces attempts to open a database that failed to open.
	reopenEvery = 10 * time.Second
)

// ErrClosed is returned by an Outbox after Close.
var ErrClosed = errors.New("outbox is closed")

// Keys: records under q/ by big-endian sequence (so iteration is oldest
// first), and a few metadata keys under m/.
var (
	recPrefix = []byte("q/")
	keySeq    = []byte("m/seq")        // last sequence assigned
	keyFresh  = []byte("m/drop/fresh") // drops not yet put in a batch
	keySent   = []byte("m/drop/sent")  // drops put in a batch not yet acked
)

func recKey(seq uint64) []byte {
	k := make([]byte, len(recPrefix)+8)
	copy(k, recPrefix)
	binary.BigEndian.PutUint64(k[len(recPrefix):], seq)
	return k
}

func seqOf(key []byte) uint64 { return binary.BigEndian.Uint64(key[len(recPrefix):]) }

// Options tune an Outbox.
type Options struct {
	// MaxBytes bounds the encoded size of the queued records (Badger's own
	// files add a few MiB). Appending past it drops the oldest records
	// first. 0 means DefaultMaxBytes.
	MaxBytes int64
	// SyncWrites makes every Append and Ack durable before it returns (an
	// fsync each). Without it a power cut can lose the writes of the last
	// SyncInterval, though never the database; flash wear usually argues
	// for leaving it off.
	SyncWrites bool
	// SyncInterval is how often, without SyncWrites, Badger's log is
	// synced to disk if anything was written since the last sync: it bounds
	// the telemetry a power cut can lose. 0 means DefaultSyncInterval; a
	// negative value turns it off, leaving it to the kernel's writeback
	// (dirty_expire_centisecs, typically 30 s).
	SyncInterval time.Duration
	// MinFreeBytes is the free space the file system holding the outbox
	// must have for the outbox to write to it. 0 means MaxBytes +
	// MinFreeSlack; a negative value turns the check off (Badger then
	// crashes the agent when the disk fills up).
	MinFreeBytes int64

	// statSpace replaces statfs in tests.
	statSpace func(path string) (space, bool)
}

// logEvery is how often a repeated event (the outbox dropping records, a
// publish failing while the link flaps) is logged at most, so that a device
// stuck offline does not fill its disk with the same line.
const logEvery = time.Minute

// Stats are an Outbox's counters since Open.
type Stats struct {
	Records int    // queued records
	Bytes   int64  // their encoded size
	LastSeq uint64 // the last sequence number assigned
	// DroppedFull counts the oldest records dropped to stay under MaxBytes.
	DroppedFull uint64
	// DroppedNoSpace counts the records Append could not write (file
	// system nearly full, database not open); HeldRecords of them are not
	// in a drop report yet: they will be once the outbox can write.
	DroppedNoSpace uint64
	HeldRecords    uint64
	// DroppedCorrupt counts records deleted because they no longer decode.
	DroppedCorrupt uint64
	// NoSpace is true while the outbox is not writing for lack of space;
	// NoSpaceEvents counts the times it stopped.
	NoSpace       bool
	NoSpaceEvents uint64
	// Open is false while the database is not open (no space at Open, a
	// failed reopen).
	Open bool
	// WriteErrors counts Badger writes that failed; each makes the outbox
	// reopen its database. Reopens counts the reopens that worked.
	WriteErrors, Reopens uint64
	// MovedAside counts databases moved aside because they could not be
	// opened.
	MovedAside uint64
	// Syncs and SyncErrors count the periodic syncs (SyncInterval).
	Syncs, SyncErrors uint64
	LastSync          time.Time
}

// seqRange is an inclusive range of sequence numbers.
type seqRange struct{ first, last uint64 }

// held counts the records Append could not write and the time they cover.
type held struct {
	records  uint64
	from, to int64
}

// Outbox is a durable, bounded queue of telemetry records. Its methods may
// be called from many goroutines.
type Outbox struct {
	dir  string
	log  *slog.Logger
	opts Options
	logs *lograte.Limiter // keyed by event

	stop, done chan struct{} // the maintenance loop
	lock       *os.File      // outbox.lock, held while open (see Open)

	mu sync.Mutex
	// db is nil until the database is open: Open found no room, or a
	// reopen failed.
	db       *badger.DB
	closed   bool
	loaded   bool      // lastSeq and the reports were read from disk
	broken   bool      // a write failed: reopen before the next one
	nextOpen time.Time // the next attempt to open after a failed one
	noSpace  bool      // see room
	lastSeq  uint64    // the last sequence assigned
	count    int
	bytes    int64
	// fresh collects drops not yet handed to a batch; sent is the report
	// handed to batches (TakeDropReport) until one of them is acked. Drops
	// after the hand-over go to fresh, so a report never changes once sent
	// and each dropped record is in exactly one report.
	fresh, sent *shoalv1.DropReport
	// metaDirty: fresh or sent changed while the outbox could not write.
	metaDirty bool
	// held counts records not written; they become a drop report once the
	// outbox can write again (catchUp).
	held held
	// acked are ranges acked while the outbox could not delete them: left
	// out of count, bytes and Pending, deleted by catchUp.
	acked []seqRange
	// sentFirst..sentLast is the batch sent was last handed to: an Ack
	// covering it clears sent. Zero until TakeDropReport (e.g. after a
	// restart the next batch takes it again).
	sentFirst, sentLast uint64
	// pendFirst..pendLast is what the last Pending call returned.
	pendFirst, pendLast uint64
	// head is at or below the oldest record on disk: reads of the queue
	// seek there rather than walk from the start through the tombstones
	// of every record deleted since the last compaction (which made each
	// drop and each batch cost time in proportion to the records dropped
	// or acked before it).
	head uint64
	// floor is the sequence floor on disk (see ensureFloor).
	floor      uint64
	floorRetry time.Time
	// writes counts committed writes; synced is its value at the last sync.
	writes, synced uint64
	stats          Stats
}

// Open opens (or creates) the outbox in dir. A nil log discards.
//
// A database that cannot be opened is moved aside and an empty one started
// (see openDB); another process holding dir is an error. When the file
// system is nearly full, Open succeeds without opening the database: the
// outbox opens it once there is room, and until then counts what it is
// asked to append.
func Open(dir string, opts Options, log *slog.Logger) (*Outbox, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = opts.MaxBytes + MinFreeSlack
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	o := &Outbox{dir: dir, log: log, opts: opts, logs: lograte.New(logEvery, 16, nil), floor: readCount(dir + seqSuffix)}
	// Badger locks its directory only once it opens it; the outbox may
	// check, move aside or replace that directory before, which another
	// agent using it must not see.
	lock, err := lockFile(dir + lockSuffix)
	switch {
	case errors.Is(err, errLocked):
		return nil, fmt.Errorf("open outbox in %s: %w", dir, err)
	case err != nil:
		// Most likely a full disk that cannot take the new file: Badger's
		// own lock still guards its files.
		log.Warn("cannot lock the outbox; going on without", "path", dir+lockSuffix, "err", err)
	}
	o.lock = lock
	if o.room() {
		if err := o.reopen(); err != nil && !errors.Is(err, errNoRoom) {
			o.unlock()
			return nil, err
		}
	}
	o.startLoop()
	log.Debug("outbox open", "dir", dir, "open", o.db != nil, "records", o.count, "bytes", o.bytes, "last_seq", o.lastSeq)
	return o, nil
}

// diskState is what load reads from a database.
type diskState struct {
	lastSeq     uint64
	head        uint64 // the oldest record, or lastSeq+1
	empty       bool   // no sequence counter and no records: a new database
	count       int
	bytes       int64
	fresh, sent *shoalv1.DropReport
	// lostReports names drop reports that did not decode: skipped, since
	// the records are worth more than moving the database aside for them.
	lostReports []string
}

// load reads the counters and drop reports from db. Records in skip (acked
// while they could not be deleted) are left out of count and bytes.
func load(db *badger.DB, skip []seqRange) (st diskState, err error) {
	err = db.View(func(txn *badger.Txn) error {
		v, err := get(txn, keySeq)
		if err != nil {
			return err
		}
		if len(v) == 8 {
			st.lastSeq = binary.BigEndian.Uint64(v)
		}
		st.empty = v == nil
		for _, r := range []struct {
			key []byte
			dst **shoalv1.DropReport
		}{{keyFresh, &st.fresh}, {keySent, &st.sent}} {
			v, err := get(txn, r.key)
			if err != nil {
				return err
			}
			if v == nil {
				continue
			}
			d := &shoalv1.DropReport{}
			if err := proto.Unmarshal(v, d); err != nil {
				st.lostReports = append(st.lostReports, fmt.Sprintf("%s: %v", r.key, err))
				continue
			}
			*r.dst = d
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			if st.head == 0 {
				st.head = seq
			}
			st.empty = false
			// The counter is written with every record; this only matters
			// if it was lost.
			st.lastSeq = max(st.lastSeq, seq)
			if inRanges(skip, seq) {
				continue
			}
			st.count++
			st.bytes += item.ValueSize()
		}
		if st.head == 0 {
			st.head = st.lastSeq + 1
		}
		return nil
	})
	return st, err
}

// reopen (re)opens the database and merges what it holds with what the
// outbox kept in memory while it could not write. The caller holds o.mu
// (or is Open) and has checked room.
func (o *Outbox) reopen() error {
	if o.db != nil {
		if err := o.db.Close(); err != nil {
			o.log.Warn("outbox: closing the database to reopen it", "err", err)
		}
		o.db = nil
	}
	op, err := o.openDB()
	if err != nil {
		o.nextOpen = time.Now().Add(reopenEvery)
		return err
	}
	st := op.st
	if o.loaded {
		o.stats.Reopens++
	}
	for _, r := range st.lostReports {
		o.log.Error("outbox: a drop report on disk does not decode; the drops it counted will not be reported", "report", r)
	}
	if op.movedAside {
		// Its records are gone, and so are the acks of them; reports kept
		// in memory go into the new database.
		o.acked = nil
		o.metaDirty = o.fresh != nil || o.sent != nil
	}
	if st.empty {
		// Started empty (new, moved aside, deleted by hand): go on above
		// every sequence ever handed out.
		st.lastSeq = max(st.lastSeq, o.floor)
	}
	o.db, o.broken, o.loaded = op.db, false, true
	o.lastSeq = max(o.lastSeq, st.lastSeq)
	o.count, o.bytes, o.head = st.count, st.bytes, st.head
	if !o.metaDirty {
		o.fresh, o.sent = st.fresh, st.sent
	}
	return nil
}

// writable reports whether the outbox can write now: there is room, the
// database is open, and what was held back while it could not write has
// been written (catchUp). The caller holds o.mu.
func (o *Outbox) writable() bool {
	if !o.room() {
		return false
	}
	if o.db == nil || o.broken {
		if time.Now().Before(o.nextOpen) {
			return false
		}
		if err := o.reopen(); err != nil {
			o.logs.Log(o.log, slog.LevelError, "reopen", "cannot open the telemetry outbox; will retry", "err", err, "retry_in", reopenEvery.String())
			return false
		}
	}
	return o.catchUp() == nil
}

// catchUp writes what was held back while the outbox could not write: the
// deletion of records acked meanwhile, then the records it could not write,
// as dropped under sequence numbers of their own, and the drop reports.
// The caller holds o.mu and has checked room.
func (o *Outbox) catchUp() error {
	for len(o.acked) > 0 {
		r := o.acked[0]
		if _, _, err := o.deleteRange(r.first, r.last); err != nil {
			return o.failed(fmt.Sprintf("delete acked records %d..%d", r.first, r.last), err)
		}
		o.acked = o.acked[1:]
	}
	o.acked = nil
	if o.held.records == 0 && !o.metaDirty {
		return nil
	}
	fresh, seq, h := o.fresh, o.lastSeq, o.held
	if h.records > 0 {
		seq += h.records
		o.ensureFloor(seq)
		fresh = addDrops(cloneReport(o.fresh), o.lastSeq+1, seq, h.records, h.from, h.to)
	}
	err := o.db.Update(func(txn *badger.Txn) error {
		if err := putReport(txn, keyFresh, fresh); err != nil {
			return err
		}
		if err := putReport(txn, keySent, o.sent); err != nil {
			return err
		}
		return txn.Set(keySeq, seqBytes(seq))
	})
	// Never hand these sequences out again, whatever the outcome: at worst
	// the held records are reported twice, under different sequences.
	first := o.lastSeq + 1
	o.lastSeq = seq
	if err != nil {
		return o.failed("write the drop report", err)
	}
	o.wrote()
	if h.records > 0 {
		o.log.Warn("telemetry the outbox could not write is reported as dropped",
			"records", h.records, "first_seq", first, "last_seq", seq, "from", time.UnixMilli(h.from).UTC(), "to", time.UnixMilli(h.to).UTC())
	}
	o.fresh, o.held, o.metaDirty = fresh, held{}, false
	return nil
}

// failed counts and logs a failed write and marks the database for a
// reopen. It returns err with what was being done.
func (o *Outbox) failed(what string, err error) error {
	o.stats.WriteErrors++
	o.broken = true
	o.logs.Log(o.log, slog.LevelError, "write", "outbox: a write failed; reopening the database", "op", what, "err", err)
	return fmt.Errorf("outbox: %s: %w", what, err)
}

func (o *Outbox) wrote() { o.writes++ }

func get(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return item.ValueCopy(nil)
}

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// Append stores rec, assigning it the next sequence number (also set in
// rec.Seq), and returns that number. When the queue would pass MaxBytes it
// first drops the oldest records and adds them to the drop report. A record
// larger than MaxBytes or MaxRecordBytes is refused.
//
// When the outbox cannot write — the file system is nearly full, or its
// database is not open — Append counts rec as dropped and returns 0 and no
// error: once the outbox can write again the records it counted go into a
// drop report, under sequence numbers of their own. Stats tells how many.
// An error means rec was not stored nor counted: try again later.
func (o *Outbox) Append(rec *shoalv1.TelemetryRecord) (uint64, error) {
	if rec == nil {
		return 0, errors.New("outbox: append of a nil record")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, ErrClosed
	}
	seq := o.lastSeq + 1
	oldSeq := rec.Seq
	rec.Seq = seq
	val, err := proto.Marshal(rec)
	rec.Seq = oldSeq
	if err != nil {
		return 0, fmt.Errorf("outbox: encode record: %w", err)
	}
	size := int64(len(val))
	if limit := min(o.opts.MaxBytes, MaxRecordBytes); size > limit {
		return 0, fmt.Errorf("outbox: a record of %d bytes (model %q) is over the %d-byte limit", size, rec.GetModelName(), limit)
	}
	if !o.writable() {
		o.hold(rec)
		return 0, nil
	}
	if seq != o.lastSeq+1 { // catchUp handed out sequences
		seq = o.lastSeq + 1
		rec.Seq = seq
		val, err = proto.Marshal(rec)
		rec.Seq = oldSeq
		if err != nil {
			return 0, fmt.Errorf("outbox: encode record: %w", err)
		}
		size = int64(len(val))
		if limit := min(o.opts.MaxBytes, MaxRecordBytes); size > limit {
			return 0, fmt.Errorf("outbox: a record of %d bytes (model %q) is over the %d-byte limit", size, rec.GetModelName(), limit)
		}
	}
	o.ensureFloor(seq)
	for {
		var (
			fresh   = o.fresh
			dropped int
			freed   int64
			stored  bool
		)
		err = o.db.Update(func(txn *badger.Txn) error {
			if need := o.bytes + size - o.opts.MaxBytes; need > 0 {
				var err error
				fresh = cloneReport(o.fresh)
				dropped, freed, err = dropOldest(txn, o.head, need, &fresh)
				if err != nil {
					return err
				}
				if err := setProto(txn, keyFresh, fresh); err != nil {
					return err
				}
				if freed < need {
					// More to drop than one transaction holds: the record
					// goes in with the next one.
					return nil
				}
			}
			stored = true
			if err := txn.Set(recKey(seq), val); err != nil {
				return err
			}
			return txn.Set(keySeq, seqBytes(seq))
		})
		if err != nil {
			// Never hand out seq again, even if the commit's outcome is
			// unclear.
			o.lastSeq = seq
			return 0, o.failed(fmt.Sprintf("append record %d", seq), err)
		}
		o.wrote()
		o.count -= dropped
		o.bytes -= freed
		if dropped > 0 {
			o.head = fresh.GetLastSeq() + 1
			o.fresh = fresh
			o.stats.DroppedFull += uint64(dropped)
			o.logs.Log(o.log, slog.LevelWarn, "full", "outbox full: dropped the oldest telemetry records",
				"dropped", dropped, "unreported_drops", fresh.GetRecords(), "first_seq", fresh.GetFirstSeq(), "last_seq", fresh.GetLastSeq(), "max_bytes", o.opts.MaxBytes)
		}
		if stored {
			break
		}
	}
	o.lastSeq = seq
	rec.Seq = seq
	o.count++
	o.bytes += size
	return seq, nil
}

// hold counts a record the outbox cannot write; catchUp reports it.
func (o *Outbox) hold(rec *shoalv1.TelemetryRecord) {
	h := &o.held
	h.records++
	if from := rec.GetWindowStartUnixMs(); from != 0 && (h.from == 0 || from < h.from) {
		h.from = from
	}
	h.to = max(h.to, rec.GetWindowEndUnixMs())
	o.stats.DroppedNoSpace++
	reason := "the file system is nearly full"
	if !o.noSpace {
		reason = "the outbox database is not open"
	}
	o.logs.Log(o.log, slog.LevelWarn, "held", "telemetry not written; it will be reported as dropped once the outbox can write",
		"reason", reason, "not_written", h.records)
}

// dropOldest deletes records from the head of the queue (no record is
// older than head) until at least need bytes are freed, or ackChunk records
// are, adding each to *report.
func dropOldest(txn *badger.Txn, head uint64, need int64, report **shoalv1.DropReport) (n int, freed int64, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
	defer it.Close()
	for it.Seek(recKey(head)); it.Valid() && freed < need && n < ackChunk; it.Next() {
		item := it.Item()
		key := item.KeyCopy(nil)
		var from, to int64
		if err := item.Value(func(v []byte) error {
			var r shoalv1.TelemetryRecord
			if proto.Unmarshal(v, &r) == nil {
				from, to = r.WindowStartUnixMs, r.WindowEndUnixMs
			}
			return nil
		}); err != nil {
			return 0, 0, fmt.Errorf("read record %d: %w", seqOf(key), err)
		}
		if err := txn.Delete(key); err != nil {
			return 0, 0, err
		}
		*report = addDrop(*report, seqOf(key), from, to)
		freed += item.ValueSize()
		n++
	}
	return n, freed, nil
}

func setProto(txn *badger.Txn, key []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return txn.Set(key, v)
}

// putReport stores r under key, or deletes key when r is nil.
func putReport(txn *badger.Txn, key []byte, r *shoalv1.DropReport) error {
	if r == nil {
		return txn.Delete(key)
	}
	return setProto(txn, key, r)
}

func cloneReport(r *shoalv1.DropReport) *shoalv1.DropReport {
	if r == nil {
		return nil
	}
	return proto.Clone(r).(*shoalv1.DropReport)
}

// Pending returns up to max queued records, oldest first (max ≤ 0 means
// DefaultBatchSize). A record that can no longer be decoded is deleted and
// reported as dropped. While the database is not open it returns none.
func (o *Outbox) Pending(max int) ([]*shoalv1.TelemetryRecord, error) {
	if max <= 0 {
		max = DefaultBatchSize
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	if o.db == nil || o.broken {
		o.writable()
	}
	if o.db == nil || o.broken {
		return nil, nil
	}
	recs := make([]*shoalv1.TelemetryRecord, 0, min(max, o.count))
	var corrupt [][]byte
	var corruptBytes int64
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix, PrefetchValues: true, PrefetchSize: min(max, 100)})
		defer it.Close()
		for it.Seek(recKey(o.head)); o.skipAcked(it) && len(recs) < max; it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error {
				r := &shoalv1.TelemetryRecord{}
				if err := proto.Unmarshal(v, r); err != nil {
					corrupt = append(corrupt, item.KeyCopy(nil))
					corruptBytes += int64(len(v))
					return nil
				}
				r.Seq = seqOf(item.Key())
				recs = append(recs, r)
				return nil
			}); err != nil {
				return fmt.Errorf("read record %d: %w", seqOf(item.Key()), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	if len(corrupt) > 0 && o.writable() {
		o.dropCorrupt(corrupt, corruptBytes)
	}
	o.pendFirst, o.pendLast = 0, 0
	if len(recs) > 0 {
		o.pendFirst, o.pendLast = recs[0].Seq, recs[len(recs)-1].Seq
	}
	return recs, nil
}

// skipAcked moves it past records acked but not yet deleted and reports
// whether it is still valid. The caller holds o.mu.
func (o *Outbox) skipAcked(it *badger.Iterator) bool {
	for it.Valid() {
		seq := seqOf(it.Item().Key())
		i := rangeIndex(o.acked, seq)
		if i < 0 {
			return true
		}
		it.Seek(recKey(o.acked[i].last + 1))
	}
	return false
}

// dropCorrupt deletes undecodable records and reports them as dropped.
// The caller holds o.mu.
func (o *Outbox) dropCorrupt(keys [][]byte, size int64) {
	fresh := cloneReport(o.fresh)
	err := o.db.Update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
			fresh = addDrop(fresh, seqOf(k), 0, 0)
		}
		return setProto(txn, keyFresh, fresh)
	})
	if err != nil {
		o.failed("delete undecodable records", err)
		return
	}
	o.wrote()
	o.fresh = fresh
	o.count -= len(keys)
	o.bytes -= size
	o.stats.DroppedCorrupt += uint64(len(keys))
	o.log.Error("outbox: dropped undecodable records", "records", len(keys), "first_seq", seqOf(keys[0]))
}

// Ack deletes the records with sequence numbers first..last (inclusive):
// the control plane has stored them. Sequences not queued (already acked,
// dropped, never assigned) are ignored, so duplicate acks are harmless. The
// drop report from TakeDropReport is cleared by the Ack that removes the
// last record of the batch it was given to. While the outbox cannot write,
// the records are taken out of the queue at once and deleted from disk
// once it can.
func (o *Outbox) Ack(first, last uint64) error {
	if first > last {
		return fmt.Errorf("outbox: ack of the empty range %d..%d", first, last)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	canWrite := o.writable()
	switch {
	case canWrite:
		n, freed, err := o.deleteRange(first, last)
		o.count -= n
		o.bytes -= freed
		if err != nil {
			return o.failed(fmt.Sprintf("ack %d..%d", first, last), err)
		}
	case o.db == nil || o.broken:
		// An ack of what an earlier run sent: applied when loaded.
		o.acked = addRange(o.acked, first, last)
	default:
		if err := o.deferAck(first, last); err != nil {
			return err
		}
	}
	if o.sent != nil && o.sentLast != 0 && first <= o.sentLast && last >= o.sentFirst {
		// The ack overlaps the batch that carried the report: once none of
		// that batch is left (acked, whole or in parts), neither is the
		// report's reason to stay.
		if left, err := o.anyIn(o.sentFirst, o.sentLast); err != nil || left {
			return err
		}
		if !canWrite {
			o.metaDirty = true
		} else if err := o.db.Update(func(txn *badger.Txn) error { return txn.Delete(keySent) }); err != nil {
			// Kept: it goes out again with the next batch, which is better
			// than losing it.
			return o.failed(fmt.Sprintf("ack %d..%d: clear the drop report", first, last), err)
		} else {
			o.wrote()
		}
		o.sent, o.sentFirst, o.sentLast = nil, 0, 0
	}
	return nil
}

// deleteRange deletes the queued records first..last in transactions of at
// most ackChunk deletions, and returns how many it deleted and their size.
// The caller holds o.mu.
func (o *Outbox) deleteRange(first, last uint64) (deleted int, freed int64, err error) {
	from := max(first, o.head)
	defer func() {
		if first <= o.head && from > o.head {
			o.head = from // everything below was deleted
		}
	}()
	for {
		var n int
		var size int64
		var next uint64
		done := true
		err := o.db.Update(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
			defer it.Close()
			for it.Seek(recKey(from)); it.Valid(); it.Next() {
				item := it.Item()
				seq := seqOf(item.Key())
				if seq > last {
					break
				}
				if n == ackChunk {
					done, next = false, seq
					break
				}
				if err := txn.Delete(item.KeyCopy(nil)); err != nil {
					return err
				}
				size += item.ValueSize()
				n++
			}
			return nil
		})
		if err != nil {
			return deleted, freed, err
		}
		o.wrote()
		deleted += n
		freed += size
		if done {
			from = max(from, last+1)
			return deleted, freed, nil
		}
		from = next
	}
}

// deferAck takes first..last out of the queue without writing: the records
// stay on disk, skipped, until catchUp deletes them. The caller holds o.mu.
func (o *Outbox) deferAck(first, last uint64) error {
	var n int
	var size int64
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
		defer it.Close()
		for it.Seek(recKey(max(first, o.head))); o.skipAcked(it); it.Next() {
			item := it.Item()
			if seqOf(item.Key()) > last {
				break
			}
			size += item.ValueSize()
			n++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: ack %d..%d: %w", first, last, err)
	}
	o.acked = addRange(o.acked, first, last)
	o.count -= n
	o.bytes -= size
	return nil
}

// AnyIn reports whether any record with a sequence in first..last is
// still queued.
func (o *Outbox) AnyIn(first, last uint64) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false, ErrClosed
	}
	return o.anyIn(first, last)
}

func (o *Outbox) anyIn(first, last uint64) (bool, error) {
	if o.db == nil {
		return false, nil
	}
	var found bool
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
		defer it.Close()
		it.Seek(recKey(max(first, o.head)))
		found = o.skipAcked(it) && seqOf(it.Item().Key()) <= last
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("outbox: look up %d..%d: %w", first, last, err)
	}
	return found, nil
}

// TakeDropReport returns the drop report to put in the batch built from the
// records of the last Pending call, or nil if nothing was dropped. The
// report stays outstanding, and is returned again for later batches, until
// Acks have removed every record of the last batch it was given to; drops
// after the first Take go into the next report.
func (o *Outbox) TakeDropReport() *shoalv1.DropReport {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	if o.sent == nil {
		if o.fresh == nil {
			return nil
		}
		sent := o.fresh
		if !o.writable() {
			o.metaDirty = true // written by catchUp
		} else if err := o.db.Update(func(txn *badger.Txn) error {
			if err := setProto(txn, keySent, sent); err != nil {
				return err
			}
			return txn.Delete(keyFresh)
		}); err != nil {
			// Carry on from memory; catchUp writes it after the reopen.
			o.failed("record the drop report as sent", err)
			o.metaDirty = true
		} else {
			o.wrote()
		}
		o.sent, o.fresh = sent, nil
	}
	o.sentFirst, o.sentLast = o.pendFirst, o.pendLast
	return cloneReport(o.sent)
}

// Len returns the number of queued records.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count
}

// Bytes returns the encoded size of the queued records.
func (o *Outbox) Bytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// LastSeq returns the last sequence number assigned (0 before the first).
func (o *Outbox) LastSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastSeq
}

// Options returns the options the outbox runs with, defaults filled in.
func (o *Outbox) Options() Options {
	opts := o.opts
	opts.statSpace = nil
	return opts
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.stats
	s.Records, s.Bytes, s.LastSeq = o.count, o.bytes, o.lastSeq
	s.HeldRecords, s.NoSpace, s.Open = o.held.records, o.noSpace, o.db != nil && !o.broken
	return s
}

// Close closes the database. Later calls return ErrClosed; a second Close
// returns nil. Records counted as not written and not yet in a drop report
// are lost with it, and logged as such.
//
// On a nearly full file system Close syncs Badger's log and leaves the
// database open until the process exits, as a crash would: closing would
// have Badger flush its memtable into a new table, a fatal fault on a full
// disk. The next Open replays the log.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	o.mu.Unlock()
	close(o.stop)
	<-o.done

	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.unlock()
	room := o.db != nil && o.room()
	if room && !o.broken {
		_ = o.catchUp()
	}
	if n := o.held.records; n > 0 {
		o.log.Error("telemetry the outbox could not write is lost unreported with this shutdown", "records", n,
			"from", time.UnixMilli(o.held.from).UTC(), "to", time.UnixMilli(o.held.to).UTC())
	}
	db := o.db
	o.db = nil
	switch {
	case db == nil:
		return nil
	case !room:
		o.log.Warn("the file system is nearly full: the outbox is left for the next start to replay rather than flushed now", "dir", o.dir)
		if err := db.Sync(); err != nil {
			return fmt.Errorf("close outbox: sync: %w", err)
		}
		return nil
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close outbox: %w", err)
	}
	return nil
}

func (o *Outbox) unlock() {
	if o.lock != nil {
		o.lock.Close()
		o.lock = nil
	}
}

// rangeIndex returns the index of the range in rs (sorted, disjoint) that
// holds seq, or -1.
func rangeIndex(rs []seqRange, seq uint64) int {
	for i, r := range rs {
		if seq < r.first {
			return -1
		}
		if seq <= r.last {
			return i
		}
	}
	return -1
}

func inRanges(rs []seqRange, seq uint64) bool { return rangeIndex(rs, seq) >= 0 }

// addRange adds first..last to rs (sorted, disjoint), merging ranges that
// touch or overlap.
func addRange(rs []seqRange, first, last uint64) []seqRange {
	out := make([]seqRange, 0, len(rs)+1)
	n := seqRange{first, last}
	placed := false
	for _, r := range rs {
		switch {
		case r.last+1 < n.first:
			out = append(out, r)
		case n.last+1 < r.first:
			if !placed {
				out = append(out, n)
				placed = true
			}
			out = append(out, r)
		default:
			n.first, n.last = min(n.first, r.first), max(n.last, r.last)
		}
	}
	if !placed {
		out = append(out, n)
	}
	return out
}
