// Package fleet holds the control plane's devices: one-time enrollment
// tokens, per-device MQTT credentials, each device's desired state (which
// it publishes, retained, as a DesiredState), the operator's labels and
// group of each device (for selecting devices) and what devices report
// about themselves (reported state, online status).
//
// Everything is kept in a store.Store under the "fleet/" key prefix:
//
//	fleet/token/{sha256 of token, hex}    tokenRecord (JSON)
//	fleet/device/{id}                     deviceRecord (JSON): credential hash, labels, desired state
//	fleet/state/{id}                      stateRecord (JSON): last reported state and status
//	fleet/envelope/{sha256, hex}          a signed manifest envelope, shared by every device it targets
//
// Secrets (tokens, device passwords) are stored only as SHA-256 hashes;
// they are 32 random bytes each, so a plain hash is as good as a slow one.
package fleet

import (
	"log/slog"
	"sync"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Publisher sends MQTT messages (QoS 1). broker.Bus satisfies it.
type Publisher interface {
	Publish(topic string, payload []byte, retained bool) error
}

// Service is the fleet. Its methods are safe for concurrent use.
type Service struct {
	st     store.Store
	bus    Publisher
	scheme topics.Scheme
	log    *slog.Logger
	now    func() time.Time
	lim    *lograte.Limiter

	// desiredMu serialises desired-state changes from persisting to
	// publishing, so that a device's retained message is always its
	// latest generation. Label changes (SetLabels) take it too: they
	// rewrite the same records, and a deployment should not fail on a
	// write conflict with an operator's labelling.
	desiredMu sync.Mutex

	stats ingestCounters
	act   activity
}

// New returns a Service over st, publishing on bus. now may be nil
// (time.Now).
func New(st store.Store, bus Publisher, scheme topics.Scheme, log *slog.Logger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		st:     st,
		bus:    bus,
		scheme: topics.New(scheme.Prefix),
		log:    log,
		now:    func() time.Time { return now().UTC() },
		lim:    lograte.New(time.Minute, 4096, now),
	}
}

// logLimited logs a warning for (reason, device) at most once per interval.
func (s *Service) logLimited(reason, device, msg string, args ...any) {
	s.lim.Log(s.log, slog.LevelWarn, reason+"\x00"+device, msg, args...)
}

// storeAttempts is how often a transaction is retried on a write conflict.
const storeAttempts = 5

const (
	tokenPrefix    = "fleet/token/"
	devicePrefix   = "fleet/device/"
	statePrefix    = "fleet/state/"
	envelopePrefix = "fleet/envelope/"
)

func tokenKey(hashHex string) []byte   { return []byte(tokenPrefix + hashHex) }
func deviceKey(id string) []byte       { return []byte(devicePrefix + id) }
func stateKey(id string) []byte        { return []byte(statePrefix + id) }
func envelopeKey(sumHex string) []byte { return []byte(envelopePrefix + sumHex) }
