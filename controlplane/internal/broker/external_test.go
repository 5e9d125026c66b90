package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
)

var cpCred = Credential{Username: "-shoal-cp", Password: "cp-secret"}

func dialExternal(t *testing.T, addr string, cred Credential) (*External, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), shoaltest.Patience)
	defer cancel()
	logs := &capture{}
	t.Cleanup(func() {
		if t.Failed() {
			logs.mu.Lock()
			for _, r := range logs.recs {
				t.Logf("client log: %s %s", r.Message, recordAttrs(r))
			}
			logs.mu.Unlock()
		}
	})
	x, err := DialExternal(ctx, ExternalConfig{
		URL:                  "tcp://" + cred.Username + ":" + cred.Password + "@" + addr,
		ClientID:             cred.Username,
		MaxReconnectInterval: time.Second,
		// A reconnect that lands on the old broker while it shuts down is
		// accepted and never answered; time it out well within
		// shoaltest.Patience so the next attempt reaches the new broker.
		ConnectTimeout: 2 * time.Second,
	}, slog.New(logs))
	if err == nil {
		t.Cleanup(func() { x.Close() })
	}
	return x, err
}

func TestExternalAgainstEmbedded(t *testing.T) {
	auth := devices{"a": "pa"}
	cfg := EmbeddedConfig{Auth: auth, Service: &cpCred}
	b, _ := startEmbedded(t, cfg)
	addr := b.Addr()

	x, err := dialExternal(t, addr, cpCred)
	if err != nil {
		t.Fatal(err)
	}
	h, reported := collect()
	if err := x.Subscribe(scheme.AllDevices(topics.Reported), h); err != nil {
		t.Fatal(err)
	}

	// Device → control plane.
	dev := mustDialDevice(t, addr, "a", "pa", deviceOpts{clean: true})
	wait(t, dev.Publish(scheme.Device("a", topics.Reported), 1, true, "r1"), "device publish")
	if m := recv(t, reported, "reported state via External"); m != (msg{scheme.Device("a", topics.Reported), "r1"}) {
		t.Fatalf("got %+v", m)
	}

	// Control plane → device, retained.
	desired := make(chan msg, 10)
	subscribeCode(t, dev, scheme.Device("a", topics.Desired), func(topic string, p []byte) { desired <- msg{topic, string(p)} })
	if err := x.Publish(scheme.Device("a", topics.Desired), []byte("gen 1"), true); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, desired, "desired state from External"); m.payload != "gen 1" {
		t.Fatalf("got %+v", m)
	}

	// Restart the broker on the same address: a fresh, in-memory broker
	// that knows nothing of the old session. Only the client's own
	// resubscription on reconnect can bring the retained message below.
	b.Close()
	b2, err := NewEmbedded(EmbeddedConfig{Addr: addr, Auth: auth, Service: &cpCred}, slog.New(&capture{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(); err != nil {
		t.Fatalf("restart broker on %s: %v", addr, err)
	}
	t.Cleanup(func() { b2.Close() })
	if err := b2.Publish(scheme.Device("a", topics.Reported), []byte("after restart"), true); err != nil {
		t.Fatal(err)
	}
	for {
		m := recv(t, reported, "retained message after the broker restart")
		if m.payload == "after restart" {
			break
		}
	}
	// And publishing works again over the new connection.
	inline, fromCP := collect()
	if err := b2.Subscribe(scheme.AllDevices(topics.Desired), inline); err != nil {
		t.Fatal(err)
	}
	if err := x.Publish(scheme.Device("a", topics.Desired), []byte("gen 2"), true); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, fromCP, "publish after reconnect"); m.payload != "gen 2" {
		t.Fatalf("got %+v", m)
	}
}

func TestExternalRefusals(t *testing.T) {
	b, _ := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa"}, Service: &cpCred})
	if _, err := dialExternal(t, b.Addr(), Credential{Username: cpCred.Username, Password: "wrong"}); err == nil {
		t.Fatal("wrong password accepted")
	} else if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error %q shows the password", err)
	}

	// A device credential: the broker refuses another device's topic with
	// SUBACK 0x80, which paho does not report as an error; External does.
	x, err := dialExternal(t, b.Addr(), Credential{Username: "a", Password: "pa"})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := collect()
	err = x.Subscribe(scheme.Device("b", topics.Desired), h)
	if !errors.Is(err, errRefused) {
		t.Fatalf("Subscribe to another device's topic: %v; want a refusal", err)
	}
	if err := x.Subscribe(scheme.Device("a", topics.Desired), h); err != nil {
		t.Fatalf("Subscribe to own topic: %v", err)
	}
	x.mu.Lock()
	_, kept := x.subs[scheme.Device("b", topics.Desired)]
	x.mu.Unlock()
	if kept {
		t.Error("refused subscription is still registered for resubscription")
	}
	if err := x.Subscribe("a/#/b", h); err == nil {
		t.Error("invalid filter accepted")
	}
	x.Close()
	if err := x.Publish(scheme.Device("a", topics.Status), []byte("x"), false); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v; want ErrClosed", err)
	}
}

func TestDialExternalContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := DialExternal(ctx, ExternalConfig{URL: "tcp://u:p@127.0.0.1:1", ClientID: "-x"}, slog.New(&capture{}))
	if err == nil {
		t.Fatal("dial succeeded")
	}
}

func TestParseBrokerURL(t *testing.T) {
	for _, tc := range []struct {
		in, broker, user, pass, err string
	}{
		{in: "tcp://u:p@host:1884", broker: "tcp://host:1884", user: "u", pass: "p"},
		{in: "tcp://host", broker: "tcp://host:1883"},
		{in: "ssl://u:p%40ss@host", broker: "ssl://host:8883", user: "u", pass: "p@ss"},
		{in: "mqtts://[::1]:8884", broker: "mqtts://[::1]:8884"},
		{in: "wss://h/mqtt", broker: "wss://h:443/mqtt"},
		{in: "http://h:80", err: `scheme "http" is not supported`},
		{in: "tcp://u:secret@:1883", err: "has no host"},
		{in: "host:1883", err: "not supported"},
	} {
		b, u, p, err := parseBrokerURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v; want %q", tc.in, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows the password: %v", tc.in, err)
			}
			continue
		}
		if err != nil || b != tc.broker || u != tc.user || p != tc.pass {
			t.Errorf("%s = %q %q %q %v; want %q %q %q", tc.in, b, u, p, err, tc.broker, tc.user, tc.pass)
		}
	}
}

func TestTopicMatches(t *testing.T) {
	for _, tc := range []struct {
		f, t string
		want bool
	}{
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	} {
		if got := topicMatches(tc.f, tc.t); got != tc.want {
			t.Errorf("topicMatches(%q, %q) = %v", tc.f, tc.t, got)
		}
	}
}

func recordAttrs(r slog.Record) string {
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool { b.WriteString(a.String() + " "); return true })
	return b.String()
}
