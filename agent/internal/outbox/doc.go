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
//
// # Inside
//
// One mutex, Outbox.mu, guards all of an Outbox's state, and every Badger
// write is made under it: the outbox is its database's only writer, which
// keeps its counters equal to what is on disk and lets Badger skip
// conflict detection. The state is grouped by job:
//
//   - the database and its health, in Outbox itself: open or not, to be
//     reopened after a failed write (writable.go), room on the file system
//     (space.go), the periodic sync (sync.go), the sequence floor (open.go);
//   - queue: what is in the database — the last sequence, the count and
//     size of the records, the oldest one, and acks applied in memory only
//     (a seqRanges, ranges.go). Append (append.go) adds to it, Ack (ack.go)
//     and Pending (pending.go, for undecodable records) take from it;
//   - drops: the drop reports, fresh and sent, and the records held back
//     while the outbox could not write (drop.go).
//
// store.go is the layout in Badger; open.go opens a database, moving a bad
// one aside. A Sender has a mutex of its own and calls the Outbox only
// through its methods.
package outbox
