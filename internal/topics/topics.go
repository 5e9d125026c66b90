// Package topics builds and parses Shoal's MQTT topic names.
//
// Every device topic has the form {prefix}/d/{device}/{kind}; the default
// prefix is "shoal/v1". Device ids are restricted so that a topic can always
// be parsed back and so that no id can smuggle MQTT wildcards or separators.
package topics

import (
	"fmt"
	"strings"

	"github.com/shoalfleet/shoal/internal/names"
)

// DefaultPrefix is the topic prefix used unless configured otherwise.
const DefaultPrefix = "shoal/v1"

// Kind is the last segment of a device topic.
type Kind string

// The device topic kinds of DESIGN §3, less its stats topic: data
// statistics ride inside telemetry records (docs/ARCHITECTURE.md,
// "Departures"), so a stats topic is unknown like any other.
const (
	Desired   Kind = "desired"
	Reported  Kind = "reported"
	Telemetry Kind = "telemetry"
	Ack       Kind = "ack"
	Status    Kind = "status"
)

// Kinds lists every kind, in protocol order.
var Kinds = []Kind{Desired, Reported, Telemetry, Ack, Status}

// AgentPublishes reports whether an agent may publish on topics of kind k.
func (k Kind) AgentPublishes() bool {
	switch k {
	case Reported, Telemetry, Status:
		return true
	}
	return false
}

// MaxDeviceIDLen bounds device ids.
const MaxDeviceIDLen = 128

// ValidateDeviceID returns an error naming the problem if id cannot be used
// as a device id: a name (names.Check) not starting with '.' or '-'.
func ValidateDeviceID(id string) error {
	if err := names.Check("device id", id); err != nil {
		return err
	}
	if id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("device id %q must not start with %q", id, id[0])
	}
	return nil
}

// Scheme builds and parses topics under one prefix.
type Scheme struct {
	Prefix string
}

// New returns a Scheme for prefix, or DefaultPrefix if prefix is empty.
func New(prefix string) Scheme {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Scheme{Prefix: prefix}
}

func (s Scheme) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Device returns the topic of kind k for device id.
func (s Scheme) Device(id string, k Kind) string {
	return s.prefix() + "/d/" + id + "/" + string(k)
}

// DeviceRoot returns the topic filter matching every topic of device id.
func (s Scheme) DeviceRoot(id string) string {
	return s.prefix() + "/d/" + id + "/#"
}

// AllDevices returns the filter matching topics of kind k of every device.
func (s Scheme) AllDevices(k Kind) string {
	return s.prefix() + "/d/+/" + string(k)
}

// Parse splits a device topic into its device id and kind. It rejects
// topics outside the prefix, unknown kinds and invalid device ids.
func (s Scheme) Parse(topic string) (id string, k Kind, err error) {
	rest, ok := strings.CutPrefix(topic, s.prefix()+"/d/")
	if !ok {
		return "", "", fmt.Errorf("topic %q is not under %q", topic, s.prefix()+"/d/")
	}
	id, kind, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(kind, "/") {
		return "", "", fmt.Errorf("topic %q: want %s/d/{device}/{kind}", topic, s.prefix())
	}
	if err := ValidateDeviceID(id); err != nil {
		return "", "", fmt.Errorf("topic %q: %w", topic, err)
	}
	for _, known := range Kinds {
		if Kind(kind) == known {
			return id, known, nil
		}
	}
	return "", "", fmt.Errorf("topic %q: unknown kind %q", topic, kind)
}
