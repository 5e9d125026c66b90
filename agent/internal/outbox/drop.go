package outbox

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// drops is what the outbox dropped, on its way to the control plane in
// drop reports. Guarded by Outbox.mu.
//
// fresh collects drops not yet handed to a batch; sent is the report
// handed to batches (TakeDropReport) until one of them is acked. Drops
// after the hand-over go to fresh, so a report never changes once sent and
// each dropped record is in exactly one report. Both are on disk (keyFresh,
// keySent) unless dirty says otherwise.
type drops struct {
	fresh, sent *shoalv1.DropReport
	// dirty: fresh or sent changed while the outbox could not write;
	// catchUp writes them.
	dirty bool
	// held counts records not written; they become a drop report once the
	// outbox can write again (catchUp).
	held held
	// sentBatch is the batch sent was last handed to: an Ack covering it
	// clears sent. Zero until TakeDropReport (e.g. after a restart the
	// next batch takes it again).
	sentBatch seqRange
	// pending is what the last Pending call returned: the batch the next
	// TakeDropReport is for.
	pending seqRange
}

// held counts the records Append could not write and the time they cover.
type held struct {
	records  uint64
	from, to int64
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
	d := &o.drops
	if d.sent == nil {
		if d.fresh == nil {
			return nil
		}
		sent := d.fresh
		if !o.writable() {
			d.dirty = true // written by catchUp
		} else if err := o.db.Update(func(txn *badger.Txn) error {
			if err := setProto(txn, keySent, sent); err != nil {
				return err
			}
			return txn.Delete(keyFresh)
		}); err != nil {
			// Carry on from memory; catchUp writes it after the reopen.
			o.failed("record the drop report as sent", err)
			d.dirty = true
		} else {
			o.wrote()
		}
		d.sent, d.fresh = sent, nil
	}
	d.sentBatch = d.pending
	return cloneReport(d.sent)
}

// ackedReport clears the sent report once an ack of first..last has left
// none of the batch that carried it: acked, whole or in parts, it is no
// reason for the report to stay. canWrite is what Ack found. The caller
// holds o.mu.
func (o *Outbox) ackedReport(first, last uint64, canWrite bool) error {
	d := &o.drops
	if d.sent == nil || d.sentBatch.last == 0 || !d.sentBatch.overlaps(first, last) {
		return nil
	}
	if left, err := o.anyIn(d.sentBatch.first, d.sentBatch.last); err != nil || left {
		return err
	}
	if !canWrite {
		d.dirty = true
	} else if err := o.db.Update(func(txn *badger.Txn) error { return txn.Delete(keySent) }); err != nil {
		// Kept: it goes out again with the next batch, which is better
		// than losing it.
		return o.failed(fmt.Sprintf("ack %d..%d: clear the drop report", first, last), err)
	} else {
		o.wrote()
	}
	d.sent, d.sentBatch = nil, seqRange{}
	return nil
}

func cloneReport(r *shoalv1.DropReport) *shoalv1.DropReport {
	if r == nil {
		return nil
	}
	return proto.Clone(r).(*shoalv1.DropReport)
}

// addDrop adds one dropped record to report r (nil starts a new report) and
// returns it. Window times are skipped when zero (a record that could not
// be decoded has none).
func addDrop(r *shoalv1.DropReport, seq uint64, fromMs, toMs int64) *shoalv1.DropReport {
	if r == nil {
		r = &shoalv1.DropReport{}
	}
	if r.Records == 0 || seq < r.FirstSeq {
		r.FirstSeq = seq
	}
	if seq > r.LastSeq {
		r.LastSeq = seq
	}
	r.Records++
	if fromMs != 0 && (r.FromUnixMs == 0 || fromMs < r.FromUnixMs) {
		r.FromUnixMs = fromMs
	}
	if toMs > r.ToUnixMs {
		r.ToUnixMs = toMs
	}
	return r
}

// addDrops adds n dropped records with the sequences first..last (n of
// them; the range may hold others) and the window first from..to to report
// r (nil starts a new report) and returns it.
func addDrops(r *shoalv1.DropReport, first, last, n uint64, fromMs, toMs int64) *shoalv1.DropReport {
	if r == nil {
		r = &shoalv1.DropReport{}
	}
	if r.Records == 0 || first < r.FirstSeq {
		r.FirstSeq = first
	}
	r.LastSeq = max(r.LastSeq, last)
	r.Records += n
	if fromMs != 0 && (r.FromUnixMs == 0 || fromMs < r.FromUnixMs) {
		r.FromUnixMs = fromMs
	}
	r.ToUnixMs = max(r.ToUnixMs, toMs)
	return r
}
