package outbox

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// badgerOptions tunes Badger for a small device holding a small queue.
// Badger's defaults suit a server: 5 memtables of 64 MiB, a 256 MiB block
// cache and 1 GiB value-log files, hundreds of MB before the first record.
// These keep the Go heap near 4 MiB with a full queue once a burst of
// writes has settled, and the files at about twice MaxBytes (three times
// at the peak of a compaction; see MinFreeSlack).
func badgerOptions(dir string, opts Options, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		// Each memtable is an arena allocated in full up front (plus its
		// write-ahead file), and the table built from it is buffered in
		// full when flushed. 1 MiB holds ~15,000 telemetry records, far
		// more than arrive between flushes; 4 MiB doubled the resident
		// heap for nothing. It bounds a transaction (15% of it, ~1,600
		// entries: see ackChunk).
		WithMemTableSize(1 << 20).
		// One memtable being written and one being flushed; a third would
		// only add 4 MiB to absorb bursts a device does not have.
		WithNumMemtables(2).
		// Values under this size live in the LSM tree with their keys, so
		// deleting an acked record frees its space by compaction alone and
		// no value-log GC is needed. Records are ~100 bytes and Append
		// refuses any over MaxRecordBytes, so every value lives there. It
		// must stay under 15% of the memtable (Badger's batch limit).
		WithValueThreshold(MaxRecordBytes).
		// The value log then holds nothing; keep its files (mmapped at
		// twice this size) at Badger's minimum.
		WithValueLogFileSize(1 << 20).
		// Small SSTables and level targets: compaction works on a few MiB
		// at a time instead of tens.
		WithBaseTableSize(1 << 20).
		WithBaseLevelSize(4 << 20).
		// Compact L0 early (2 tables) so reads of the queue head touch few
		// tables; stall writers only well past that.
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		// Badger's minimum: one compactor dedicated to L0, one for the rest.
		WithNumCompactors(2).
		// Caches: without compression or encryption Badger reads blocks
		// straight from the mapped tables, and a block cache only adds
		// overhead (Badger's own advice); a bounded index cache keeps
		// table indexes from growing with the queue.
		WithBlockCacheSize(0).
		WithIndexCacheSize(1 << 20).
		// Records are small protobufs of varints; compression saves little
		// and costs device CPU.
		WithCompression(options.None).
		// Stream-framework workers; the outbox never streams.
		WithNumGoroutines(1).
		// One writer at a time (the outbox's mutex): conflict detection
		// would only cost memory.
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumVersionsToKeep(1).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(badgerLogger{log})
}

// badgerLogger sends Badger's logs to slog. Badger reports routine work
// (replaying, compacting) at INFO; that is debug detail for an agent.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.log.Error(msg(f, a)) }
func (l badgerLogger) Warningf(f string, a ...any) { l.log.Warn(msg(f, a)) }
func (l badgerLogger) Infof(f string, a ...any)    { l.log.Debug(msg(f, a)) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.log.Debug(msg(f, a)) }

func msg(f string, a []any) string {
	return "badger: " + strings.TrimSpace(fmt.Sprintf(f, a...))
}
