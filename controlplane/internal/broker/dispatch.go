package broker

import (
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalfleet/shoal/internal/lograte"
)

// dispatcher runs message handlers off paho's router goroutine. paho (with
// order kept) calls our callback on its one router goroutine, and while a
// callback blocks it reads nothing else, pings included, so the broker's
// keepalive ends the connection. The callback only queues the message; a
// fixed set of workers runs the handlers. Messages are sharded by topic, so
// those of one topic (one device's reported state, say) stay in order.
type dispatcher struct {
	log  *slog.Logger
	lim  *lograte.Limiter
	seed maphash.Seed
	// wait bounds how long a full shard may hold up paho's router before
	// the message is dropped (and counted): long enough to ride out a
	// burst, well inside paho's ping timeout.
	wait time.Duration

	shards  []chan delivery
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	dropped atomic.Uint64
}

type delivery struct {
	filter  string
	topic   string
	payload []byte
	h       func(topic string, payload []byte)
}

const (
	dispatchShards     = 8
	dispatchShardDepth = 256
	dispatchWait       = 5 * time.Second
)

func newDispatcher(log *slog.Logger, lim *lograte.Limiter) *dispatcher {
	d := &dispatcher{log: log, lim: lim, seed: maphash.MakeSeed(), wait: dispatchWait, done: make(chan struct{})}
	for range dispatchShards {
		ch := make(chan delivery, dispatchShardDepth)
		d.shards = append(d.shards, ch)
		d.wg.Add(1)
		go d.run(ch)
	}
	return d
}

// enqueue queues dl for its shard's worker, waiting at most d.wait for room.
func (d *dispatcher) enqueue(dl delivery) {
	ch := d.shards[maphash.String(d.seed, dl.topic)%uint64(len(d.shards))]
	select {
	case ch <- dl:
		return
	case <-d.done:
		return
	default:
	}
	t := time.NewTimer(d.wait)
	defer t.Stop()
	select {
	case ch <- dl:
	case <-d.done:
	case <-t.C:
		d.dropped.Add(1)
		d.lim.Log(d.log, slog.LevelWarn, "overload\x00"+dl.filter,
			"MQTT handlers are not keeping up; message dropped (telemetry is sent again until acked; retained state comes again on resubscribe)",
			"filter", dl.filter, "topic", dl.topic)
	}
}

func (d *dispatcher) run(ch chan delivery) {
	defer d.wg.Done()
	for {
		select {
		case dl := <-ch:
			deliver(d.log, d.lim, dl.filter, dl.h, dl.topic, dl.payload)
		case <-d.done:
			return
		}
	}
}

// close stops the workers once their current handler returns; messages
// still queued are dropped.
func (d *dispatcher) close() {
	d.once.Do(func() { close(d.done) })
	d.wg.Wait()
}
