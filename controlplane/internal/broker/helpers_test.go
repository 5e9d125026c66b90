package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
)

var scheme = topics.New("")

// devices is an Authenticator over a fixed map of device id → password.
type devices map[string]string

func (d devices) Authenticate(user, pass string) bool {
	p, ok := d[user]
	return ok && p == pass
}

// capture is a slog.Handler that keeps every record, for assertions on
// what was logged (and how often).
type capture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

// count returns how many records have a message containing msg and, if
// attr is not empty, an attribute whose "key=value" text contains attr.
func (c *capture) count(msg, attr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.recs {
		if !strings.Contains(r.Message, msg) {
			continue
		}
		found := attr == ""
		r.Attrs(func(a slog.Attr) bool {
			if strings.Contains(a.String(), attr) {
				found = true
				return false
			}
			return true
		})
		if found {
			n++
		}
	}
	return n
}

func startEmbedded(t *testing.T, cfg EmbeddedConfig) (*Embedded, *capture) {
	t.Helper()
	logs := &capture{}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	b, err := NewEmbedded(cfg, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, logs
}

type msg struct {
	topic   string
	payload string
}

// collect returns a handler that sends every message to the channel.
func collect() (func(string, []byte), chan msg) {
	ch := make(chan msg, 100)
	return func(topic string, payload []byte) { ch <- msg{topic, string(payload)} }, ch
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(shoaltest.Patience):
		t.Fatalf("no %s within %s", what, shoaltest.Patience)
		panic("unreachable")
	}
}

// deviceOpts are options of a device-like paho client.
type deviceOpts struct {
	clientID  string // defaults to the username
	clean     bool
	will      string // will topic, if any
	onLost    chan error
	onMessage func(string, []byte) // default publish handler
}

func dialDevice(t *testing.T, addr, user, pass string, o deviceOpts) (paho.Client, error) {
	t.Helper()
	if o.clientID == "" {
		o.clientID = user
	}
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(o.clientID).
		SetUsername(user).
		SetPassword(pass).
		SetCleanSession(o.clean).
		SetAutoReconnect(false).
		SetConnectTimeout(shoaltest.Patience).
		SetProtocolVersion(4).
		// In order: tests read "nothing leaked before the legitimate
		// message" from the order handlers see messages in.
		SetOrderMatters(true)
	if o.will != "" {
		opts.SetBinaryWill(o.will, []byte("offline"), 1, true)
	}
	if o.onLost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { o.onLost <- err })
	}
	if o.onMessage != nil {
		h := o.onMessage
		opts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) })
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(shoaltest.Patience) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustDialDevice(t *testing.T, addr, user, pass string, o deviceOpts) paho.Client {
	t.Helper()
	c, err := dialDevice(t, addr, user, pass, o)
	if err != nil {
		t.Fatalf("device %s: connect: %v", user, err)
	}
	return c
}

func wait(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(shoaltest.Patience) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// subscribeCode subscribes c to filter and returns the SUBACK code.
func subscribeCode(t *testing.T, c paho.Client, filter string, h func(string, []byte)) byte {
	t.Helper()
	var cb paho.MessageHandler
	if h != nil {
		cb = func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) }
	}
	tok := c.Subscribe(filter, 1, cb)
	wait(t, tok, "subscribe "+filter)
	return tok.(*paho.SubscribeToken).Result()[filter]
}
