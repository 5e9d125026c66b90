package outbox

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Reading the queue for the next batch, oldest first. It runs under
// Outbox.mu, and records in drops.pending what it returned, for
// TakeDropReport.

// Pending returns up to max queued records, oldest first (max ≤ 0 means
// DefaultBatchSize), each with its sequence in Seq. A record that can no
// longer be decoded is deleted and reported as dropped. While the database
// is not open it returns none.
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
	recs := make([]*shoalv1.TelemetryRecord, 0, min(max, o.queue.count))
	var corrupt [][]byte
	var corruptBytes int64
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix, PrefetchValues: true, PrefetchSize: min(max, 100)})
		defer it.Close()
		for it.Seek(recKey(o.queue.head)); o.skipAcked(it) && len(recs) < max; it.Next() {
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
	o.drops.pending = seqRange{}
	if len(recs) > 0 {
		o.drops.pending = seqRange{recs[0].Seq, recs[len(recs)-1].Seq}
	}
	return recs, nil
}

// dropCorrupt deletes undecodable records and reports them as dropped.
// The caller holds o.mu.
func (o *Outbox) dropCorrupt(keys [][]byte, size int64) {
	fresh := cloneReport(o.drops.fresh)
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
	o.drops.fresh = fresh
	o.queue.count -= len(keys)
	o.queue.bytes -= size
	o.stats.DroppedCorrupt += uint64(len(keys))
	o.log.Error("outbox: dropped undecodable records", "records", len(keys), "first_seq", seqOf(keys[0]))
}
