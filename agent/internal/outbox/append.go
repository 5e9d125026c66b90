package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The append path: a record is encoded once, outside the lock; its
// sequence is known only under Outbox.mu, once the outbox has caught up
// with what it held back (which hands out sequences of its own), and goes
// in front of the encoded fields. The caller's record is never changed.

// seqField is TelemetryRecord.seq's field number. A record is stored
// encoded with its sequence first, as proto.Marshal lays it out (by field
// number), so a stored value decodes on its own; Pending takes the
// sequence from the key all the same.
var seqField = (&shoalv1.TelemetryRecord{}).ProtoReflect().Descriptor().Fields().ByName("seq").Number()

// maxSeqField is the most bytes the sequence field takes: the tag and a
// 10-byte varint.
var maxSeqField = protowire.SizeTag(seqField) + protowire.SizeVarint(math.MaxUint64)

// encodedRecord is a record's fields but its sequence, encoded, behind
// maxSeqField bytes of room where value writes the sequence.
type encodedRecord struct{ buf []byte }

func encodeRecord(rec *shoalv1.TelemetryRecord) (encodedRecord, error) {
	buf, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, maxSeqField), rec)
	if err != nil {
		return encodedRecord{}, err
	}
	if rec.GetSeq() != 0 {
		// The caller's sequence (a record handed back in): the outbox
		// assigns its own.
		fields, err := withoutField(buf[maxSeqField:], seqField)
		if err != nil {
			return encodedRecord{}, err
		}
		buf = buf[:maxSeqField+len(fields)]
	}
	return encodedRecord{buf}, nil
}

// maxSize is the record's stored size with the longest sequence: what the
// size limit is checked against, so that the check does not depend on the
// sequence the record will get (telemetry.Aggregator bounds its records
// the same way).
func (e encodedRecord) maxSize() int64 { return int64(len(e.buf)) }

// value returns the record encoded with seq as its sequence. It reuses the
// room in front of the fields, so only the last value returned is valid.
func (e encodedRecord) value(seq uint64) []byte {
	start := maxSeqField - protowire.SizeTag(seqField) - protowire.SizeVarint(seq)
	b := protowire.AppendTag(e.buf[start:start], seqField, protowire.VarintType)
	protowire.AppendVarint(b, seq)
	return e.buf[start:]
}

// withoutField removes the occurrences of field num from the encoded
// message b, in place, and returns what is left.
func withoutField(b []byte, num protowire.Number) ([]byte, error) {
	out := b[:0]
	for len(b) > 0 {
		n, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return nil, protowire.ParseError(tagLen)
		}
		valLen := protowire.ConsumeFieldValue(n, typ, b[tagLen:])
		if valLen < 0 {
			return nil, protowire.ParseError(valLen)
		}
		if n != num {
			out = append(out, b[:tagLen+valLen]...)
		}
		b = b[tagLen+valLen:]
	}
	return out, nil
}

// Append stores rec under the next sequence number and returns that
// number; rec itself is left as it was (Pending returns the stored record
// with its sequence in Seq). When the queue would pass MaxBytes it first
// drops the oldest records and adds them to the drop report. A record
// whose encoding, with the longest sequence field, is over MaxBytes or
// MaxRecordBytes is refused.
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
	e, err := encodeRecord(rec)
	if err != nil {
		return 0, fmt.Errorf("outbox: encode record (model %q): %w", rec.GetModelName(), err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, ErrClosed
	}
	if size, limit := e.maxSize(), min(o.opts.MaxBytes, MaxRecordBytes); size > limit {
		return 0, fmt.Errorf("outbox: a record of %d bytes (model %q) is over the %d-byte limit", size, rec.GetModelName(), limit)
	}
	if !o.writable() {
		o.hold(rec)
		return 0, nil
	}
	seq := o.queue.lastSeq + 1
	val := e.value(seq)
	o.ensureFloor(seq)
	if err := o.put(seq, val); err != nil {
		// Never hand out seq again, even if the commit's outcome is
		// unclear.
		o.queue.lastSeq = seq
		return 0, o.failed(fmt.Sprintf("append record %d", seq), err)
	}
	o.queue.lastSeq = seq
	o.queue.count++
	o.queue.bytes += int64(len(val))
	return seq, nil
}

// put writes val as record seq, first dropping as many of the oldest
// records as it takes to stay within MaxBytes, in as many transactions as
// that needs. The caller holds o.mu and has checked writable.
func (o *Outbox) put(seq uint64, val []byte) error {
	q, size := &o.queue, int64(len(val))
	for {
		var (
			fresh   = o.drops.fresh
			dropped int
			freed   int64
			stored  bool
		)
		err := o.db.Update(func(txn *badger.Txn) error {
			if need := q.bytes + size - o.opts.MaxBytes; need > 0 {
				var err error
				fresh = cloneReport(o.drops.fresh)
				dropped, freed, err = dropOldest(txn, q.head, need, &fresh)
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
			return err
		}
		o.wrote()
		q.count -= dropped
		q.bytes -= freed
		if dropped > 0 {
			q.head = fresh.GetLastSeq() + 1
			o.drops.fresh = fresh
			o.stats.DroppedFull += uint64(dropped)
			o.logs.Log(o.log, slog.LevelWarn, "full", "outbox full: dropped the oldest telemetry records",
				"dropped", dropped, "unreported_drops", fresh.GetRecords(), "first_seq", fresh.GetFirstSeq(), "last_seq", fresh.GetLastSeq(), "max_bytes", o.opts.MaxBytes)
		}
		if stored {
			return nil
		}
	}
}

// hold counts a record the outbox cannot write; catchUp reports it.
func (o *Outbox) hold(rec *shoalv1.TelemetryRecord) {
	h := &o.drops.held
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
