// Package monitor ingests device telemetry: it stores every record once,
// keyed by (device, sequence number), keeps per-device counters and each
// device's totals per model version (for rollout health gates), and
// acknowledges each batch to the agent only after the store has committed
// it, so the agent may then delete it from its outbox (DESIGN §3: delivery
// is end-to-end, not the broker's PUBACK).
//
// Keys, in a store.Store under the "monitor/" prefix:
//
//	monitor/rec/{device}/{seq, 16 hex digits}     TelemetryRecord (protobuf)
//	monitor/dev/{device}                          deviceCounters (JSON)
//	monitor/drop/{device}/{first}-{last}          a drop range already counted
//	monitor/ver/{model}/{version}/{device}        versionCounters (JSON)
//	monitor/stats/{model}/{version}/{cohort}/{k}  data statistics of drift window k
//	                                              (StatsReport, protobuf: see stats.go)
//
// Device ids, model names and versions hold no '/' (they are made of
// [A-Za-z0-9._-]), so '/' separates them unambiguously. A record whose
// model name or version is not valid is stored and counted for its device,
// but has no version aggregate.
//
// A statistics aggregate is a StatsReport with window_start_unix_ms and
// window_end_unix_ms the drift window's bounds, seq the number of records
// merged into it, and no device_id; k is the window's index (its start over
// its length) in 16 hex digits. The cohort ("all" or "profile:{name}")
// holds no '/'.
package monitor

import (
	"log/slog"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Publisher sends MQTT messages (QoS 1). broker.Bus satisfies it.
type Publisher interface {
	Publish(topic string, payload []byte, retained bool) error
}

// Monitor is the telemetry ingest. Its methods are safe for concurrent use.
type Monitor struct {
	st     store.Store
	bus    Publisher
	scheme topics.Scheme
	log    *slog.Logger
	now    func() time.Time
	lim    *lograte.Limiter
	stats  counters

	statsCfg statsState
}

// New returns a Monitor over st that acknowledges on bus. now may be nil
// (time.Now).
func New(st store.Store, bus Publisher, scheme topics.Scheme, log *slog.Logger, now func() time.Time) *Monitor {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{
		st:     st,
		bus:    bus,
		scheme: topics.New(scheme.Prefix),
		log:    log,
		now:    now,
		lim:    lograte.New(time.Minute, 4096, now),

		statsCfg: statsState{window: DefaultStatsWindow},
	}
}

// storeAttempts is how often a transaction is retried on a write conflict.
const storeAttempts = 5

// logLimited logs a warning for (reason, device) at most once per interval.
func (m *Monitor) logLimited(reason, device, msg string, args ...any) {
	m.lim.Log(m.log, slog.LevelWarn, reason+"\x00"+device, msg, args...)
}
