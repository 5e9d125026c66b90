package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/internal/names"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Spec is what an operator asks for: a model version, the devices it goes
// to, and the stages it goes through. The API takes it as JSON; the CLI
// also reads it from YAML (the same field names). Normalize fills the
// defaults, so a stored Spec says everything the engine will do. The
// spec's types are the API's (apiv1), so that its JSON is declared once:
// the engine stores a spec as the API takes it.
type (
	Spec        = apiv1.RolloutSpec
	Selector    = apiv1.Selector
	Stage       = apiv1.Stage
	SuccessGate = apiv1.SuccessGate
	FailureGate = apiv1.FailureGate
	HealthGate  = apiv1.HealthGate
	Rate        = apiv1.Rate
	HealthCheck = apiv1.HealthCheck
	// Duration is a time.Duration written as a string ("30s", "2h") in
	// JSON and YAML.
	Duration = apiv1.Duration
)

func healthProto(h *HealthCheck) *shoalv1.HealthCheck {
	if h == nil {
		return nil
	}
	return &shoalv1.HealthCheck{MinPredictions: h.Predictions, MinSeconds: h.Seconds}
}

// On-failure actions.
const (
	ActionPause    = apiv1.OnFailurePause
	ActionRollback = apiv1.OnFailureRollback
)

// Defaults Normalize fills in.
const (
	DefaultTimeout        = 10 * time.Minute
	DefaultMinPredictions = 20
	maxStages             = 20
	maxSelectorDevices    = 100_000
)

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
func Normalize(s *Spec) error {
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
		if err := normalizeStage(st, s.OnFailure); err != nil {
			return fmt.Errorf("stage %q: %w", st.Name, err)
		}
	}
	return nil
}

func normalizeStage(st *Stage, onFailure string) error {
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

// stageSize is the stage's cumulative size over targets devices.
func stageSize(st *Stage, targets int) int {
	if st.Count > 0 {
		return min(st.Count, targets)
	}
	return min(targets, int(math.Ceil(st.Percent/100*float64(targets)-1e-9)))
}

// stageAllowed is how many notifications the stage's rate allows by
// elapsed time since it started: PerMinute·Growth^k in its k-th minute.
func stageAllowed(st *Stage, elapsed time.Duration) int {
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

// checkName checks a spec's name field: absent, or a name (names.Check).
func checkName(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s is missing", field)
	}
	return names.Check(field, s)
}
