package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
)

func TestNewEmbeddedConfigErrors(t *testing.T) {
	log := slog.New(&capture{})
	for _, tc := range []struct {
		name string
		cfg  EmbeddedConfig
		want string
	}{
		{"no addr", EmbeddedConfig{Auth: devices{}}, "listen address is empty"},
		{"no auth", EmbeddedConfig{Addr: "127.0.0.1:0"}, "no Authenticator"},
		{"service without password", EmbeddedConfig{Addr: "127.0.0.1:0", Auth: devices{}, Service: &Credential{Username: "-cp"}}, "needs a username and a password"},
		{"service name is a device id", EmbeddedConfig{Addr: "127.0.0.1:0", Auth: devices{}, Service: &Credential{Username: "cp", Password: "x"}}, "is a valid device id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEmbedded(tc.cfg, log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want it to say %q", err, tc.want)
			}
		})
	}
}

func TestDeviceConnect(t *testing.T) {
	b, _ := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa", "b": "pb", "inline": "pi"}})
	for _, tc := range []struct {
		name       string
		user, pass string
		o          deviceOpts
		ok         bool
	}{
		{"good", "a", "pa", deviceOpts{}, true},
		{"good with own status will", "b", "pb", deviceOpts{will: scheme.Device("b", topics.Status)}, true},
		{"wrong password", "a", "nope", deviceOpts{}, false},
		{"unknown device", "zz", "pa", deviceOpts{}, false},
		{"empty password", "a", "", deviceOpts{}, false},
		{"username not a device id", "a/b", "pa", deviceOpts{}, false},
		{"client id is another device", "a", "pa", deviceOpts{clientID: "b"}, false},
		{"client id differs", "a", "pa", deviceOpts{clientID: "a-2"}, false},
		{"reserved inline client id", "inline", "pi", deviceOpts{}, false},
		{"will on another device", "a", "pa", deviceOpts{will: scheme.Device("b", topics.Status)}, false},
		{"will on own desired", "a", "pa", deviceOpts{will: scheme.Device("a", topics.Desired)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialDevice(t, b.Addr(), tc.user, tc.pass, tc.o)
			if tc.ok && err != nil {
				t.Fatalf("connect refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("connect accepted; want it refused")
			}
			if c != nil {
				c.Disconnect(0)
			}
		})
	}
	got := b.Stats()
	want := Stats{BadCredentials: 4, ClientIDRefused: 3, WillRefused: 2}
	if got != want {
		t.Errorf("Stats = %+v; want %+v", got, want)
	}
}

func TestDevicePublishOutsideOwnTopicsNeverDelivered(t *testing.T) {
	b, logs := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa", "b": "pb"}})
	h, got := collect()
	if err := b.Subscribe(scheme.Prefix+"/#", h); err != nil {
		t.Fatal(err)
	}
	dev := mustDialDevice(t, b.Addr(), "b", "pb", deviceOpts{clean: true})
	forbidden := []string{
		scheme.Device("a", topics.Reported),  // another device's
		scheme.Device("a", topics.Telemetry), // another device's
		scheme.Device("b", topics.Desired),   // own, but the control plane's to write
		scheme.Device("b", topics.Ack),       // own, but the control plane's to write
		scheme.Prefix + "/other",
		"elsewhere/d/b/reported",
	}
	// QoS 0 keeps the connection (MQTT 3.1.1 has no way to refuse one); the
	// messages are dropped. The legitimate message published after them on
	// the same connection arrives first, so nothing before it got through.
	for _, topic := range forbidden {
		dev.Publish(topic, 0, false, "forbidden").Wait()
	}
	wait(t, dev.Publish(scheme.Device("b", topics.Reported), 1, false, "legit"), "legit publish")
	if m := recv(t, got, "legit message"); m != (msg{scheme.Device("b", topics.Reported), "legit"}) {
		t.Fatalf("first message delivered = %+v; want the legitimate one", m)
	}

	// QoS 1: the broker closes the connection (MQTT-3.3.5-2), delivering
	// nothing.
	lost := make(chan error, 1)
	dev2 := mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{clean: true, onLost: lost})
	dev2.Publish(scheme.Device("b", topics.Reported), 1, true, "forbidden qos1")
	recv(t, lost, "refused QoS 1 publisher to be disconnected")
	dev3 := mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{clean: true})
	wait(t, dev3.Publish(scheme.Device("a", topics.Status), 1, false, "legit 2"), "legit publish")
	if m := recv(t, got, "second legit message"); m.payload != "legit 2" {
		t.Fatalf("message delivered = %+v; want the legitimate one", m)
	}
	if st := b.Stats(); st.PublishRefused != uint64(len(forbidden)+1) {
		t.Errorf("PublishRefused = %d; want %d", st.PublishRefused, len(forbidden)+1)
	}
	if n := logs.count("MQTT publish refused", ""); n < 1 {
		t.Error("no refusal was logged")
	}
}

func TestDeviceSubscribeOnlyOwnTopics(t *testing.T) {
	b, _ := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa"}})
	got := make(chan msg, 100)
	dev := mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{clean: true})
	h := func(topic string, p []byte) { got <- msg{topic, string(p)} }
	for _, tc := range []struct {
		filter string
		code   byte
	}{
		{scheme.Device("b", topics.Desired), 0x80},
		{scheme.Prefix + "/d/+/desired", 0x80},
		{scheme.Prefix + "/d/#", 0x80},
		{"#", 0x80},
		{"$SYS/#", 0x80},
		{scheme.Device("a", topics.Reported), 0x80},
		{scheme.Device("a", topics.Desired), 1},
		{scheme.Device("a", topics.Ack), 1},
		{scheme.DeviceRoot("a"), 1},
	} {
		if code := subscribeCode(t, dev, tc.filter, h); code != tc.code {
			t.Errorf("SUBACK for %q = %#x; want %#x", tc.filter, code, tc.code)
		}
	}
	// Neither another device's topics nor the device's own non-inbound
	// topics reach it; its desired state does, after them and in order.
	for _, topic := range []string{scheme.Device("b", topics.Desired), scheme.Device("a", topics.Reported), scheme.Device("a", topics.Telemetry)} {
		if err := b.Publish(topic, []byte("not for a"), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(scheme.Device("a", topics.Desired), []byte("for a"), false); err != nil {
		t.Fatal(err)
	}
	first := recv(t, got, "desired state")
	if first.payload != "for a" {
		t.Fatalf("device got %+v first; want its desired state", first)
	}
	// d/a/desired matches both the desired and the # subscription; MQTT
	// 3.1.1 lets the broker send it once per subscription. Anything else is
	// a leak.
	for len(got) > 0 {
		if m := <-got; m.payload != "for a" {
			t.Fatalf("device got %+v", m)
		}
	}
	if st := b.Stats(); st.SubscribeRefused != 5 {
		t.Errorf("SubscribeRefused = %d; want 5 (own reported is refused without counting)", st.SubscribeRefused)
	}
}

func TestInlineRoundTripAndRetained(t *testing.T) {
	b, _ := startEmbedded(t, EmbeddedConfig{Auth: devices{}})
	h, got := collect()
	if err := b.Subscribe(scheme.AllDevices(topics.Reported), h); err != nil {
		t.Fatal(err)
	}
	topic := scheme.Device("x", topics.Reported)
	if err := b.Publish(topic, []byte("hello"), true); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got, "inline message"); m != (msg{topic, "hello"}) {
		t.Fatalf("got %+v", m)
	}
	// A later subscription receives the retained message before Subscribe
	// returns.
	h2, got2 := collect()
	if err := b.Subscribe(scheme.Prefix+"/d/+/+", h2); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got2:
		if m != (msg{topic, "hello"}) {
			t.Fatalf("retained = %+v", m)
		}
	default:
		t.Fatal("retained message not delivered on Subscribe")
	}

	for _, bad := range []string{"", "a/+/b", "a/#"} {
		if err := b.Publish(bad, []byte("x"), false); err == nil {
			t.Errorf("Publish(%q) succeeded; want an error", bad)
		}
	}
	if err := b.Publish("a", make([]byte, MaxPacketBytes), false); err == nil {
		t.Error("Publish of an oversize payload succeeded")
	}
	if err := b.Subscribe("a/#/b", h); err == nil {
		t.Error("Subscribe to an invalid filter succeeded")
	}
	b.Close()
	if err := b.Publish(topic, []byte("x"), false); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v; want ErrClosed", err)
	}
}

func TestRetainedDesiredReachesLateDevice(t *testing.T) {
	b, _ := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa"}})
	desired := scheme.Device("a", topics.Desired)
	if err := b.Publish(desired, []byte("gen 1"), true); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(desired, []byte("gen 2"), true); err != nil {
		t.Fatal(err)
	}
	got := make(chan msg, 10)
	dev := mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{})
	subscribeCode(t, dev, desired, func(topic string, p []byte) { got <- msg{topic, string(p)} })
	if m := recv(t, got, "retained desired state"); m.payload != "gen 2" {
		t.Fatalf("device got %+v; want the latest retained desired state", m)
	}
}

func TestPersistentSessionQueuesWhileOffline(t *testing.T) {
	b, _ := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa"}})
	ack := scheme.Device("a", topics.Ack)
	dev := mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{clean: false})
	subscribeCode(t, dev, ack, nil)
	dev.Disconnect(0)
	shoaltest.Eventually(t, "the broker sees the device gone", func() error {
		if cl, ok := b.srv.Clients.Get("a"); !ok || !cl.Closed() {
			return fmt.Errorf("client a known: %t, closed: %t", ok, ok && cl.Closed())
		}
		return nil
	})

	// Not retained: only the session can carry it to the device.
	if err := b.Publish(ack, []byte("while offline"), false); err != nil {
		t.Fatal(err)
	}
	got := make(chan msg, 10)
	// A new client with the same id and clean session false gets the queued
	// message without subscribing again.
	mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{clean: false, onMessage: func(topic string, p []byte) { got <- msg{topic, string(p)} }})
	if m := recv(t, got, "queued ack"); m != (msg{ack, "while offline"}) {
		t.Fatalf("got %+v", m)
	}
}

func TestRefusalsAreRateLimited(t *testing.T) {
	b, logs := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa"}})
	const n = 30
	for range n {
		if _, err := dialDevice(t, b.Addr(), "a", "wrong", deviceOpts{clean: true}); err == nil {
			t.Fatal("bad password accepted")
		}
	}
	if st := b.Stats(); st.BadCredentials != n {
		t.Errorf("BadCredentials = %d; want %d (every refusal counted)", st.BadCredentials, n)
	}
	if got := logs.count("MQTT connect refused", "client=a"); got != 1 {
		t.Errorf("%d refusal lines for one client; want 1 per interval", got)
	}
	// mochi's own per-connection warning goes through the limiter too.
	if got := logs.count("", "bad username or password"); got > 1 {
		t.Errorf("mochi logged the refusal %d times; want at most once per interval", got)
	}
}

func TestHandlerPanicIsContained(t *testing.T) {
	b, logs := startEmbedded(t, EmbeddedConfig{Auth: devices{"a": "pa"}})
	if err := b.Subscribe(scheme.AllDevices(topics.Telemetry), func(string, []byte) { panic("boom") }); err != nil {
		t.Fatal(err)
	}
	h, got := collect()
	if err := b.Subscribe(scheme.AllDevices(topics.Status), h); err != nil {
		t.Fatal(err)
	}
	dev := mustDialDevice(t, b.Addr(), "a", "pa", deviceOpts{clean: true})
	wait(t, dev.Publish(scheme.Device("a", topics.Telemetry), 1, false, "x"), "publish telemetry")
	wait(t, dev.Publish(scheme.Device("a", topics.Status), 1, false, "still here"), "publish status")
	if m := recv(t, got, "message after the panic"); m.payload != "still here" {
		t.Fatalf("got %+v", m)
	}
	if logs.count("handler panicked", "") != 1 {
		t.Error("panic not logged")
	}
}
