package outbox

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Whether the outbox can write, and getting back to writing: reopening the
// database after a failed write or a failed open, then catching up with
// what was held back meanwhile (acks applied in memory, records not
// written, drop reports). Every function here runs under Outbox.mu (or in
// Open, before the outbox is shared).

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

// behind reports whether the outbox holds back anything catchUp has to
// write, or has no database to write to. The caller holds o.mu.
func (o *Outbox) behind() bool {
	return o.db == nil || o.broken || len(o.queue.acked) > 0 || o.drops.held.records > 0 || o.drops.dirty
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
	q, d := &o.queue, &o.drops
	if op.movedAside {
		// Its records are gone, and so are the acks of them; reports kept
		// in memory go into the new database.
		q.acked = nil
		d.dirty = d.fresh != nil || d.sent != nil
	}
	if st.empty {
		// Started empty (new, moved aside, deleted by hand): go on above
		// every sequence ever handed out.
		st.lastSeq = max(st.lastSeq, o.floor)
	}
	o.db, o.broken, o.loaded = op.db, false, true
	q.lastSeq = max(q.lastSeq, st.lastSeq)
	q.count, q.bytes, q.head = st.count, st.bytes, st.head
	if !d.dirty {
		d.fresh, d.sent = st.fresh, st.sent
	}
	return nil
}

// catchUp writes what was held back while the outbox could not write: the
// deletion of records acked meanwhile, then the records it could not write,
// as dropped under sequence numbers of their own, and the drop reports.
// The caller holds o.mu and has checked room.
func (o *Outbox) catchUp() error {
	q, d := &o.queue, &o.drops
	for len(q.acked) > 0 {
		r := q.acked[0]
		if _, _, err := o.deleteRange(r.first, r.last); err != nil {
			return o.failed(fmt.Sprintf("delete acked records %d..%d", r.first, r.last), err)
		}
		q.acked = q.acked[1:]
	}
	q.acked = nil
	if d.held.records == 0 && !d.dirty {
		return nil
	}
	fresh, seq, h := d.fresh, q.lastSeq, d.held
	if h.records > 0 {
		seq += h.records
		o.ensureFloor(seq)
		fresh = addDrops(cloneReport(d.fresh), q.lastSeq+1, seq, h.records, h.from, h.to)
	}
	err := o.db.Update(func(txn *badger.Txn) error {
		if err := putReport(txn, keyFresh, fresh); err != nil {
			return err
		}
		if err := putReport(txn, keySent, d.sent); err != nil {
			return err
		}
		return txn.Set(keySeq, seqBytes(seq))
	})
	// Never hand these sequences out again, whatever the outcome: at worst
	// the held records are reported twice, under different sequences.
	first := q.lastSeq + 1
	q.lastSeq = seq
	if err != nil {
		return o.failed("write the drop report", err)
	}
	o.wrote()
	if h.records > 0 {
		o.log.Warn("telemetry the outbox could not write is reported as dropped",
			"records", h.records, "first_seq", first, "last_seq", seq, "from", time.UnixMilli(h.from).UTC(), "to", time.UnixMilli(h.to).UTC())
	}
	d.fresh, d.held, d.dirty = fresh, held{}, false
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

// wrote counts a committed write, for the periodic sync (sync.go).
func (o *Outbox) wrote() { o.writes++ }
