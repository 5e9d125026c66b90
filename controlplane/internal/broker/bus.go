// Package broker is the control plane's MQTT side: an embedded broker
// (mochi-mqtt) with the device authentication and ACL hook, and a client
// (paho) for an external broker given with --broker. Both satisfy Bus, which
// is all the rest of the control plane sees of MQTT.
//
// Devices connect with username = client id = device id and the password
// issued at enrollment. On the embedded broker a device may subscribe only
// to its own desired and ack topics (or its own d/{id}/#, which then yields
// only those two), and publish only to its own reported, telemetry and
// status topics; its last will must be one of those too. The control
// plane's own publications and subscriptions go through mochi's inline
// client, which bypasses the hook.
package broker

import (
	"errors"
	"fmt"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Bus is the control plane's view of MQTT. Every message is QoS 1.
type Bus interface {
	// Publish sends payload on topic, retained if asked. It returns once the
	// broker has taken the message (embedded: routed; external: PUBACK), or
	// an error.
	Publish(topic string, payload []byte, retained bool) error
	// Subscribe calls h for every message on a topic matching filter,
	// including retained ones, from now on and across reconnects. h must
	// not keep payload after it returns, and should return quickly.
	Subscribe(filter string, h func(topic string, payload []byte)) error
}

// Authenticator checks a device's MQTT credentials. username is the device
// id. fleet.Service satisfies it.
type Authenticator interface {
	Authenticate(username, password string) bool
}

// Credential is a username and password.
type Credential struct {
	Username string
	Password string
}

// String redacts the password, so that a Credential can be logged.
func (c Credential) String() string { return c.Username + ":<redacted>" }

// MaxPacketBytes bounds one MQTT packet, in both brokers' directions that
// we control: a DesiredState carries signed manifests, each envelope at
// most trust.MaxEnvelopeBytes (4 MiB), so 8 MiB leaves room for a second
// one and the header.
const MaxPacketBytes = 8 << 20

// maxTopicBytes is MQTT's limit on a topic name (a 16-bit length).
const maxTopicBytes = 65535

// ErrClosed is returned by a Bus used after Close.
var ErrClosed = errors.New("MQTT bus is closed")

func checkPublish(topic string, payload []byte) error {
	if err := checkTopicName(topic); err != nil {
		return err
	}
	if len(payload) > MaxPacketBytes-len(topic)-16 {
		return fmt.Errorf("publish on %q: payload is %d bytes; an MQTT packet may hold at most %d", topic, len(payload), MaxPacketBytes)
	}
	return nil
}

func checkSubscribe(filter string, h func(topic string, payload []byte)) error {
	if h == nil {
		return errors.New("subscribe: handler is nil")
	}
	if !mqtt.IsValidFilter(filter, false) {
		return fmt.Errorf("subscribe: %q is not a valid MQTT topic filter", filter)
	}
	return nil
}

func checkTopicName(topic string) error {
	switch {
	case topic == "":
		return errors.New("publish: topic is empty")
	case len(topic) > maxTopicBytes:
		return fmt.Errorf("publish: topic is %d bytes; MQTT allows %d", len(topic), maxTopicBytes)
	case !utf8.ValidString(topic):
		return fmt.Errorf("publish: topic %q is not valid UTF-8", topic)
	}
	for _, r := range topic {
		if r == '+' || r == '#' || r == 0 {
			return fmt.Errorf("publish: topic %q holds %q; wildcards are for subscriptions", topic, r)
		}
	}
	return nil
}
