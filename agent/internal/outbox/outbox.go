package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/shoalfleet/shoal/internal/lograte"
)

const (
	// DefaultMaxBytes bounds the queue when Options.MaxBytes is 0.
	DefaultMaxBytes = 16 << 20
	// MaxRecordBytes is the largest encoded record Append accepts, with
	// the longest sequence field (telemetry.Aggregator bounds its records
	// the same way).
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
	// ticks replaces the maintenance loop's ticker in tests, which then
	// drive the loop tick by tick (see tick).
	ticks <-chan tick
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

// Outbox is a durable, bounded queue of telemetry records. Its methods may
// be called from many goroutines. Everything below mu is guarded by it (see
// the package doc for how the state is grouped).
type Outbox struct {
	// Set by Open, then only read.
	dir  string
	log  *slog.Logger
	opts Options
	logs *lograte.Limiter // keyed by event; safe on its own

	stop, done chan struct{} // the maintenance loop (sync.go)

	mu     sync.Mutex
	lock   *os.File // outbox.lock, held while open (see Open)
	closed bool

	// The database and its health.
	//
	// db is nil until the database is open: Open found no room, or a
	// reopen failed.
	db       *badger.DB
	loaded   bool      // queue.lastSeq and the reports were read from disk
	broken   bool      // a write failed: reopen before the next one
	nextOpen time.Time // the next attempt to open after a failed one
	noSpace  bool      // see room
	// floor is the sequence floor on disk (see ensureFloor).
	floor      uint64
	floorRetry time.Time
	// writes counts committed writes; synced is its value at the last sync.
	writes, synced uint64

	queue queue
	drops drops
	stats Stats
}

// queue is the outbox's account of the records in its database, kept in
// memory so that Len, Bytes and the size bound cost no reads. Guarded by
// Outbox.mu. Append adds to it; Ack, dropping the oldest and dropping
// undecodable records take from it; reopen reloads it from disk.
type queue struct {
	lastSeq uint64 // the last sequence assigned
	count   int    // queued records, less those in acked
	bytes   int64  // their encoded size
	// head is at or below the oldest record on disk: reads of the queue
	// seek there rather than walk from the start through the tombstones
	// of every record deleted since the last compaction (which made each
	// drop and each batch cost time in proportion to the records dropped
	// or acked before it).
	head uint64
	// acked are ranges acked while the outbox could not delete them: left
	// out of count, bytes and Pending, deleted by catchUp.
	acked seqRanges
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
	log.Debug("outbox open", "dir", dir, "open", o.db != nil, "records", o.queue.count, "bytes", o.queue.bytes, "last_seq", o.queue.lastSeq)
	return o, nil
}

// Len returns the number of queued records.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queue.count
}

// Bytes returns the encoded size of the queued records.
func (o *Outbox) Bytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queue.bytes
}

// LastSeq returns the last sequence number assigned (0 before the first).
func (o *Outbox) LastSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queue.lastSeq
}

// Options returns the options the outbox runs with, defaults filled in.
func (o *Outbox) Options() Options {
	opts := o.opts
	opts.statSpace, opts.ticks = nil, nil
	return opts
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.stats
	s.Records, s.Bytes, s.LastSeq = o.queue.count, o.queue.bytes, o.queue.lastSeq
	s.HeldRecords, s.NoSpace, s.Open = o.drops.held.records, o.noSpace, o.db != nil && !o.broken
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
	if h := o.drops.held; h.records > 0 {
		o.log.Error("telemetry the outbox could not write is lost unreported with this shutdown", "records", h.records,
			"from", time.UnixMilli(h.from).UTC(), "to", time.UnixMilli(h.to).UTC())
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
