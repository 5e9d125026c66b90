package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Size bounds of what devices send.
const (
	MaxReportedBytes = 256 << 10
	MaxStatusBytes   = 4 << 10
)

// IngestStats counts reported-state and status messages by outcome.
type IngestStats struct {
	Accepted      uint64 // stored
	Duplicates    uint64 // identical to what was stored (e.g. a retained message delivered again)
	BadTopic      uint64 // not a device topic of the expected kind
	TooLarge      uint64
	Malformed     uint64 // not the expected protobuf message
	BadSchema     uint64 // unknown schema_version
	WrongDevice   uint64 // device_id in the payload is not the topic's
	UnknownDevice uint64 // not enrolled
	StoreErrors   uint64
}

type ingestCounters struct {
	accepted, duplicates, badTopic, tooLarge, malformed, badSchema, wrongDevice, unknownDevice, storeErrors atomic.Uint64
}

// Stats returns the ingest counters.
func (s *Service) Stats() IngestStats {
	c := &s.stats
	return IngestStats{
		Accepted:      c.accepted.Load(),
		Duplicates:    c.duplicates.Load(),
		BadTopic:      c.badTopic.Load(),
		TooLarge:      c.tooLarge.Load(),
		Malformed:     c.malformed.Load(),
		BadSchema:     c.badSchema.Load(),
		WrongDevice:   c.wrongDevice.Load(),
		UnknownDevice: c.unknownDevice.Load(),
		StoreErrors:   c.storeErrors.Load(),
	}
}

// HandleReported ingests a ReportedState from {prefix}/d/{id}/reported.
// It is a Bus handler: what it cannot use it counts, logs (rate-limited)
// and drops.
func (s *Service) HandleReported(topic string, payload []byte) {
	id, ok := s.check(topic, topics.Reported, payload, MaxReportedBytes)
	if !ok {
		return
	}
	var m shoalv1.ReportedState
	if !s.decode(id, topics.Reported, payload, &m, m.GetSchemaVersion, m.GetDeviceId) {
		return
	}
	s.apply(id, topics.Reported, func(st *stateRecord) bool {
		if bytes.Equal(st.Reported, payload) {
			return false
		}
		st.Reported = bytes.Clone(payload)
		st.LastSeen = s.now()
		return true
	})
}

// HandleStatus ingests a DeviceStatus from {prefix}/d/{id}/status: the
// agent's own "online" on connecting, or its last will, "offline", sent by
// the broker when the connection is lost. A device is online when its
// latest status says so.
func (s *Service) HandleStatus(topic string, payload []byte) {
	id, ok := s.check(topic, topics.Status, payload, MaxStatusBytes)
	if !ok {
		return
	}
	var m shoalv1.DeviceStatus
	if !s.decode(id, topics.Status, payload, &m, m.GetSchemaVersion, m.GetDeviceId) {
		return
	}
	s.apply(id, topics.Status, func(st *stateRecord) bool {
		if bytes.Equal(st.Status, payload) {
			return false
		}
		st.Status = bytes.Clone(payload)
		st.Online = m.GetOnline()
		// A last will is the broker noticing the device is gone, not a
		// sighting of it.
		if m.GetOnline() {
			st.LastSeen = s.now()
		}
		return true
	})
}

// check parses the topic and bounds the payload size.
func (s *Service) check(topic string, want topics.Kind, payload []byte, max int) (id string, ok bool) {
	id, kind, err := s.scheme.Parse(topic)
	if err == nil && kind != want {
		err = fmt.Errorf("topic %q is a %s topic; want %s", topic, kind, want)
	}
	if err != nil {
		s.stats.badTopic.Add(1)
		s.logLimited("topic", "", "dropped message on an unexpected topic", "kind", want, "err", err)
		return "", false
	}
	if len(payload) > max {
		s.stats.tooLarge.Add(1)
		s.logLimited("size", id, "dropped oversize message", "device", id, "kind", want, "bytes", len(payload), "limit", max)
		return "", false
	}
	return id, true
}

// decode unmarshals payload into m and checks its schema version and
// device id.
func (s *Service) decode(id string, kind topics.Kind, payload []byte, m proto.Message, schema func() uint32, device func() string) bool {
	if err := proto.Unmarshal(payload, m); err != nil {
		s.stats.malformed.Add(1)
		s.logLimited("malformed", id, "dropped malformed message", "device", id, "kind", kind, "err", err)
		return false
	}
	if v := schema(); v != SchemaVersion {
		s.stats.badSchema.Add(1)
		s.logLimited("schema", id, "dropped message of an unknown schema version", "device", id, "kind", kind, "schema_version", v, "want", SchemaVersion)
		return false
	}
	if d := device(); d != id {
		s.stats.wrongDevice.Add(1)
		s.logLimited("device", id, "dropped message naming another device than its topic", "device", id, "kind", kind, "payload_device_id", d)
		return false
	}
	return true
}

var errNotEnrolled = errors.New("device is not enrolled")

// apply updates the device's stored state with change, which reports
// whether it changed anything.
func (s *Service) apply(id string, kind topics.Kind, change func(*stateRecord) bool) {
	changed := false
	err := store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		if _, err := tx.Get(deviceKey(id)); errors.Is(err, store.ErrNotFound) {
			return errNotEnrolled
		} else if err != nil {
			return fmt.Errorf("read device: %w", err)
		}
		var st stateRecord
		if _, err := store.GetJSON(tx, stateKey(id), &st); err != nil {
			return err
		}
		if changed = change(&st); !changed {
			return nil
		}
		return store.PutJSON(tx, stateKey(id), st)
	})
	switch {
	case errors.Is(err, errNotEnrolled):
		s.stats.unknownDevice.Add(1)
		s.logLimited("unknown", id, "dropped message from a device that is not enrolled", "device", id, "kind", kind)
	case err != nil:
		s.stats.storeErrors.Add(1)
		s.logLimited("store", id, "cannot store device message", "device", id, "kind", kind, "err", err)
	case changed:
		s.stats.accepted.Add(1)
	default:
		s.stats.duplicates.Add(1)
	}
}
