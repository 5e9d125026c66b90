// Package rollout is the staged rollout engine (DESIGN §6): a rollout
// takes one model version to a selection of devices in ordered stages,
// each gated on the devices' own reports (active, then healthy) and on
// their telemetry (error rate, p95 latency against the version they ran
// before), and pauses or rolls back when a gate trips.
//
// The engine is a reconciler whose state lives in the store: every pass
// reads the rollouts, observes their devices through the fleet, decides,
// writes its decisions (device phases, events, stage progress) and only
// then acts (desired state). Acting is idempotent — a device whose
// desired state already holds the rollout's version is not notified
// again — so a pass cut short by a crash is finished by the next one, and
// a restarted control plane goes on where it was without re-notifying
// anyone.
//
// Keys, in a store.Store under "rollout/":
//
//	rollout/seq                       last rollout number
//	rollout/r/{id}                    record (JSON): spec, state, stages, manifest
//	rollout/d/{id}/{device}           deviceRecord (JSON): cohort rank, stage, phase
//	rollout/e/{id}/{seq, 16 hex}      Event (JSON)
//	rollout/eseq/{id}                 last event sequence of the rollout
//	rollout/lock/{model}/{device}     id of the running or paused rollout that holds the device
package rollout

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/lograte"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Fleet is what the engine needs of the devices.
type Fleet interface {
	// List returns every enrolled device.
	List(ctx context.Context) ([]fleet.Device, error)
	// Devices returns the devices among ids that are enrolled.
	Devices(ctx context.Context, ids []string) (map[string]fleet.Device, error)
	// SetDesired makes envelope the desired deployment of model on ids;
	// devices that already have it are left alone.
	SetDesired(ctx context.Context, model string, envelope []byte, ids []string) ([]fleet.DesiredResult, error)
	// ClearDesired removes model from the desired state of ids.
	ClearDesired(ctx context.Context, model string, ids []string) ([]fleet.DesiredResult, error)
}

var _ Fleet = (*fleet.Service)(nil)

// Registry issues signed deployment manifests.
type Registry interface {
	Get(ctx context.Context, name, version string) (registry.ModelVersion, error)
	Manifest(ctx context.Context, name, version string, opts registry.ManifestOptions) ([]byte, *shoalv1.DeploymentManifest, error)
	Reissue(ctx context.Context, envelope []byte, ttl time.Duration) ([]byte, *shoalv1.DeploymentManifest, error)
}

var _ Registry = (*registry.Registry)(nil)

// Telemetry gives each device's totals on a model version.
type Telemetry interface {
	VersionStats(ctx context.Context, model, version string) ([]monitor.VersionStats, error)
}

var _ Telemetry = (*monitor.Monitor)(nil)

// Rollout states.
const (
	StateRunning    = apiv1.RolloutRunning
	StatePaused     = apiv1.RolloutPaused
	StateCompleted  = apiv1.RolloutCompleted
	StateRolledBack = apiv1.RolloutRolledBack
	StateAborted    = apiv1.RolloutAborted
)

// Device phases within a rollout.
const (
	PhasePending     = "pending"     // not notified yet (no stage has taken it, or it was offline when one would have)
	PhaseOffline     = "offline"     // notified by the last stage while offline; converges when it returns
	PhaseNotified    = "notified"    // desired state sent; the device has not started on it
	PhaseDownloading = "downloading" // fetching the artifact
	PhaseVerifying   = "verifying"   // digest, signature, self-test, activation
	PhaseActive      = "active"      // serving the new version, not yet healthy
	PhaseHealthy     = "healthy"     // serving it, and reported healthy
	PhaseFailed      = "failed"      // see Reason
	PhaseRollingBack = "rolling_back"
	PhaseRolledBack  = "rolled_back"
)

// refreshBefore: a stored manifest with less than this left is re-signed
// before it is sent (registry.DefaultManifestTTL is 30 days; the fleet
// re-signs desired states at the same margin).
const refreshBefore = registry.DefaultManifestTTL / 3

// storeAttempts is how often a transaction is retried on a write conflict.
const storeAttempts = 8

// writeChunk bounds the writes of one transaction.
const writeChunk = 400

// Engine runs rollouts. Its methods are safe for concurrent use; passes
// and operator commands are serialised.
type Engine struct {
	st   store.Store
	fl   Fleet
	reg  Registry
	tel  Telemetry
	log  *slog.Logger
	now  func() time.Time
	lim  *lograte.Limiter
	kick chan struct{}

	// mu serialises passes, creations and operator commands: the
	// engine is the only writer of its keys.
	mu sync.Mutex

	passes    atomic.Uint64
	passNanos atomic.Uint64
}

// Stats are the engine's counters since it started.
type Stats struct {
	Passes   uint64        // Reconcile passes run
	PassTime time.Duration // their total duration
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{Passes: e.passes.Load(), PassTime: time.Duration(e.passNanos.Load())}
}

// New returns an Engine. now may be nil (time.Now).
func New(st store.Store, fl Fleet, reg Registry, tel Telemetry, log *slog.Logger, now func() time.Time) *Engine {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{
		st: st, fl: fl, reg: reg, tel: tel, log: log,
		now:  func() time.Time { return now().UTC() },
		lim:  lograte.New(time.Minute, 1024, now),
		kick: make(chan struct{}, 1),
	}
}

// Kick asks for a pass soon (a device reported, an operator acted). It
// never blocks.
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run reconciles every interval, and soon after a Kick (but at most once
// per minGap), until ctx ends.
func (e *Engine) Run(ctx context.Context, interval, minGap time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
		if err := e.Reconcile(ctx); err != nil && ctx.Err() == nil {
			e.lim.Log(e.log, slog.LevelError, "pass", "rollout pass failed; will try again", "err", err)
		}
		if minGap > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(minGap):
			}
		}
	}
}

// record is a stored rollout.
type record struct {
	ID      string        `json:"id"`
	Spec    Spec          `json:"spec"`
	State   string        `json:"state"`
	Reason  string        `json:"reason,omitempty"`
	Stage   int           `json:"stage"` // index of the current stage
	Stages  []stageRecord `json:"stages"`
	Targets int           `json:"targets"`
	// Envelope is the signed manifest of the new version.
	Envelope        []byte    `json:"envelope"`
	ReleaseSequence uint64    `json:"release_sequence"`
	ExpiresAt       time.Time `json:"expires_at"`
	// Rollbacks holds the rollback manifests issued, by version.
	Rollbacks map[string][]byte `json:"rollbacks,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	EndedAt   *time.Time        `json:"ended_at,omitempty"`
	// Settled: every device has reached a phase that no longer changes
	// (passes skip an ended rollout once it is settled).
	Settled bool `json:"settled,omitempty"`
}

// stageRecord is a stage's progress.
type stageRecord struct {
	Size      int        `json:"size"` // devices seen online it needs
	StartedAt *time.Time `json:"started_at,omitempty"`
	GateMetAt *time.Time `json:"gate_met_at,omitempty"`
	PassedAt  *time.Time `json:"passed_at,omitempty"`
	Promoted  bool       `json:"promoted,omitempty"`
}

// deviceRecord is one targeted device.
type deviceRecord struct {
	ID    string `json:"id"`
	Rank  int    `json:"rank"`  // position in the rollout's cohort order
	Stage int    `json:"stage"` // index of the stage that notified it; -1 not yet
	Phase string `json:"phase"`
	// Reason says why the device failed or how it was rolled back.
	Reason string `json:"reason,omitempty"`
	// Previous is the version the device ran when notified: what a
	// rollback returns it to ("" if it ran none).
	Previous   string     `json:"previous,omitempty"`
	NotifiedAt *time.Time `json:"notified_at,omitempty"`
	// SeenAt: first seen online since its notification; its timeout runs
	// from here.
	SeenAt *time.Time `json:"seen_at,omitempty"`
	// HealthyAt: first reported healthy; the stage timeout no longer
	// applies after it (an agent restart makes a device active again for
	// a while, which is no failure).
	HealthyAt *time.Time `json:"healthy_at,omitempty"`
	ChangedAt time.Time  `json:"changed_at"`
}

func (d *deviceRecord) notified() bool { return d.Stage >= 0 }

// Event is one change in a rollout, stored as the API shows it.
type Event = apiv1.RolloutEvent

// Event types.
const (
	EventCreated     = "created"
	EventStage       = "stage_started"
	EventStagePassed = "stage_passed"
	EventDevice      = "device"
	EventGate        = "gate_failed"
	EventPaused      = "paused"
	EventResumed     = "resumed"
	EventPromoted    = "promoted"
	EventAborted     = "aborted"
	EventRollback    = "rollback"
	EventCompleted   = "completed"
)

const (
	seqKey        = "rollout/seq"
	recordPrefix  = "rollout/r/"
	devicePrefix  = "rollout/d/"
	eventPrefix   = "rollout/e/"
	eventSeqPref  = "rollout/eseq/"
	lockKeyPrefix = "rollout/lock/"
)

func recordKey(id string) []byte            { return []byte(recordPrefix + id) }
func devicesPrefix(id string) []byte        { return []byte(devicePrefix + id + "/") }
func deviceKey(id, dev string) []byte       { return []byte(devicePrefix + id + "/" + dev) }
func eventsPrefix(id string) []byte         { return []byte(eventPrefix + id + "/") }
func eventSeqKey(id string) []byte          { return []byte(eventSeqPref + id) }
func lockPrefix(model string) []byte        { return []byte(lockKeyPrefix + model + "/") }
func lockKey(model, dev string) []byte      { return []byte(lockKeyPrefix + model + "/" + dev) }
func eventKey(id string, seq uint64) []byte { return []byte(eventPrefix + id + "/" + hex16(seq)) }

func hex16(v uint64) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}

func ended(state string) bool {
	return state == StateCompleted || state == StateRolledBack || state == StateAborted
}
