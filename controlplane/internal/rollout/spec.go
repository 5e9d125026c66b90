package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/internal/names"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Spec is what an operator asks for: a model version, the devices it goes
// to, and the stages it goes through. The API takes it as JSON; the CLI
// also reads it from YAML (the same field names). Normalize fills the
// defaults, so a stored Spec says everything the engine will do.
type Spec struct {
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
	// OnFailure is what a tripped failure gate does: "pause" (wait for an
	// operator) or "rollback" (return every device notified so far to the
	// version it ran before).
	OnFailure string `json:"on_failure,omitempty"`
	// Rate, if set, spreads the stage's notifications: PerMinute devices
	// in its first minute, Growth times more in each minute after.
	Rate *Rate `json:"rate,omitempty"`
}

// SuccessGate is what a stage needs to pass.
type SuccessGate struct {
	// MinHealthyPercent of the devices notified so far and seen online
	// must be active and healthy (default 100).
	MinHealthyPercent *float64 `json:"min_healthy_percent,omitempty"`
}

// FailureGate bounds the failed devices among those notified so far and
// seen online. It trips when either bound is passed; with neither given,
// one failure trips it.
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
// Predictions predictions or Seconds seconds, whichever comes first.
type HealthCheck struct {
	Predictions uint64 `json:"predictions"`
	Seconds     uint32 `json:"seconds"`
}

func (h *HealthCheck) proto() *shoalv1.HealthCheck {
	if h == nil {
		return nil
	}
	return &shoalv1.HealthCheck{MinPredictions: h.Predictions, MinSeconds: h.Seconds}
}

// On-failure actions.
const (
	ActionPause    = "pause"
	ActionRollback = "rollback"
)

// Defaults Normalize fills in.
const (
	DefaultTimeout        = 10 * time.Minute
	DefaultMinPredictions = 20
	maxStages             = 20
	maxSelectorDevices    = 100_000
)

// Duration is a time.Duration written as a string ("30s", "2h") in JSON
// and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string ("30s", "1h30m").
func (d *Duration) UnmarshalJSON(b []byte) error {
	// An UnmarshalTypeError lets encoding/json name the field.
	bad := &json.UnmarshalTypeError{Value: fmt.Sprintf("%s (want a duration such as \"30s\" or \"2h\")", b), Type: reflect.TypeFor[Duration]()}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return bad
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return bad
	}
	*d = Duration(v)
	return nil
}

// ParseSpec decodes a JSON spec strictly: an unknown field is an error
// naming it (a misspelt gate must not be silently ignored).
func ParseSpec(data []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("rollout spec: %w", err)
	}
	if dec.More() {
		return Spec{}, errors.New("rollout spec: more than one JSON value")
	}
	return s, nil
}

// Normalize checks the spec and fills its defaults. It returns an error
// naming the first field that is wrong.
func (s *Spec) Normalize() error {
	if err := checkName("model", s.Model); err != nil {
		return err
	}
	if err := checkName("version", s.Version); err != nil {
		return err
	}
	if len(s.Selector.Devices) > maxSelectorDevices {
		return fmt.Errorf("selector.devices lists %d devices; at most %d are allowed", len(s.Selector.Devices), maxSelectorDevices)
	}
	if !(s.CaptureShare >= 0 && s.CaptureShare <= 1) {
		return fmt.Errorf("capture_share %v: want a share from 0 to 1, such as 0.05", s.CaptureShare)
	}
	switch s.OnFailure {
	case "":
		s.OnFailure = ActionPause
	case ActionPause, ActionRollback:
	default:
		return fmt.Errorf("on_failure %q: want %q or %q", s.OnFailure, ActionPause, ActionRollback)
	}
	if len(s.Stages) == 0 {
		return errors.New("stages: a rollout needs at least one stage (e.g. {\"name\": \"all\", \"percent\": 100})")
	}
	if len(s.Stages) > maxStages {
		return fmt.Errorf("stages: %d stages; at most %d are allowed", len(s.Stages), maxStages)
	}
	seen := map[string]bool{}
	for i := range s.Stages {
		st := &s.Stages[i]
		if st.Name == "" {
			st.Name = fmt.Sprintf("stage-%d", i+1)
		}
		if err := checkName(fmt.Sprintf("stages[%d].name", i), st.Name); err != nil {
			return err
		}
		if seen[st.Name] {
			return fmt.Errorf("stages[%d].name %q is used twice; stage names must differ", i, st.Name)
		}
		seen[st.Name] = true
		if err := st.normalize(s.OnFailure); err != nil {
			return fmt.Errorf("stage %q: %w", st.Name, err)
		}
	}
	return nil
}

func (st *Stage) normalize(onFailure string) error {
	switch {
	case st.Count < 0:
		return fmt.Errorf("count %d is negative", st.Count)
	case st.Count > 0 && st.Percent != 0:
		return errors.New("give count or percent, not both")
	case st.Count == 0 && st.Percent == 0:
		return errors.New("give its size: count (devices) or percent (of the targeted devices)")
	case st.Count == 0 && !(st.Percent > 0 && st.Percent <= 100):
		return fmt.Errorf("percent %v: want more than 0 and at most 100", st.Percent)
	}
	if st.Soak < 0 {
		return fmt.Errorf("soak %s is negative", st.Soak)
	}
	switch {
	case st.Timeout < 0:
		return fmt.Errorf("timeout %s is negative", st.Timeout)
	case st.Timeout == 0:
		st.Timeout = Duration(DefaultTimeout)
	}
	if p := st.Success.MinHealthyPercent; p == nil {
		v := 100.0
		st.Success.MinHealthyPercent = &v
	} else if !(*p >= 0 && *p <= 100) {
		return fmt.Errorf("success.min_healthy_percent %v: want 0 to 100", *p)
	}
	f := &st.Failure
	if f.MaxPercent == nil && f.MaxCount == nil {
		zero := 0
		f.MaxCount = &zero
	}
	if f.MaxPercent != nil && !(*f.MaxPercent >= 0 && *f.MaxPercent <= 100) {
		return fmt.Errorf("failure.max_percent %v: want 0 to 100", *f.MaxPercent)
	}
	if f.MaxCount != nil && *f.MaxCount < 0 {
		return fmt.Errorf("failure.max_count %d is negative", *f.MaxCount)
	}
	h := &st.Health
	if p := h.MaxErrorPercent; p != nil && !(*p >= 0 && *p <= 100) {
		return fmt.Errorf("health.max_error_percent %v: want 0 to 100", *p)
	}
	if r := h.MaxP95LatencyRatio; r != nil && !(*r > 0 && !math.IsInf(*r, 1)) {
		return fmt.Errorf("health.max_p95_latency_ratio %v: want a positive ratio such as 1.5", *r)
	}
	if h.MinPredictions == 0 {
		h.MinPredictions = DefaultMinPredictions
	}
	switch st.OnFailure {
	case "":
		st.OnFailure = onFailure
	case ActionPause, ActionRollback:
	default:
		return fmt.Errorf("on_failure %q: want %q or %q", st.OnFailure, ActionPause, ActionRollback)
	}
	if r := st.Rate; r != nil {
		if !(r.PerMinute > 0 && !math.IsInf(r.PerMinute, 1)) {
			return fmt.Errorf("rate.per_minute %v: want a positive number of devices", r.PerMinute)
		}
		if r.Growth == 0 {
			r.Growth = 1
		}
		if !(r.Growth >= 1 && r.Growth <= 100) {
			return fmt.Errorf("rate.growth %v: want 1 (constant) to 100", r.Growth)
		}
	}
	return nil
}

// size is the stage's cumulative size over targets devices.
func (st *Stage) size(targets int) int {
	if st.Count > 0 {
		return min(st.Count, targets)
	}
	return min(targets, int(math.Ceil(st.Percent/100*float64(targets)-1e-9)))
}

// allowed is how many notifications the stage's rate allows by elapsed
// time since it started: PerMinute·Growth^k in its k-th minute.
func (st *Stage) allowed(elapsed time.Duration) int {
	r := st.Rate
	if r == nil {
		return math.MaxInt
	}
	minutes := int(elapsed / time.Minute)
	total, per := 0.0, r.PerMinute
	for k := 0; k <= minutes; k++ {
		total += per
		if total >= math.MaxInt32 {
			return math.MaxInt
		}
		per *= r.Growth
	}
	return int(total)
}

func checkName(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s is missing", field)
	}
	if len(s) > 128 {
		return fmt.Errorf("%s is %d characters; at most 128 are allowed", field, len(s))
	}
	if i, r, bad := names.FirstBad(s); bad {
		return fmt.Errorf("%s %q has %q at byte %d; use letters, digits, '.', '_' and '-'", field, s, r, i)
	}
	return nil
}
