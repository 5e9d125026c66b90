package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Limits of the embedded broker. mochi's defaults suit a broker for many
// small clients on a big machine; these bound what one device can make the
// control plane hold.
const (
	// sessionExpiry is how long a disconnected device's session (its
	// subscriptions and queued QoS 1 messages) is kept. A device away
	// longer starts a fresh session and converges from its retained
	// desired state; unacked telemetry it simply sends again.
	sessionExpiry = 7 * 24 * time.Hour
	// messageExpiry drops QoS 1 messages queued for a device after a day
	// (mochi's default): retained desired state and the agent's resend of
	// unacked telemetry make up for them.
	messageExpiry = 24 * time.Hour
	// maxInflight bounds the QoS 1 messages queued or unacknowledged per
	// client (mochi's default is 8192). An offline device accumulates one
	// per desired-state change; past this the oldest-first queue refuses
	// new ones, and the retained message still carries the latest.
	maxInflight = 128
	// receiveMaximum bounds the QoS 1 messages an MQTT 5 client may have
	// unacknowledged towards the broker (mochi's default is 1024).
	receiveMaximum = 64
	// maxWritesPending bounds one client's outbound queue (mochi's default
	// is 8192); a client that does not read is dropped messages, not
	// given unbounded memory.
	maxWritesPending = 1024
	// sysTopicInterval: mochi republishes $SYS topics on this interval
	// (default every second); no device may read them, so rarely.
	sysTopicInterval = 60 // seconds
)

// EmbeddedConfig configures the embedded broker.
type EmbeddedConfig struct {
	// Addr is the host:port devices connect to; port 0 picks a free port
	// (Addr on the broker tells which).
	Addr string
	// Scheme is the topic scheme the ACL enforces.
	Scheme topics.Scheme
	// Auth checks device credentials.
	Auth Authenticator
	// Service, if set, is a credential with access to every topic under
	// the prefix, for a control plane that connects over the network
	// instead of through the inline client (another replica; tests of
	// External). Its username must not be a valid device id, so that no
	// device can ever hold it (start it with '-', say); clients using it
	// must use the username as client id too.
	Service *Credential
}

// Embedded is the control plane's own MQTT broker (mochi-mqtt), with the
// device hook installed. Sessions and retained messages live in memory:
// after a restart, devices reconnect to fresh sessions and the control
// plane republishes every device's desired state (fleet.Service.Republish).
type Embedded struct {
	cfg  EmbeddedConfig
	log  *slog.Logger
	srv  *mqtt.Server
	hook *deviceHook
	lim  *lograte.Limiter

	nextSub atomic.Int64

	mu       sync.Mutex
	listener *listeners.TCP
	closed   bool
}

var _ Bus = (*Embedded)(nil)

// NewEmbedded returns a broker configured by cfg; Start makes it listen.
func NewEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*Embedded, error) {
	if cfg.Addr == "" {
		return nil, errors.New("embedded MQTT broker: listen address is empty; give host:port, e.g. :1883")
	}
	if cfg.Auth == nil {
		return nil, errors.New("embedded MQTT broker: no Authenticator for device credentials")
	}
	if cfg.Service != nil {
		switch {
		case cfg.Service.Username == "" || cfg.Service.Password == "":
			return nil, errors.New("embedded MQTT broker: service credential needs a username and a password")
		case topics.ValidateDeviceID(cfg.Service.Username) == nil:
			return nil, fmt.Errorf("embedded MQTT broker: service username %q is a valid device id, so a device could be enrolled under it; pick one that is not (e.g. start it with '-')", cfg.Service.Username)
		}
	}
	cfg.Scheme = topics.New(cfg.Scheme.Prefix)

	lim := lograte.New(30*time.Second, 4096, nil)
	// mochi logs a line per refused connection and per dropped packet; its
	// lines go through a rate limiter keyed by message and error.
	mochiLog := slog.New(newLimitedHandler(log.With("component", "mqtt").Handler(), lograte.New(30*time.Second, 1024, nil)))

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketBytes
	caps.MaximumSessionExpiryInterval = uint32(sessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(messageExpiry / time.Second)
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = receiveMaximum
	caps.MaximumClientWritesPending = maxWritesPending
	// MaximumQos stays 2: Shoal uses QoS 1, but capping it would make mochi
	// answer an MQTT 3.1.1 client's QoS 2 PUBLISH with a PUBACK, which 3.1.1
	// has no way to announce.

	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 mochiLog,
		InlineClient:           true,
		SysTopicResendInterval: sysTopicInterval,
	})
	hook := &deviceHook{
		scheme:  cfg.Scheme,
		auth:    cfg.Auth,
		service: cfg.Service,
		log:     log.With("component", "mqtt-acl"),
		limit:   lim,
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("embedded MQTT broker: add device hook: %w", err)
	}
	return &Embedded{cfg: cfg, log: log, srv: srv, hook: hook, lim: lim}, nil
}

// Start listens on the configured address and returns once the broker
// accepts connections.
func (e *Embedded) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return ErrClosed
	case e.listener != nil:
		return errors.New("embedded MQTT broker: already started")
	}
	l := listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "devices", Address: e.cfg.Addr})
	if err := e.srv.AddListener(l); err != nil { // binds the socket
		return fmt.Errorf("embedded MQTT broker: listen on %s: %w", e.cfg.Addr, err)
	}
	if err := e.srv.Serve(); err != nil {
		return fmt.Errorf("embedded MQTT broker: serve on %s: %w", e.cfg.Addr, err)
	}
	e.listener = l
	e.log.Info("MQTT broker listening", "addr", l.Address(), "prefix", e.cfg.Scheme.Prefix)
	return nil
}

// Addr returns the address the broker listens on (the chosen port when
// the configured one was 0), or the configured address before Start.
func (e *Embedded) Addr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.listener != nil {
		return e.listener.Address()
	}
	return e.cfg.Addr
}

// Publish implements Bus through the inline client (no ACL). Subscribers
// receive it at QoS 1 (or the QoS they asked for, if lower).
func (e *Embedded) Publish(topic string, payload []byte, retained bool) error {
	if err := checkPublish(topic, payload); err != nil {
		return err
	}
	if e.isClosed() {
		return ErrClosed
	}
	if err := e.srv.Publish(topic, payload, retained, 1); err != nil {
		return fmt.Errorf("publish on %q: %w", topic, err)
	}
	return nil
}

// Subscribe implements Bus through the inline client. Retained messages
// matching filter are delivered before it returns. h runs on the goroutine
// of the publishing client's connection, so messages from one device
// arrive in order, and a slow h slows that device only.
func (e *Embedded) Subscribe(filter string, h func(topic string, payload []byte)) error {
	if err := checkSubscribe(filter, h); err != nil {
		return err
	}
	if e.isClosed() {
		return ErrClosed
	}
	id := int(e.nextSub.Add(1))
	err := e.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		deliver(e.log, e.lim, filter, h, pk.TopicName, pk.Payload)
	})
	if err != nil {
		return fmt.Errorf("subscribe to %q: %w", filter, err)
	}
	return nil
}

// Stats returns what the device hook has refused so far.
func (e *Embedded) Stats() Stats { return e.hook.stats() }

// Close disconnects every client (their last wills are published, so
// subscribers see devices go offline) and stops listening.
func (e *Embedded) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.listener != nil
	e.mu.Unlock()
	if !started {
		return nil
	}
	return e.srv.Close()
}

func (e *Embedded) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// deliver calls h, turning a panic into a (rate-limited) log line: one bad
// message must not take the broker or the client down.
func deliver(log *slog.Logger, lim *lograte.Limiter, filter string, h func(string, []byte), topic string, payload []byte) {
	defer func() {
		if r := recover(); r != nil {
			lim.Log(log, slog.LevelError, "panic\x00"+filter, "MQTT message handler panicked; message dropped", "filter", filter, "topic", topic, "panic", r)
		}
	}()
	h(topic, payload)
}
