package apiv1

import "time"

// RolloutSpec is what an operator asks of a rollout (POST
// /api/v1/rollouts): a model version, the devices it goes to, and the
// stages it goes through. The control plane fills its defaults, so the
// Spec of a Rollout says everything the rollout does.
type RolloutSpec struct {
	Model    string   `json:"model"`
	Version  string   `json:"version"`
	Selector Selector `json:"selector"`
	// Stages run in order. Their sizes are cumulative: "count: 2", then
	// "percent: 20", then "percent: 100" is a canary of two devices, then
	// a fifth of the fleet, then all of it. The last stage must cover every
	// targeted device (percent: 100, or a count at least the target).
	Stages []Stage `json:"stages"`
	// OnFailure is the default of the stages' OnFailure.
	OnFailure string `json:"on_failure,omitempty"`
	// Health is when an agent reports the new version healthy once active
	// (it travels in the signed manifest); nil leaves it to each agent's
	// defaults.
	Health *HealthCheck `json:"health,omitempty"`
	// Supersede aborts running or paused rollouts of the same model that
	// share devices with this one, instead of refusing it.
	Supersede bool `json:"supersede,omitempty"`
	// CaptureShare asks the agents to capture this share (0..1) of the
	// new version's predictions, with their inputs, for retraining
	// (signed into the manifest; 0 captures none).
	CaptureShare float64 `json:"capture_share,omitempty"`
}

// Selector picks the devices of a rollout. Every field given must match
// (an empty selector is the whole fleet).
type Selector struct {
	Labels  map[string]string `json:"labels,omitempty"`
	Group   string            `json:"group,omitempty"`
	Profile string            `json:"profile,omitempty"`
	Devices []string          `json:"devices,omitempty"`
}

// Stage is one wave of a rollout.
type Stage struct {
	Name string `json:"name"`
	// Count or Percent (of the targeted devices) is the stage's
	// cumulative size: it is full once that many devices have been
	// notified and seen online. Offline devices are passed over (they
	// stay pending); the last stage takes every device, and those still
	// offline converge when they return.
	Count   int     `json:"count,omitempty"`
	Percent float64 `json:"percent,omitempty"`
	// Soak is how long the success gate must hold before the next stage
	// starts.
	Soak Duration `json:"soak,omitempty"`
	// Timeout is how long a device seen online has, from its notification
	// (or from coming online, if it was offline then), to report the new
	// version active and healthy; after it, it counts as failed.
	Timeout Duration    `json:"timeout,omitempty"`
	Success SuccessGate `json:"success"`
	Failure FailureGate `json:"failure"`
	Health  HealthGate  `json:"health"`
	// OnFailure is what a tripped failure gate does: OnFailurePause (wait
	// for an operator) or OnFailureRollback (return every device notified
	// so far to the version it ran before).
	OnFailure string `json:"on_failure,omitempty"`
	// Rate, if set, spreads the stage's notifications: PerMinute devices
	// in its first minute, Growth times more in each minute after.
	Rate *Rate `json:"rate,omitempty"`
}

// What a tripped failure gate does.
const (
	OnFailurePause    = "pause"
	OnFailureRollback = "rollback"
)

// SuccessGate is what a stage needs to pass.
type SuccessGate struct {
	// MinHealthyPercent of the devices notified so far and seen online
	// must be active and healthy (default 100).
	MinHealthyPercent *float64 `json:"min_healthy_percent,omitempty"`
}

// FailureGate bounds the failed devices among those notified so far and
// seen online. It trips when either bound is passed; with neither given,
// one failure trips it (MaxCount 0).
type FailureGate struct {
	MaxPercent *float64 `json:"max_percent,omitempty"`
	MaxCount   *int     `json:"max_count,omitempty"`
}

// HealthGate bounds what devices' telemetry says about the new version. A
// device that breaks a bound fails. Bounds are checked on a device once it
// has MinPredictions predictions on the new version (and, for latency, on
// the version it ran before).
type HealthGate struct {
	// MaxErrorPercent bounds failed inferences over all inferences.
	MaxErrorPercent *float64 `json:"max_error_percent,omitempty"`
	// MaxP95LatencyRatio bounds the device's p95 latency on the new
	// version over its p95 on the version it ran before.
	MaxP95LatencyRatio *float64 `json:"max_p95_latency_ratio,omitempty"`
	// MinPredictions (default 20).
	MinPredictions uint64 `json:"min_predictions,omitempty"`
}

// Rate is an exponential notification rate.
type Rate struct {
	PerMinute float64 `json:"per_minute"`
	Growth    float64 `json:"growth,omitempty"` // default 1: a constant rate
}

// HealthCheck is when an agent reports an active version healthy: after
// Predictions predictions or Seconds seconds, whichever comes first. Both
// 0 (not a nil HealthCheck) is healthy at once.
type HealthCheck struct {
	Predictions uint64 `json:"predictions"`
	Seconds     uint32 `json:"seconds"`
}

// Rollout states.
const (
	RolloutRunning    = "running"
	RolloutPaused     = "paused"
	RolloutCompleted  = "completed"
	RolloutRolledBack = "rolled_back"
	RolloutAborted    = "aborted"
)

// RolloutList is the answer to GET /api/v1/rollouts.
type RolloutList struct {
	Rollouts []Rollout `json:"rollouts"`
}

// Rollout is a rollout and its progress.
type Rollout struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Version string `json:"version"`
	// State is one of the Rollout states.
	State string `json:"state"`
	// Reason says why the rollout is paused, rolled back or aborted.
	Reason string `json:"reason"`
	// Stage is the name of the current (or last) stage.
	Stage           string          `json:"stage"`
	Targets         int             `json:"targets"`
	ReleaseSequence uint64          `json:"release_sequence"`
	Phases          map[string]int  `json:"phases"` // devices by phase
	Stages          []StageStatus   `json:"stages"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	EndedAt         *time.Time      `json:"ended_at"`
	Spec            RolloutSpec     `json:"spec"`
	Devices         []RolloutDevice `json:"devices"`
	// Events is every event, oldest first (GET /api/v1/rollouts/{id}
	// only).
	Events []RolloutEvent `json:"events,omitempty"`
}

// Ended reports whether the rollout is over: completed, rolled back or
// aborted.
func (r Rollout) Ended() bool {
	return r.State == RolloutCompleted || r.State == RolloutRolledBack || r.State == RolloutAborted
}

// StageStatus is one stage's progress.
type StageStatus struct {
	Name string `json:"name"`
	// State: pending, running or passed.
	State string `json:"state"`
	// Size is the number of devices seen online the stage needs (its
	// cumulative size).
	Size      int        `json:"size"`
	Notified  int        `json:"notified"` // devices this stage notified
	Healthy   int        `json:"healthy"`
	Failed    int        `json:"failed"`
	Offline   int        `json:"offline"`
	StartedAt *time.Time `json:"started_at"`
	GateMetAt *time.Time `json:"gate_met_at"`
	PassedAt  *time.Time `json:"passed_at"`
	Promoted  bool       `json:"promoted"`
}

// RolloutDevice is one device's place in a rollout.
type RolloutDevice struct {
	ID string `json:"id"`
	// Stage is the stage that notified the device ("" while pending).
	Stage      string     `json:"stage"`
	Phase      string     `json:"phase"`
	Reason     string     `json:"reason"`
	Previous   string     `json:"previous_version"`
	NotifiedAt *time.Time `json:"notified_at"`
	ChangedAt  time.Time  `json:"changed_at"`
}

// RolloutEvents is the answer to GET /api/v1/rollouts/{id}/events.
type RolloutEvents struct {
	Events []RolloutEvent `json:"events"`
}

// RolloutEvent is one change in a rollout.
type RolloutEvent struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Stage   string    `json:"stage,omitempty"`
	Device  string    `json:"device,omitempty"`
	Phase   string    `json:"phase,omitempty"`
	Message string    `json:"message"`
}
