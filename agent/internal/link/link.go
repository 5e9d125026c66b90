// Package link is the agent's MQTT session with the control plane's broker.
//
// A Link keeps one persistent session (clean session off, QoS 1) under the
// device's own client id, with a retained last will on {prefix}/d/{id}/status
// that says the device went offline. On every (re)connect it subscribes to
// d/{id}/desired and d/{id}/ack and publishes a retained online status. It
// reconnects on its own, with exponential backoff and jitter, and starts
// offline if the broker cannot be reached: the agent serves its models
// whether or not the link is up.
//
// The link does not queue what it cannot send: Publish fails fast with
// ErrOffline while the session is down. The agent's durable queue is the
// outbox; a second, in-memory queue inside the MQTT client would only grow
// without bound and be lost on restart.
//
// # paho.mqtt.golang pitfalls, and what this package does about each
//
//   - A message handler that blocks stalls the client: by default
//     (OrderMatters) paho calls handlers one at a time on its router
//     goroutine and sends the PUBACK only when the handler returns, so a slow
//     handler delays pings until the broker drops the connection, and a
//     handler that publishes and waits can deadlock the client (issues #453,
//     #509, #593 and the "Common problems" section of its README). Our
//     handler never blocks: a desired state goes into a one-slot mailbox
//     (level-triggered, so only the latest matters and older ones are
//     overwritten), an ack into a bounded channel (dropped when full: acks are
//     cumulative and the control plane de-duplicates resent records), and a
//     goroutine (Run) hands them to the callbacks. We keep OrderMatters on,
//     rather than SetOrderMatters(false), because the latter runs each
//     handler in its own goroutine, so two desired states could land in the
//     mailbox in the wrong order and an older one would win.
//   - Messages queued in a persistent session arrive right after CONNACK,
//     before OnConnect has re-subscribed with a handler; paho then gives them
//     to the default publish handler or drops them. We route every message
//     through the default handler (SetDefaultPublishHandler) and subscribe
//     without per-subscription handlers.
//   - Subscriptions are lost when the broker loses its session (a restart of
//     a broker without persistence, a session expiry), and AutoReconnect does
//     not re-subscribe (issues #22, #173, #238, #294). We subscribe in the
//     OnConnect handler on every connect, whatever the broker remembers.
//   - ResumeSubs resends stored SUBSCRIBE packets only on the first connect
//     and keeps subscribe tokens pending across a reconnect (#371, #555/#557).
//     We leave it off: a SUBSCRIBE cut short by a lost connection fails its
//     token, and the next OnConnect subscribes afresh.
//   - token.Wait() can wait forever: with clean session off, a publish whose
//     connection is lost stays in the store and its token completes only
//     after a reconnect (#449, #450, #563). We always use WaitTimeout, and
//     refuse to publish while the connection is not open.
//   - The store: with QoS 1 paho keeps unacknowledged publishes in its
//     store until PUBACK (#532). We set a MemoryStore deliberately. A
//     FileStore would survive restarts, but the outbox already does that,
//     with bounds and end-to-end acks; since Publish refuses while offline,
//     the memory store holds at most the few messages in flight when a
//     connection drops, and paho resends those on reconnect.
//   - SetMaxResumePubInFlight stays 0 (unlimited): in v1.5.1 a non-zero
//     value starts a goroutine in resume() that reads the client's stop
//     channel while a reconnect replaces it, a data race that `go test
//     -race` reports when a broker drops the client just after CONNACK. With
//     Publish refusing while offline there are only a handful of messages
//     to resume, so the limit buys nothing.
//   - paho's own reconnect backoff doubles from 1s with no jitter, and the
//     first-connect retry uses a fixed interval. We disable both (a tiny
//     MaxReconnectInterval and ConnectRetryInterval) and wait instead in the
//     connection-attempt handler, which paho calls before every attempt,
//     first connect and reconnects alike: one exponential backoff with
//     jitter, capped at MaxBackoff, reset only after a connection stayed up
//     for a minute so that a broker that accepts and then drops us at once
//     (a duplicate client id, an ACL change) does not cause a hot loop.
//   - OnConnect and OnConnectionLost run in their own goroutines and may
//     overlap when a connection flaps; connection state reported to the
//     callbacks comes from an epoch counter plus the client's own status.
//   - The will is cleared by a clean DISCONNECT, so Close publishes the
//     offline status itself before disconnecting.
//   - paho's loggers (mqtt.ERROR etc.) are package globals; a library must
//     not set them, so paho's own logging stays off and this package logs
//     what matters through the *slog.Logger it is given.
package link

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Size bounds on what the link accepts from the broker. A larger message
// is dropped and logged; the broker's retained copy stays for the next try.
const (
	MaxDesiredBytes = 16 << 20
	MaxAckBytes     = 64 << 10
)

// Defaults for the zero values of Config.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = 30 * time.Second
)

const (
	// stableAfter is how long a connection must stay up before a later
	// loss starts the backoff from the beginning.
	stableAfter = time.Minute
	// ackQueue bounds acks waiting for the callback.
	ackQueue = 256
	// closeTimeout bounds the offline-status publish in Close.
	closeTimeout = 2 * time.Second
)

// ErrOffline is returned (wrapped) by Publish while the session is down.
var ErrOffline = errors.New("not connected to the MQTT broker")

// ErrTimeout is returned (wrapped) by Publish when the broker did not
// acknowledge a message in time. The message may still be delivered later.
var ErrTimeout = errors.New("the MQTT broker did not acknowledge in time")

// Config configures a Link.
type Config struct {
	// BrokerURL is e.g. tcp://host:1883 or ssl://host:8883.
	BrokerURL string
	// DeviceID is the MQTT client id and the {id} in topics.
	DeviceID string
	// Username and Password are the device's MQTT credentials.
	Username string
	Password string
	Topics   topics.Scheme
	// AgentVersion goes into the status messages.
	AgentVersion string
	// TLS is used for ssl://, tls://, mqtts:// and wss:// brokers; nil uses
	// Go's defaults.
	TLS *tls.Config

	KeepAlive      time.Duration // DefaultKeepAlive if 0
	ConnectTimeout time.Duration // DefaultConnectTimeout if 0
	PublishTimeout time.Duration // DefaultPublishTimeout if 0
	MinBackoff     time.Duration // DefaultMinBackoff if 0
	MaxBackoff     time.Duration // DefaultMaxBackoff if 0
	// Now is the clock for status timestamps; time.Now if nil.
	Now func() time.Time
}

func (c *Config) validate() error {
	if err := topics.ValidateDeviceID(c.DeviceID); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	if c.BrokerURL == "" {
		return errors.New("link: no broker URL; pass --broker or enroll to get one")
	}
	u, err := url.Parse(c.BrokerURL)
	if err != nil {
		return fmt.Errorf("link: broker URL %q: %w", c.BrokerURL, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps", "ws", "wss":
	default:
		return fmt.Errorf("link: broker URL %q: scheme %q is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss", c.BrokerURL, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("link: broker URL %q has no host; want e.g. tcp://broker.example:1883", c.BrokerURL)
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Link is the agent's MQTT session. Register callbacks, then Run; Publish
// may be called from any goroutine; Close ends the session.
type Link struct {
	cfg    Config
	log    *slog.Logger
	client mqtt.Client
	bo     backoff

	desiredTopic, ackTopic, statusTopic string

	mu         sync.Mutex
	onDesired  func([]byte)
	onAck      func([]byte)
	onConn     []func(bool)
	desired    []byte
	hasDesired bool
	attempt    int       // connection attempts since the backoff was reset
	epoch      uint64    // incremented when a connection comes up
	readyEpoch uint64    // the epoch whose subscribe and online status are done
	upSince    time.Time // when the current connection came up
	started    bool
	closed     bool

	acks    chan []byte
	wake    chan struct{}
	closing chan struct{}

	// One limiter per kind of line, each with one key: every line of a kind
	// shares its budget.
	attemptLog, lostLog, dropLog *lograte.Limiter
}

// New returns a Link; nothing connects until Run.
func New(cfg Config, log *slog.Logger) (*Link, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Link{
		cfg:          cfg,
		log:          log.With("component", "link", "broker", cfg.BrokerURL),
		bo:           backoff{min: cfg.MinBackoff, max: cfg.MaxBackoff},
		desiredTopic: cfg.Topics.Device(cfg.DeviceID, topics.Desired),
		ackTopic:     cfg.Topics.Device(cfg.DeviceID, topics.Ack),
		statusTopic:  cfg.Topics.Device(cfg.DeviceID, topics.Status),
		acks:         make(chan []byte, ackQueue),
		wake:         make(chan struct{}, 1),
		closing:      make(chan struct{}),
		attemptLog:   lograte.New(time.Minute, 1, cfg.Now),
		lostLog:      lograte.New(time.Minute, 1, cfg.Now),
		dropLog:      lograte.New(time.Minute, 1, cfg.Now),
	}
	// The will is fixed when the client is made, so a time in it would be
	// stale; it carries none and the receiver uses its own clock.
	will, err := l.statusPayload(false, time.Time{})
	if err != nil {
		return nil, err
	}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.BrokerURL).
		SetClientID(cfg.DeviceID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1; no silent fallback to 3.1
		SetCleanSession(false).
		SetResumeSubs(false).
		SetOrderMatters(true).
		SetStore(newStore()). // a MemoryStore; see store.go
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(min(cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.PublishTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		// Our backoff runs in the attempt handler; paho's own waits are
		// reduced to next to nothing (see the package comment).
		SetConnectRetryInterval(time.Millisecond).
		SetMaxReconnectInterval(time.Millisecond).
		SetConnectionAttemptHandler(l.beforeAttempt).
		SetBinaryWill(l.statusTopic, will, 1, true).
		SetDefaultPublishHandler(l.route).
		SetOnConnectHandler(l.onConnect).
		SetConnectionLostHandler(l.onConnectionLost)
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	l.client = mqtt.NewClient(opts)
	return l, nil
}

// OnDesired sets the callback for desired-state payloads. Only the latest
// payload matters: if several arrive while the callback is busy, it is
// called once more with the newest. Set it before Run.
func (l *Link) OnDesired(f func(payload []byte)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onDesired = f
}

// OnAck sets the callback for ack payloads. Set it before Run.
func (l *Link) OnAck(f func(payload []byte)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onAck = f
}

// OnConnectionChange adds a callback told when the session comes up (after
// it has subscribed and published its online status) and goes down. A
// reconnect is reported as false then true, even if it happened between two
// deliveries. Callbacks run on Run's goroutine, one at a time, and must not
// block for long. Add them before Run.
func (l *Link) OnConnectionChange(f func(connected bool)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onConn = append(l.onConn, f)
}

// Connected reports whether the session is up now.
func (l *Link) Connected() bool { return l.client.IsConnectionOpen() }

// Run connects (in the background, retrying until Close) and delivers
// messages and connection changes to the callbacks until ctx is done; then
// it returns nil. The session stays up after Run returns, so that the agent
// can still flush its queue while stopping; Close ends it.
func (l *Link) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return errors.New("link: Run called twice")
	}
	if l.closed {
		l.mu.Unlock()
		return errors.New("link: Run called after Close")
	}
	l.started = true
	l.mu.Unlock()

	// With ConnectRetry the token completes only once connected (or on
	// Disconnect); the agent must not wait for it to start serving.
	l.client.Connect()

	var delivered bool // the connection state the callbacks last saw
	var seenEpoch uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-l.acks:
			l.mu.Lock()
			f := l.onAck
			l.mu.Unlock()
			if f != nil {
				f(p)
			}
		case <-l.wake:
			l.mu.Lock()
			ready, epoch := l.readyEpoch, l.epoch
			p, has := l.desired, l.hasDesired
			l.desired, l.hasDesired = nil, false
			conn := append([]func(bool){}, l.onConn...)
			onDesired := l.onDesired
			l.mu.Unlock()

			up := ready == epoch && ready != 0 && l.client.IsConnectionOpen()
			notify := func(v bool) {
				for _, f := range conn {
					f(v)
				}
				delivered = v
			}
			switch {
			case up && ready != seenEpoch:
				if delivered {
					notify(false) // the previous session ended in between
				}
				notify(true)
				seenEpoch = ready
			case !up && delivered:
				notify(false)
			}
			if has && onDesired != nil {
				onDesired(p)
			}
		}
	}
}

// Publish sends payload on topic with QoS 1 and waits for the broker's
// PUBACK (at most Config.PublishTimeout). While the session is down it
// returns ErrOffline at once instead of queueing; after a timeout it returns
// ErrTimeout, and the message may still be delivered after a reconnect, so
// receivers must tolerate duplicates (the control plane de-duplicates
// telemetry by sequence; status and reported state are retained levels).
func (l *Link) Publish(topic string, payload []byte, retained bool) error {
	if !l.client.IsConnectionOpen() {
		return fmt.Errorf("publish to %s: %w", topic, ErrOffline)
	}
	return l.publish(topic, payload, retained, l.cfg.PublishTimeout)
}

func (l *Link) publish(topic string, payload []byte, retained bool, timeout time.Duration) error {
	tok := l.client.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("publish to %s: no PUBACK within %s: %w", topic, timeout, ErrTimeout)
	}
	if err := tok.Error(); err != nil {
		if errors.Is(err, mqtt.ErrNotConnected) {
			return fmt.Errorf("publish to %s: %w", topic, ErrOffline)
		}
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// Close publishes a retained offline status if connected (a clean
// DISCONNECT cancels the will, so the broker would not), disconnects, and
// stops reconnecting. It is safe to call more than once.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.closing)
	l.mu.Unlock()

	var err error
	if l.client.IsConnectionOpen() {
		payload, perr := l.statusPayload(false, l.cfg.Now())
		if perr == nil {
			perr = l.publish(l.statusTopic, payload, true, min(l.cfg.PublishTimeout, closeTimeout))
		}
		if perr != nil {
			err = fmt.Errorf("link: publish offline status: %w", perr)
		}
	}
	l.client.Disconnect(250)
	return err
}

// beforeAttempt runs before every connection attempt (paho's
// ConnectionAttemptHandler) and waits out the backoff; Close cuts the wait
// short.
func (l *Link) beforeAttempt(broker *url.URL, cfg *tls.Config) *tls.Config {
	l.mu.Lock()
	n := l.attempt
	l.attempt++
	l.mu.Unlock()
	if d := l.bo.delay(n); d > 0 {
		l.attemptLog.Log(l.log, slog.LevelInfo, "", "connecting to the MQTT broker", "attempt", n+1, "after", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-l.closing:
			t.Stop()
		}
	}
	return cfg
}

func (l *Link) onConnect(c mqtt.Client) {
	l.mu.Lock()
	l.epoch++
	epoch := l.epoch
	l.upSince = l.cfg.Now()
	attempts := l.attempt
	l.mu.Unlock()
	l.log.Info("connected to the MQTT broker", "attempts", attempts)

	if !l.subscribe(epoch) {
		return
	}
	payload, err := l.statusPayload(true, l.cfg.Now())
	if err == nil {
		err = l.publish(l.statusTopic, payload, true, l.cfg.PublishTimeout)
	}
	if err != nil {
		l.log.Warn("could not publish the online status", "err", err)
	}
	l.mu.Lock()
	if l.epoch == epoch {
		l.readyEpoch = epoch
	}
	l.mu.Unlock()
	l.signal()
}

// subscribe subscribes to the desired and ack topics, retrying with backoff
// while this connection lasts. It reports whether it succeeded.
func (l *Link) subscribe(epoch uint64) bool {
	filters := map[string]byte{l.desiredTopic: 1, l.ackTopic: 1}
	for try := 1; ; try++ {
		tok := l.client.SubscribeMultiple(filters, nil) // nil: the default handler routes
		var err error
		switch {
		case !tok.WaitTimeout(l.cfg.PublishTimeout):
			err = fmt.Errorf("no SUBACK within %s", l.cfg.PublishTimeout)
		case tok.Error() != nil:
			err = tok.Error()
		default:
			if st, ok := tok.(*mqtt.SubscribeToken); ok {
				for topic, code := range st.Result() {
					if code >= 0x80 {
						err = fmt.Errorf("the broker refused the subscription to %s (code %#x); check that the device's credentials allow it", topic, code)
					}
				}
			}
		}
		if err == nil {
			return true
		}
		l.attemptLog.Log(l.log, slog.LevelWarn, "", "subscribe failed; retrying", "try", try, "err", err)
		t := time.NewTimer(l.bo.delay(try))
		select {
		case <-t.C:
		case <-l.closing:
			t.Stop()
			return false
		}
		l.mu.Lock()
		current := l.epoch == epoch
		l.mu.Unlock()
		if !current || !l.client.IsConnectionOpen() {
			return false // the next OnConnect subscribes again
		}
	}
}

func (l *Link) onConnectionLost(c mqtt.Client, err error) {
	now := l.cfg.Now()
	l.mu.Lock()
	up := now.Sub(l.upSince)
	if up >= stableAfter {
		l.attempt = 1 // a connection that lasted: start the backoff again
	}
	l.mu.Unlock()
	l.lostLog.Log(l.log, slog.LevelWarn, "", "lost the connection to the MQTT broker; reconnecting", "err", err, "up_for", up.Round(time.Second))
	l.signal()
}

// route is paho's default publish handler. It must not block (see the
// package comment): it only stores the payload and wakes Run.
func (l *Link) route(_ mqtt.Client, m mqtt.Message) {
	switch m.Topic() {
	case l.desiredTopic:
		if n := len(m.Payload()); n > MaxDesiredBytes {
			l.dropLog.Log(l.log, slog.LevelWarn, "", "dropped an oversize desired state", "bytes", n, "limit", MaxDesiredBytes)
			return
		}
		l.mu.Lock()
		l.desired, l.hasDesired = bytes.Clone(m.Payload()), true
		l.mu.Unlock()
		l.signal()
	case l.ackTopic:
		if n := len(m.Payload()); n > MaxAckBytes {
			l.dropLog.Log(l.log, slog.LevelWarn, "", "dropped an oversize ack", "bytes", n, "limit", MaxAckBytes)
			return
		}
		select {
		case l.acks <- bytes.Clone(m.Payload()):
		default:
			// The sender resends what stays unacked; the control plane
			// de-duplicates, so a dropped ack costs bandwidth, not data.
			l.dropLog.Log(l.log, slog.LevelWarn, "", "ack queue full; dropped an ack", "queue", ackQueue)
		}
	default:
		l.dropLog.Log(l.log, slog.LevelWarn, "", "message on an unexpected topic", "topic", m.Topic())
	}
}

func (l *Link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Link) statusPayload(online bool, at time.Time) ([]byte, error) {
	st := &shoalv1.DeviceStatus{
		SchemaVersion: 1,
		DeviceId:      l.cfg.DeviceID,
		Online:        online,
		AgentVersion:  l.cfg.AgentVersion,
	}
	if !at.IsZero() {
		st.AtUnixMs = at.UnixMilli()
	}
	b, err := proto.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("link: encode status: %w", err)
	}
	return b, nil
}
