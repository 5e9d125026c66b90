package outbox

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The ack path: the control plane has stored records, and the outbox
// deletes them — at once when it can write, or in memory (queue.acked)
// until it can. Every function here runs under Outbox.mu.

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
		o.queue.count -= n
		o.queue.bytes -= freed
		if err != nil {
			return o.failed(fmt.Sprintf("ack %d..%d", first, last), err)
		}
	case o.db == nil || o.broken:
		// An ack of what an earlier run sent: applied when loaded.
		o.queue.acked = o.queue.acked.add(first, last)
	default:
		if err := o.deferAck(first, last); err != nil {
			return err
		}
	}
	return o.ackedReport(first, last, canWrite)
}

// deleteRange deletes the queued records first..last in transactions of at
// most ackChunk deletions, and returns how many it deleted and their size.
// The caller holds o.mu.
func (o *Outbox) deleteRange(first, last uint64) (deleted int, freed int64, err error) {
	q := &o.queue
	from := max(first, q.head)
	defer func() {
		if first <= q.head && from > q.head {
			q.head = from // everything below was deleted
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
		for it.Seek(recKey(max(first, o.queue.head))); o.skipAcked(it); it.Next() {
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
	q := &o.queue
	q.acked = q.acked.add(first, last)
	q.count -= n
	q.bytes -= size
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
		it.Seek(recKey(max(first, o.queue.head)))
		found = o.skipAcked(it) && seqOf(it.Item().Key()) <= last
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("outbox: look up %d..%d: %w", first, last, err)
	}
	return found, nil
}

// skipAcked moves it past records acked but not yet deleted and reports
// whether it is still valid. The caller holds o.mu.
func (o *Outbox) skipAcked(it *badger.Iterator) bool {
	for it.Valid() {
		seq := seqOf(it.Item().Key())
		i := o.queue.acked.index(seq)
		if i < 0 {
			return true
		}
		it.Seek(recKey(o.queue.acked[i].last + 1))
	}
	return false
}
