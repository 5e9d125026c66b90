package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Stats counts what the embedded broker's device hook refused.
type Stats struct {
	// BadCredentials counts CONNECTs refused for a username that is not a
	// device id or a password the Authenticator did not accept.
	BadCredentials uint64
	// ClientIDRefused counts CONNECTs whose client id was not the username
	// (or was reserved).
	ClientIDRefused uint64
	// WillRefused counts CONNECTs whose last will named a topic the device
	// may not publish on.
	WillRefused uint64
	// PublishRefused counts PUBLISHes on a topic the client may not use.
	PublishRefused uint64
	// SubscribeRefused counts SUBSCRIBE filters the client may not use.
	SubscribeRefused uint64
}

// deviceHook is the embedded broker's authentication and ACL hook.
type deviceHook struct {
	mqtt.HookBase
	scheme  topics.Scheme
	auth    Authenticator
	service *Credential
	log     *slog.Logger
	limit   *lograte.Limiter

	badCredentials, clientIDRefused, willRefused atomic.Uint64
	publishRefused, subscribeRefused             atomic.Uint64
}

var _ mqtt.Hook = (*deviceHook)(nil)

func (h *deviceHook) ID() string { return "shoal-device-acl" }

func (h *deviceHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *deviceHook) stats() Stats {
	return Stats{
		BadCredentials:   h.badCredentials.Load(),
		ClientIDRefused:  h.clientIDRefused.Load(),
		WillRefused:      h.willRefused.Load(),
		PublishRefused:   h.publishRefused.Load(),
		SubscribeRefused: h.subscribeRefused.Load(),
	}
}

// OnConnectAuthenticate admits a device whose client id equals its username
// (its device id) and whose password the Authenticator accepts, and the
// control plane's service credential if one is configured. A last will, if
// any, must be on a topic the client may publish on: mochi sends wills
// without an ACL check.
func (h *deviceHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	pass := string(pk.Connect.Password)
	refuse := func(c *atomic.Uint64, reason string) bool {
		c.Add(1)
		h.logRefusal("connect", cl, reason, "username", clip(user))
		return false
	}
	switch {
	case cl.ID != user:
		return refuse(&h.clientIDRefused, "client id must equal the username (the device id)")
	case cl.ID == mqtt.InlineClientId:
		return refuse(&h.clientIDRefused, "client id is reserved for the broker's own client")
	}
	if h.isServiceUser(user) {
		if !equalSecret(pass, h.service.Password) {
			return refuse(&h.badCredentials, "wrong password for the service credential")
		}
	} else {
		if topics.ValidateDeviceID(user) != nil {
			return refuse(&h.badCredentials, "username is not a device id")
		}
		if !h.auth.Authenticate(user, pass) {
			return refuse(&h.badCredentials, "unknown device or wrong password")
		}
	}
	if pk.Connect.WillFlag && !h.mayPublish(cl.ID, pk.Connect.WillTopic) {
		return refuse(&h.willRefused, "last will topic "+quote(pk.Connect.WillTopic)+" is not one the device may publish on; use its own status topic")
	}
	return true
}

// OnACLCheck is called with write=true for a client's PUBLISH, and with
// write=false both for a SUBSCRIBE filter and for each delivery to the
// client (mochi checks every outgoing message too).
func (h *deviceHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		if h.mayPublish(cl.ID, topic) {
			return true
		}
		h.publishRefused.Add(1)
		h.logRefusal("publish", cl, "topic is not one of the device's own reported, telemetry or status topics", "topic", clip(topic))
		return false
	}
	if h.isServiceUser(cl.ID) {
		if h.underPrefix(topic) {
			return true
		}
	} else {
		switch topic {
		case h.scheme.Device(cl.ID, topics.Desired), h.scheme.Device(cl.ID, topics.Ack), h.scheme.DeviceRoot(cl.ID):
			return true
		}
		// A device's own other topics match its own d/{id}/# subscription:
		// not delivering them is the point, not a refusal worth a log line.
		if strings.HasPrefix(topic, h.scheme.Prefix+"/d/"+cl.ID+"/") && !strings.ContainsAny(topic, "+#") {
			return false
		}
	}
	h.subscribeRefused.Add(1)
	h.logRefusal("subscribe", cl, "a device may subscribe only to its own desired and ack topics (or its own d/{id}/#)", "filter", clip(topic))
	return false
}

// mayPublish reports whether client id may publish on topic.
func (h *deviceHook) mayPublish(id, topic string) bool {
	if h.isServiceUser(id) {
		return h.underPrefix(topic)
	}
	dev, kind, err := h.scheme.Parse(topic)
	return err == nil && dev == id && kind.AgentPublishes()
}

func (h *deviceHook) isServiceUser(user string) bool {
	return h.service != nil && user == h.service.Username
}

func (h *deviceHook) underPrefix(topic string) bool {
	return strings.HasPrefix(topic, h.scheme.Prefix+"/")
}

func (h *deviceHook) logRefusal(what string, cl *mqtt.Client, reason string, attrs ...any) {
	args := append([]any{"client", clip(cl.ID), "remote", cl.Net.Remote, "reason", reason}, attrs...)
	h.limit.Log(h.log, slog.LevelWarn, what+"\x00"+cl.ID, "MQTT "+what+" refused", args...)
}

// equalSecret compares in constant time; hashing first hides the length.
func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// clip cuts what a client sent to a readable length for a log line.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func quote(s string) string { return strconv.Quote(clip(s)) }
