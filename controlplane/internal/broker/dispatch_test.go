package broker

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/lograte"
)

func TestDispatcherKeepsPerTopicOrder(t *testing.T) {
	d := newDispatcher(slog.New(&capture{}), lograte.New(time.Minute, 16, nil))
	defer d.close()
	const topicsN, perTopic = 20, 200
	var mu sync.Mutex
	got := map[string][]int{}
	var wg sync.WaitGroup
	wg.Add(topicsN * perTopic)
	h := func(topic string, p []byte) {
		var n int
		fmt.Sscan(string(p), &n)
		mu.Lock()
		got[topic] = append(got[topic], n)
		mu.Unlock()
		wg.Done()
	}
	for i := range perTopic {
		for j := range topicsN {
			d.enqueue(delivery{filter: "#", topic: fmt.Sprint("t/", j), payload: fmt.Append(nil, i), h: h})
		}
	}
	wg.Wait()
	for topic, ns := range got {
		for i, n := range ns {
			if n != i {
				t.Fatalf("topic %s: message %d arrived as number %d", topic, n, i)
			}
		}
	}
}

func TestDispatcherDropsWhenStuck(t *testing.T) {
	logs := &capture{}
	d := newDispatcher(slog.New(logs), lograte.New(time.Minute, 16, nil))
	d.wait = 10 * time.Millisecond
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	block := func(string, []byte) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
	}
	// One topic, one shard: the worker blocks on the first message, the
	// queue fills, and the next enqueue gives up after d.wait.
	d.enqueue(delivery{filter: "f", topic: "x", h: block})
	recv(t, started, "the worker to take the first message")
	for range dispatchShardDepth {
		d.enqueue(delivery{filter: "f", topic: "x", h: block})
	}
	if d.dropped.Load() != 0 {
		t.Fatalf("dropped %d while the queue had room", d.dropped.Load())
	}
	d.enqueue(delivery{filter: "f", topic: "x", h: block})
	if d.dropped.Load() != 1 {
		t.Fatalf("dropped = %d; want 1", d.dropped.Load())
	}
	if logs.count("not keeping up", "") != 1 {
		t.Error("drop not logged")
	}
	close(release)
	d.close()
}
