package outbox

import (
	"log/slog"
	"path/filepath"
)

// Badger writes its write-ahead log and its tables through memory-mapped
// files that it extends with ftruncate, so their blocks are allocated only
// when a page is first written. On a full file system that write is not an
// error Badger could return: the kernel sends SIGBUS, which the Go runtime
// turns into a fatal "unexpected fault address" crash (badger issues #1199,
// #1682, #1801; reproduced on tmpfs with v4.9.6, which also crashes reading
// its log back at Open while the file system is full). Nothing recovers
// from that inside the process, so the outbox keeps Badger away from a full
// file system instead: it writes only while at least MinFreeBytes are free
// (room), which covers what Badger allocates for writes already accepted
// (the rest of the memtable's log, the table it is flushed to, and the
// compactions that follow), and otherwise counts what it could not write
// and reports it as dropped once it can write again. The guard keeps
// Badger's own growth within the reserve; it cannot stop another process
// from taking the last bytes while Badger flushes or compacts, which still
// ends the agent (restarted, it finds no room and leaves Badger closed:
// no crash loop).

// space is what a file system has left for unprivileged writers.
type space struct {
	bytes  uint64 // free bytes
	inodes uint64 // free inodes; ^0 when the file system does not count them
}

// statfs, in space_linux.go (and space_other.go, where it cannot tell and
// the outbox writes as if there were room), returns the free space of the
// file system holding path. Tests replace it with Options.statSpace.

// minFreeInodes is the fewest free inodes the outbox writes with: Badger
// creates a file per memtable and per table.
const minFreeInodes = 64

// room reports whether Badger may write now, and tracks the transitions
// into and out of the no-space state (logged, rate-limited, and counted).
// Once out of room, writing resumes only with a quarter of MinFreeBytes
// more than that, so that a file system hovering at the limit does not
// flap. It asks the file system every time (a statfs, a few µs): an answer
// kept even for 100 ms let a write into a disk filled meanwhile
// (TestFullDiskRecoversInProcess). The caller holds o.mu (or is Open).
func (o *Outbox) room() bool {
	if o.opts.MinFreeBytes < 0 {
		return true
	}
	stat := o.opts.statSpace
	if stat == nil {
		stat = statfs
	}
	sp, ok := stat(o.dir)
	if !ok {
		// Not there yet (or moved aside): its parent is on the same file
		// system unless the outbox is a mount point of its own.
		if sp, ok = stat(filepath.Dir(o.dir)); !ok {
			return true
		}
	}
	need := uint64(o.opts.MinFreeBytes)
	if o.noSpace {
		need += need / 4
	}
	enough := sp.bytes >= need && sp.inodes >= minFreeInodes
	switch {
	case !enough && !o.noSpace:
		o.noSpace = true
		o.stats.NoSpaceEvents++
		o.logs.Log(o.log, slog.LevelError, "nospace", "the file system is nearly full: telemetry is not written to the outbox until space returns; what cannot be written is counted and reported as dropped then. Inference goes on.",
			"dir", o.dir, "free_bytes", sp.bytes, "free_inodes", sp.inodes, "min_free_bytes", o.opts.MinFreeBytes)
	case enough && o.noSpace:
		o.noSpace = false
		o.logs.Log(o.log, slog.LevelInfo, "space", "space is back: the outbox writes again",
			"dir", o.dir, "free_bytes", sp.bytes, "not_written", o.drops.held.records)
	}
	return enough
}
