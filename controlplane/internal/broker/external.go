package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/shoalfleet/shoal/internal/lograte"
)

// ExternalConfig configures the client for an external broker.
type ExternalConfig struct {
	// URL is the broker: tcp://user:pass@host:port, or ssl:// (also tls://,
	// mqtts://), or ws:// / wss://. The port defaults to 1883 (8883 for
	// TLS). User and password come from the URL.
	URL string
	// ClientID is fixed, so the broker keeps the control plane's session
	// (subscriptions, queued QoS 1 messages) across reconnects.
	ClientID string
	// TLS configures ssl:// connections; nil uses the system roots.
	TLS *tls.Config
	// KeepAlive defaults to 30s, ConnectTimeout to 10s, PublishTimeout (how
	// long Publish and Subscribe wait for the broker's acknowledgement) to
	// 10s, MaxReconnectInterval (the cap of the reconnect backoff) to 30s.
	KeepAlive, ConnectTimeout, PublishTimeout, MaxReconnectInterval time.Duration
}

// External is a Bus on an external MQTT broker (paho, MQTT 3.1.1): a
// persistent session (clean session false) under a fixed client id,
// automatic reconnection with backoff, and every registered subscription
// made again on each (re)connect, since a broker that restarted (or
// expired the session) has forgotten them.
type External struct {
	cli            paho.Client
	log            *slog.Logger
	broker         string // URL without credentials, for messages
	publishTimeout time.Duration
	disp           *dispatcher

	mu     sync.Mutex
	subs   map[string]func(topic string, payload []byte)
	closed bool
}

var _ Bus = (*External)(nil)

// DialExternal connects to the broker in cfg.URL and returns once the
// first connection is up (or ctx ends, or the broker refuses it). Later
// connection losses are repaired in the background.
func DialExternal(ctx context.Context, cfg ExternalConfig, log *slog.Logger) (*External, error) {
	broker, user, pass, err := parseBrokerURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("MQTT broker %s: client id is empty; the control plane needs a fixed one to keep its session", broker)
	}
	cfg = withExternalDefaults(cfg)
	lim := lograte.New(30*time.Second, 1024, nil)
	x := &External{
		log:            log.With("component", "mqtt-client", "broker", broker, "client_id", cfg.ClientID),
		broker:         broker,
		publishTimeout: cfg.PublishTimeout,
		subs:           make(map[string]func(string, []byte)),
	}
	x.disp = newDispatcher(x.log, lim)

	opts := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(cfg.ClientID).
		SetUsername(user).
		SetPassword(pass).
		SetCleanSession(false).
		// MQTT 3.1.1 only: left unset, paho retries a refused CONNECT as
		// 3.1, which doubles every refusal in the broker's log.
		SetProtocolVersion(4).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(cfg.MaxReconnectInterval).
		SetConnectRetry(false). // DialExternal reports a first failure
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(cfg.KeepAlive / 2).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.PublishTimeout).
		// SetMaxResumePubInFlight stays 0 (no limit): in paho v1.5.1 a
		// non-zero value starts a goroutine in resume() that reads the
		// client's stop channel while a reconnect replaces it, a data race
		// `go test -race` reports (see agent/internal/link). The control
		// plane publishes little (acks, desired state), so there is no
		// burst worth pacing.
		// Order kept: paho calls our callbacks one at a time on its router
		// goroutine, in arrival order; they only queue (see dispatcher).
		SetOrderMatters(true).
		// We subscribe again ourselves on every connect (onConnect).
		SetResumeSubs(false).
		SetDefaultPublishHandler(x.routeUnmatched).
		SetOnConnectHandler(x.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			x.log.Warn("MQTT connection lost; reconnecting", "err", err)
		}).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			x.log.Info("MQTT reconnecting")
		})
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	x.cli = paho.NewClient(opts)

	tok := x.cli.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		x.cli.Disconnect(0)
		x.disp.close()
		return nil, fmt.Errorf("connect to MQTT broker %s as %q: %w", broker, cfg.ClientID, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		x.disp.close()
		return nil, fmt.Errorf("connect to MQTT broker %s as %q: %w (check the broker URL and credentials)", broker, cfg.ClientID, err)
	}
	return x, nil
}

func withExternalDefaults(cfg ExternalConfig) ExternalConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.KeepAlive, 30*time.Second)
	def(&cfg.ConnectTimeout, 10*time.Second)
	def(&cfg.PublishTimeout, 10*time.Second)
	def(&cfg.MaxReconnectInterval, 30*time.Second)
	return cfg
}

// brokerSchemes are the URL schemes paho dials, with their default ports.
var brokerSchemes = map[string]string{
	"tcp": "1883", "mqtt": "1883",
	"ssl": "8883", "tls": "8883", "mqtts": "8883", "tcps": "8883",
	"ws": "80", "wss": "443",
}

// parseBrokerURL splits a broker URL into the address paho dials (no
// credentials, default port filled in) and the credentials.
func parseBrokerURL(raw string) (broker, user, pass string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", "", fmt.Errorf("MQTT broker URL is not a URL (want tcp://user:pass@host:port): %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	port, ok := brokerSchemes[scheme]
	if !ok {
		return "", "", "", fmt.Errorf("MQTT broker URL %s: scheme %q is not supported; use tcp://, ssl://, ws:// or wss://", u.Redacted(), u.Scheme)
	}
	if u.Hostname() == "" {
		return "", "", "", fmt.Errorf("MQTT broker URL %s has no host; want %s://user:pass@host:port", u.Redacted(), scheme)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	broker = scheme + "://" + net.JoinHostPort(u.Hostname(), port)
	if scheme == "ws" || scheme == "wss" {
		broker += u.EscapedPath()
	}
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	return broker, user, pass, nil
}

// Publish implements Bus: QoS 1, waiting for the broker's PUBACK up to the
// publish timeout. While the connection is down paho keeps the message and
// sends it after reconnecting; Publish reports the timeout all the same.
func (x *External) Publish(topic string, payload []byte, retained bool) error {
	if err := checkPublish(topic, payload); err != nil {
		return err
	}
	if x.isClosed() {
		return ErrClosed
	}
	tok := x.cli.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(x.publishTimeout) {
		return fmt.Errorf("publish on %q: MQTT broker %s did not acknowledge within %s (connection down? paho sends it after reconnecting)", topic, x.broker, x.publishTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish on %q to MQTT broker %s: %w", topic, x.broker, err)
	}
	return nil
}

// Subscribe implements Bus. The subscription is remembered and made again
// after every reconnect; a second Subscribe to the same filter replaces
// the handler. If the connection is down it is made on reconnect. A
// filter the broker refuses (SUBACK 0x80) is an error, and forgotten.
func (x *External) Subscribe(filter string, h func(topic string, payload []byte)) error {
	if err := checkSubscribe(filter, h); err != nil {
		return err
	}
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return ErrClosed
	}
	x.subs[filter] = h
	x.mu.Unlock()

	if !x.cli.IsConnectionOpen() {
		x.log.Info("MQTT subscription registered; it is made when the connection is up", "filter", filter)
		return nil
	}
	if err := x.subscribe(x.cli, filter, h); err != nil {
		if errors.Is(err, errRefused) {
			x.mu.Lock()
			delete(x.subs, filter)
			x.mu.Unlock()
		}
		return err
	}
	return nil
}

var errRefused = errors.New("refused by the broker")

// subscribe makes one subscription and waits for its SUBACK. paho does
// not treat a refusal (return code 0x80) as an error; we do.
func (x *External) subscribe(c paho.Client, filter string, h func(string, []byte)) error {
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		x.disp.enqueue(delivery{filter: filter, topic: m.Topic(), payload: m.Payload(), h: h})
	})
	if !tok.WaitTimeout(x.publishTimeout) {
		return fmt.Errorf("subscribe to %q: MQTT broker %s did not acknowledge within %s", filter, x.broker, x.publishTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe to %q on MQTT broker %s: %w", filter, x.broker, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if code, ok := st.Result()[filter]; ok && code >= 0x80 {
			return fmt.Errorf("subscribe to %q: %w (return code %#x); check the broker's ACL for this client", filter, errRefused, code)
		}
	}
	return nil
}

// onConnect runs (on its own goroutine) after every connect and
// reconnect, and makes every registered subscription again.
func (x *External) onConnect(c paho.Client) {
	x.mu.Lock()
	filters := make([]string, 0, len(x.subs))
	for f := range x.subs {
		filters = append(filters, f)
	}
	subs := make(map[string]func(string, []byte), len(x.subs))
	for f, h := range x.subs {
		subs[f] = h
	}
	x.mu.Unlock()
	sort.Strings(filters)
	x.log.Info("MQTT connected", "subscriptions", len(filters))
	for _, f := range filters {
		if err := x.subscribe(c, f, subs[f]); err != nil {
			x.log.Error("MQTT resubscribe failed", "filter", f, "err", err)
		}
	}
}

// routeUnmatched handles messages paho has no route for: after a restart
// of the control plane the broker resumes the session and may deliver
// queued messages before Subscribe has registered their handler again.
func (x *External) routeUnmatched(_ paho.Client, m paho.Message) {
	x.mu.Lock()
	var filter string
	var h func(string, []byte)
	for f, fh := range x.subs {
		if topicMatches(f, m.Topic()) {
			filter, h = f, fh
			break
		}
	}
	x.mu.Unlock()
	if h == nil {
		x.log.Debug("MQTT message with no subscription dropped", "topic", m.Topic())
		return
	}
	x.disp.enqueue(delivery{filter: filter, topic: m.Topic(), payload: m.Payload(), h: h})
}

// Close disconnects (waiting briefly for in-flight work) and stops the
// handler workers.
func (x *External) Close() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil
	}
	x.closed = true
	x.mu.Unlock()
	x.cli.Disconnect(250)
	x.disp.close()
	return nil
}

func (x *External) isClosed() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.closed
}

// topicMatches reports whether topic matches the MQTT filter.
func topicMatches(filter, topic string) bool {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) || (f != "+" && f != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}
