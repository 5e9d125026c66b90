package outbox

import (
	"log/slog"
	"time"
)

// Durability without SyncWrites: Badger writes its log through a shared
// memory mapping, so a record is in the operating system's page cache when
// Append returns. A crash of the agent loses nothing then (the kernel still
// writes those pages back); a power cut loses what the kernel has not
// written back yet, which is up to dirty_expire_centisecs (30 s by default)
// plus a writeback period (dirty_writeback_centisecs, 5 s). The
// maintenance loop syncs the log every SyncInterval when something was
// written, which bounds that loss to about SyncInterval at the cost of one
// fsync per interval instead of one per write. Measured on the development
// VM (ext4, kernel defaults), from Append to the log's page being clean:
// 30.7–32.1 s with no sync, 0.8–1.0 s with a sync every second, at once
// with SyncWrites; TestKillLosesNothing shows the crash case. The sync
// holds the outbox's lock, so an Append may wait for one fsync.

// startLoop starts the maintenance loop: periodic syncs, and, while the
// outbox cannot write, looking whether it can again.
func (o *Outbox) startLoop() {
	every := maintainEvery
	if o.syncs() {
		every = min(every, o.opts.SyncInterval)
	}
	o.stop, o.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(o.done)
		var ticker <-chan time.Time
		if o.opts.ticks == nil {
			t := time.NewTicker(every)
			defer t.Stop()
			ticker = t.C
		}
		for {
			select {
			case <-o.stop:
				return
			case now := <-ticker:
				o.maintain(now, every)
			case tk := <-o.opts.ticks: // tests only: nil otherwise
				o.maintain(tk.at, every)
				close(tk.done)
			}
		}
	}()
}

// tick is one tick of the maintenance loop driven by a test
// (Options.ticks): the loop runs at the time at, then closes done.
type tick struct {
	at   time.Time
	done chan<- struct{}
}

// syncs reports whether the loop syncs Badger's log.
func (o *Outbox) syncs() bool { return !o.opts.SyncWrites && o.opts.SyncInterval > 0 }

// maintain runs one tick of the loop, at now. The loop runs every every.
func (o *Outbox) maintain(now time.Time, every time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	if o.behind() {
		o.writable()
	} else {
		o.room() // keeps Stats and the log current while nothing is written
	}
	// The ticker runs every SyncInterval unless that is longer than
	// maintainEvery; then only every so many ticks sync.
	if o.syncs() && o.db != nil && !o.broken && o.writes != o.synced && now.Sub(o.stats.LastSync) >= o.opts.SyncInterval-every/2 {
		o.sync(now)
	}
}

// sync makes everything written so far durable; now is the loop's tick.
// The caller holds o.mu.
func (o *Outbox) sync(now time.Time) {
	writes := o.writes
	if err := o.db.Sync(); err != nil {
		o.stats.SyncErrors++
		o.logs.Log(o.log, slog.LevelError, "sync", "outbox: cannot sync telemetry to disk; will retry", "err", err)
		return
	}
	o.synced = writes
	o.stats.Syncs++
	o.stats.LastSync = now
}
