package link

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startBroker runs an in-process mochi-mqtt broker (allow-all auth, inline
// client on) on addr and stops it at the end of the test (stopping twice is
// harmless).
func startBroker(t *testing.T, addr string) *testBroker {
	t.Helper()
	srv := mochi.New(&mochi.Options{
		InlineClient: true,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		t.Fatalf("broker listen on %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &testBroker{Server: srv}
	t.Cleanup(b.stop)
	return b
}

type testBroker struct {
	*mochi.Server
	once sync.Once
}

func (b *testBroker) stop() { b.once.Do(func() { b.Close() }) }

// subscribe returns a channel receiving every message published on filter
// (including retained ones at subscription time).
func (b *testBroker) subscribe(t *testing.T, filter string) <-chan packets.Packet {
	t.Helper()
	ch := make(chan packets.Packet, 64)
	if err := b.Subscribe(filter, 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		ch <- pk
	}); err != nil {
		t.Fatal(err)
	}
	return ch
}

// retained returns the payload retained on topic, if any.
func (b *testBroker) retained(topic string) ([]byte, bool) {
	for _, pk := range b.Topics.Messages(topic) {
		return pk.Payload, true
	}
	return nil, false
}

func decodeStatus(t *testing.T, b []byte) *shoalv1.DeviceStatus {
	t.Helper()
	var st shoalv1.DeviceStatus
	if err := proto.Unmarshal(b, &st); err != nil {
		t.Fatalf("status payload: %v", err)
	}
	return &st
}

// waitStatus reads statuses from ch until one has online == want.
func waitStatus(t *testing.T, ch <-chan packets.Packet, want bool) *shoalv1.DeviceStatus {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case pk := <-ch:
			if st := decodeStatus(t, pk.Payload); st.Online == want {
				return st
			}
		case <-deadline:
			t.Fatalf("no status with online=%v within 10s", want)
			return nil
		}
	}
}

// proxy is a TCP proxy in front of the broker whose connections the test
// can cut, as a failing network would: no DISCONNECT is sent.
type proxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	conns   []net.Conn
	refuse  bool
	stopped bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		ln.Close()
		p.cut()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse || p.stopped {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// cut closes every proxied connection on both sides.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // reset, not a graceful close
		}
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) setRefuse(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = v
}
