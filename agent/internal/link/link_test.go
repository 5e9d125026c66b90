package link

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/topics"
)

const dev = "dev-1"

var scheme = topics.New("")

// harness runs a Link against a broker address and records what its
// callbacks see.
type harness struct {
	l       *Link
	desired chan string
	acks    chan string
	conn    chan bool
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startLink(t *testing.T, brokerAddr string, tweak func(*Config)) *harness {
	t.Helper()
	cfg := Config{
		BrokerURL:      "tcp://" + brokerAddr,
		DeviceID:       dev,
		Username:       dev,
		Password:       "secret",
		Topics:         scheme,
		AgentVersion:   "test",
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
		PublishTimeout: 5 * time.Second,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	l, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{l: l, desired: make(chan string, 16), acks: make(chan string, 16), conn: make(chan bool, 16)}
	l.OnDesired(func(p []byte) { h.desired <- string(p) })
	l.OnAck(func(p []byte) { h.acks <- string(p) })
	l.OnConnectionChange(func(c bool) { h.conn <- c })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		l.Close()
	})
	return h
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		var zero T
		return zero
	}
}

func (h *harness) waitConn(t *testing.T, want bool) {
	t.Helper()
	for {
		if got := recv(t, h.conn, "connection change"); got == want {
			return
		}
	}
}

func TestConnectReceivesRetainedDesiredAndPublishes(t *testing.T) {
	addr := freeAddr(t)
	b := startBroker(t, addr)
	desiredTopic := scheme.Device(dev, topics.Desired)
	if err := b.Publish(desiredTopic, []byte("generation-1"), true, 1); err != nil {
		t.Fatal(err)
	}
	status := b.subscribe(t, scheme.Device(dev, topics.Status))
	telemetry := b.subscribe(t, scheme.Device(dev, topics.Telemetry))

	h := startLink(t, addr, nil)
	h.waitConn(t, true)
	if got := recv(t, h.desired, "retained desired state"); got != "generation-1" {
		t.Errorf("desired = %q; want the retained generation-1", got)
	}
	st := waitStatus(t, status, true)
	if st.DeviceId != dev || st.AgentVersion != "test" || st.SchemaVersion != 1 || st.AtUnixMs == 0 {
		t.Errorf("online status = %v", st)
	}
	if p, ok := b.retained(scheme.Device(dev, topics.Status)); !ok || !decodeStatus(t, p).Online {
		t.Errorf("online status is not retained")
	}

	// Live messages on both subscriptions reach the callbacks.
	if err := b.Publish(scheme.Device(dev, topics.Ack), []byte("ack-1"), false, 1); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, h.acks, "ack"); got != "ack-1" {
		t.Errorf("ack = %q", got)
	}
	if err := b.Publish(desiredTopic, []byte("generation-2"), true, 1); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, h.desired, "desired state"); got != "generation-2" {
		t.Errorf("desired = %q; want generation-2", got)
	}

	if err := h.l.Publish(scheme.Device(dev, topics.Telemetry), []byte("batch"), false); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if pk := recv(t, telemetry, "telemetry"); string(pk.Payload) != "batch" {
		t.Errorf("telemetry payload = %q", pk.Payload)
	}
}

func TestStartsOfflineAndConnectsWhenBrokerAppears(t *testing.T) {
	addr := freeAddr(t)
	h := startLink(t, addr, nil)

	err := h.l.Publish(scheme.Device(dev, topics.Telemetry), []byte("x"), false)
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("Publish while the broker is down = %v; want ErrOffline", err)
	}
	if h.l.Connected() {
		t.Fatal("Connected() = true with no broker")
	}

	b := startBroker(t, addr)
	status := b.subscribe(t, scheme.Device(dev, topics.Status))
	h.waitConn(t, true)
	waitStatus(t, status, true)
	if err := h.l.Publish(scheme.Device(dev, topics.Telemetry), []byte("x"), false); err != nil {
		t.Fatalf("Publish once connected: %v", err)
	}
}

func TestReconnectAfterBrokerRestart(t *testing.T) {
	addr := freeAddr(t)
	b1 := startBroker(t, addr)
	h := startLink(t, addr, nil)
	h.waitConn(t, true)

	b1.stop()
	h.waitConn(t, false)
	if err := h.l.Publish(scheme.Device(dev, topics.Telemetry), []byte("x"), false); !errors.Is(err, ErrOffline) {
		t.Errorf("Publish while reconnecting = %v; want ErrOffline", err)
	}

	// A fresh broker on the same port knows nothing of the session: the
	// link must subscribe again and republish its online status.
	b2 := startBroker(t, addr)
	status := b2.subscribe(t, scheme.Device(dev, topics.Status))
	h.waitConn(t, true)
	waitStatus(t, status, true)
	if p, ok := b2.retained(scheme.Device(dev, topics.Status)); !ok || !decodeStatus(t, p).Online {
		t.Error("the restarted broker holds no retained online status")
	}
	if err := b2.Publish(scheme.Device(dev, topics.Desired), []byte("after-restart"), true, 1); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, h.desired, "desired state after restart"); got != "after-restart" {
		t.Errorf("desired = %q; want after-restart (not resubscribed?)", got)
	}
}

func TestLastWillWhenConnectionDiesUncleanly(t *testing.T) {
	brokerAddr := freeAddr(t)
	b := startBroker(t, brokerAddr)
	p := startProxy(t, brokerAddr)
	statusTopic := scheme.Device(dev, topics.Status)
	status := b.subscribe(t, statusTopic)

	h := startLink(t, p.addr(), nil)
	h.waitConn(t, true)
	waitStatus(t, status, true)

	// Cut the network and keep it down: the broker must publish the will.
	p.setRefuse(true)
	p.cut()
	st := waitStatus(t, status, false)
	if st.DeviceId != dev {
		t.Errorf("will = %v", st)
	}
	payload, ok := b.retained(statusTopic)
	if !ok || decodeStatus(t, payload).Online {
		t.Error("the will did not leave a retained offline status")
	}
	h.waitConn(t, false)

	// Network back: the link reconnects and says it is online again.
	p.setRefuse(false)
	h.waitConn(t, true)
	waitStatus(t, status, true)
}

func TestCloseLeavesOfflineStatus(t *testing.T) {
	addr := freeAddr(t)
	b := startBroker(t, addr)
	status := b.subscribe(t, scheme.Device(dev, topics.Status))
	h := startLink(t, addr, nil)
	h.waitConn(t, true)
	waitStatus(t, status, true)

	if err := h.l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitStatus(t, status, false)
	if p, ok := b.retained(scheme.Device(dev, topics.Status)); !ok || decodeStatus(t, p).Online {
		t.Error("Close did not leave a retained offline status")
	}
	if err := h.l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDesiredIsCoalescedWhileTheCallbackIsBusy(t *testing.T) {
	addr := freeAddr(t)
	b := startBroker(t, addr)
	cfg := Config{
		BrokerURL: "tcp://" + addr, DeviceID: dev, Topics: scheme,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}
	l, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	release := make(chan struct{})
	var once sync.Once
	l.OnDesired(func(p []byte) {
		got <- string(p)
		once.Do(func() { <-release }) // the first call is slow
	})
	conn := make(chan bool, 4)
	l.OnConnectionChange(func(c bool) { conn <- c })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done; l.Close() }()

	if !recv(t, conn, "connect") {
		t.Fatal("first connection change was false")
	}
	topic := scheme.Device(dev, topics.Desired)
	b.Publish(topic, []byte("v1"), true, 1)
	if v := recv(t, got, "first desired"); v != "v1" {
		t.Fatalf("first = %q", v)
	}
	for _, v := range []string{"v2", "v3", "v4"} {
		b.Publish(topic, []byte(v), true, 1)
	}
	// Wait until the link's mailbox holds v4: v2 and v3 were overwritten.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		p := string(l.desired)
		l.mu.Unlock()
		if p == "v4" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailbox holds %q; want v4", p)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
	close(release)
	if v := recv(t, got, "coalesced desired"); v != "v4" {
		t.Errorf("after the slow callback got %q; want only the latest, v4", v)
	}
	b.Publish(topic, []byte("v5"), true, 1)
	if v := recv(t, got, "next desired"); v != "v5" {
		t.Errorf("next = %q; want v5 (an older state was delivered late)", v)
	}
}

func TestBackoff(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.999} {
		b := backoff{min: time.Second, max: 30 * time.Second, rand: func() float64 { return r }}
		if d := b.delay(0); d != 0 {
			t.Errorf("delay(0) = %s; want 0 (first connect is immediate)", d)
		}
		for n, full := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 40: 30 * time.Second} {
			d := b.delay(n)
			if d < full/2 || d > full {
				t.Errorf("rand=%v delay(%d) = %s; want within [%s, %s]", r, n, d, full/2, full)
			}
		}
	}
	lo := backoff{min: time.Second, max: 30 * time.Second, rand: func() float64 { return 0 }}
	hi := backoff{min: time.Second, max: 30 * time.Second, rand: func() float64 { return 0.999 }}
	if lo.delay(3) == hi.delay(3) {
		t.Error("backoff has no jitter")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no device", Config{BrokerURL: "tcp://h:1883"}, "device id is empty"},
		{"bad device", Config{BrokerURL: "tcp://h:1883", DeviceID: "a/b"}, `"a/b" has '/'`},
		{"no broker", Config{DeviceID: "d"}, "no broker URL"},
		{"bad scheme", Config{DeviceID: "d", BrokerURL: "http://h:1883"}, `scheme "http"`},
		{"no host", Config{DeviceID: "d", BrokerURL: "tcp://"}, "has no host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}
