// Package outbox is the agent's durable telemetry queue. Records are written
// to Badger before anything is sent, numbered with a sequence that persists
// across restarts and is never reused, and deleted only when the control
// plane acknowledges that it has stored them (an Ack naming their sequence
// range; a broker's PUBACK is not delivery). The queue is bounded: when a
// new record would pass Options.MaxBytes the oldest records are dropped,
// and a DropReport saying exactly what was dropped travels with a later
// batch, so nothing is lost silently.
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
	// ackChunk bounds the deletions of one Badger transaction in Ack, well
	// under the batch limit of the small memtables (see badgerOptions).
	ackChunk = 1000
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
	// fsync each). Without it a power cut can lose the last writes, though
	// never the database; flash wear usually argues for leaving it off.
	SyncWrites bool
}

// logEvery is how often a repeated event (the outbox dropping records, a
// publish failing while the link flaps) is logged at most, so that a device
// stuck offline does not fill its disk with the same line.
const logEvery = time.Minute

// Outbox is a durable, bounded queue of telemetry records. Its methods may
// be called from many goroutines.
type Outbox struct {
	db   *badger.DB
	log  *slog.Logger
	opts Options
	logs *lograte.Limiter // for dropping records when full

	mu      sync.Mutex
	closed  bool
	lastSeq uint64 // the last sequence assigned
	count   int
	bytes   int64
	// fresh collects drops not yet handed to a batch; sent is the report
	// handed to batches (TakeDropReport) until one of them is acked. Drops
	// after the hand-over go to fresh, so a report never changes once sent
	// and each dropped record is in exactly one report.
	fresh, sent *shoalv1.DropReport
	// sentFirst..sentLast is the batch sent was last handed to: an Ack
	// covering it clears sent. Zero until TakeDropReport (e.g. after a
	// restart the next batch takes it again).
	sentFirst, sentLast uint64
	// pendFirst..pendLast is what the last Pending call returned.
	pendFirst, pendLast uint64
}

// Open opens (or creates) the outbox in dir. A nil log discards.
func Open(dir string, opts Options, log *slog.Logger) (*Outbox, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	db, err := badger.Open(badgerOptions(dir, opts, log))
	if err != nil {
		return nil, fmt.Errorf("open outbox in %s: %w", dir, err)
	}
	o := &Outbox{db: db, log: log, opts: opts, logs: lograte.New(logEvery, 1, nil)}
	if err := o.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open outbox in %s: %w", dir, err)
	}
	log.Debug("outbox open", "dir", dir, "records", o.count, "bytes", o.bytes, "last_seq", o.lastSeq)
	return o, nil
}

// load rebuilds the in-memory counters from disk.
func (o *Outbox) load() error {
	return o.db.View(func(txn *badger.Txn) error {
		if v, err := get(txn, keySeq); err != nil {
			return err
		} else if len(v) == 8 {
			o.lastSeq = binary.BigEndian.Uint64(v)
		}
		for _, r := range []struct {
			key []byte
			dst **shoalv1.DropReport
		}{{keyFresh, &o.fresh}, {keySent, &o.sent}} {
			v, err := get(txn, r.key)
			if err != nil {
				return err
			}
			if v == nil {
				continue
			}
			d := &shoalv1.DropReport{}
			if err := proto.Unmarshal(v, d); err != nil {
				return fmt.Errorf("read drop report %s: %w", r.key, err)
			}
			*r.dst = d
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			o.count++
			o.bytes += item.ValueSize()
			// The counter is written with every record; this only matters
			// if it was lost.
			o.lastSeq = max(o.lastSeq, seqOf(item.Key()))
		}
		return nil
	})
}

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
	if err != nil {
		rec.Seq = oldSeq
		return 0, fmt.Errorf("outbox: encode record: %w", err)
	}
	size := int64(len(val))
	if limit := min(o.opts.MaxBytes, MaxRecordBytes); size > limit {
		rec.Seq = oldSeq
		return 0, fmt.Errorf("outbox: a record of %d bytes (model %q) is over the %d-byte limit", size, rec.GetModelName(), limit)
	}
	var (
		fresh   = o.fresh
		dropped int
		freed   int64
	)
	err = o.db.Update(func(txn *badger.Txn) error {
		if need := o.bytes + size - o.opts.MaxBytes; need > 0 {
			var err error
			fresh = cloneReport(o.fresh)
			dropped, freed, err = dropOldest(txn, need, &fresh)
			if err != nil {
				return err
			}
			if err := setProto(txn, keyFresh, fresh); err != nil {
				return err
			}
		}
		if err := txn.Set(recKey(seq), val); err != nil {
			return err
		}
		return txn.Set(keySeq, seqBytes(seq))
	})
	// Never hand out seq again, even if the commit's outcome is unclear.
	o.lastSeq = seq
	if err != nil {
		rec.Seq = oldSeq
		return 0, fmt.Errorf("outbox: append record %d: %w", seq, err)
	}
	o.count += 1 - dropped
	o.bytes += size - freed
	if dropped > 0 {
		o.fresh = fresh
		o.logs.Log(o.log, slog.LevelWarn, "", "outbox full: dropped the oldest telemetry records",
			"dropped", dropped, "unreported_drops", fresh.GetRecords(), "first_seq", fresh.GetFirstSeq(), "last_seq", fresh.GetLastSeq(), "max_bytes", o.opts.MaxBytes)
	}
	return seq, nil
}

// dropOldest deletes records from the head of the queue until at least
// need bytes are freed, adding each to *report.
func dropOldest(txn *badger.Txn, need int64, report **shoalv1.DropReport) (n int, freed int64, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
	defer it.Close()
	for it.Rewind(); it.Valid() && freed < need; it.Next() {
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

func cloneReport(r *shoalv1.DropReport) *shoalv1.DropReport {
	if r == nil {
		return nil
	}
	return proto.Clone(r).(*shoalv1.DropReport)
}

// Pending returns up to max queued records, oldest first (max ≤ 0 means
// DefaultBatchSize). A record that can no longer be decoded is deleted and
// reported as dropped.
func (o *Outbox) Pending(max int) ([]*shoalv1.TelemetryRecord, error) {
	if max <= 0 {
		max = DefaultBatchSize
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	recs := make([]*shoalv1.TelemetryRecord, 0, min(max, o.count))
	var corrupt [][]byte
	var corruptBytes int64
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix, PrefetchValues: true, PrefetchSize: min(max, 100)})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(recs) < max; it.Next() {
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
	if len(corrupt) > 0 {
		o.dropCorrupt(corrupt, corruptBytes)
	}
	o.pendFirst, o.pendLast = 0, 0
	if len(recs) > 0 {
		o.pendFirst, o.pendLast = recs[0].Seq, recs[len(recs)-1].Seq
	}
	return recs, nil
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
		o.log.Error("outbox: cannot delete undecodable records", "records", len(keys), "err", err)
		return
	}
	o.fresh = fresh
	o.count -= len(keys)
	o.bytes -= size
	o.log.Error("outbox: dropped undecodable records", "records", len(keys), "first_seq", seqOf(keys[0]))
}

// Ack deletes the records with sequence numbers first..last (inclusive):
// the control plane has stored them. Sequences not queued (already acked,
// dropped, never assigned) are ignored, so duplicate acks are harmless. The
// drop report from TakeDropReport is cleared by the Ack that removes the
// last record of the batch it was given to.
func (o *Outbox) Ack(first, last uint64) error {
	if first > last {
		return fmt.Errorf("outbox: ack of the empty range %d..%d", first, last)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	from := first
	for {
		var n int
		var freed int64
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
				freed += item.ValueSize()
				n++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("outbox: ack %d..%d: %w", first, last, err)
		}
		o.count -= n
		o.bytes -= freed
		if done {
			break
		}
		from = next
	}
	if o.sent != nil && o.sentLast != 0 && first <= o.sentLast && last >= o.sentFirst {
		// The ack overlaps the batch that carried the report: once none of
		// that batch is left (acked, whole or in parts), neither is the
		// report's reason to stay.
		if left, err := o.anyIn(o.sentFirst, o.sentLast); err != nil || left {
			return err
		}
		if err := o.db.Update(func(txn *badger.Txn) error { return txn.Delete(keySent) }); err != nil {
			// Kept: it goes out again with the next batch, which is better
			// than losing it.
			return fmt.Errorf("outbox: ack %d..%d: clear the drop report: %w", first, last, err)
		}
		o.sent, o.sentFirst, o.sentLast = nil, 0, 0
	}
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
	var found bool
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
		defer it.Close()
		it.Seek(recKey(first))
		found = it.Valid() && seqOf(it.Item().Key()) <= last
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
		if err := o.db.Update(func(txn *badger.Txn) error {
			if err := setProto(txn, keySent, sent); err != nil {
				return err
			}
			return txn.Delete(keyFresh)
		}); err != nil {
			// Carry on from memory: after a restart the same drops come
			// back as fresh and are reported then.
			o.log.Warn("outbox: cannot record the drop report as sent", "err", err)
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

// Close closes the database. Later calls return ErrClosed; a second Close
// returns nil.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("close outbox: %w", err)
	}
	return nil
}
