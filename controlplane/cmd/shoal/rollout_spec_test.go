package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// TestParseRolloutSpec: a YAML (or JSON) spec file becomes the typed spec
// the API takes: an unquoted version is a name, durations are strings, an
// explicit 0 is kept apart from an absent field, and what the spec does
// not have is refused, naming it.
func TestParseRolloutSpec(t *testing.T) {
	zero, zeroF, fifty := 0, 0.0, 50.0
	for _, tc := range []struct {
		name, file string
		want       apiv1.RolloutSpec
		err        string
	}{
		{name: "unquoted version, durations", file: `
model: summer
version: 2
selector: {labels: {env: prod}, devices: [pump-1]}
on_failure: rollback
stages:
  - {name: canary, count: 2, soak: 30m, timeout: 1h30m}
  - {name: all, percent: 100, rate: {per_minute: 10, growth: 2}}
`, want: apiv1.RolloutSpec{Model: "summer", Version: "2", OnFailure: "rollback",
			Selector: apiv1.Selector{Labels: map[string]string{"env": "prod"}, Devices: []string{"pump-1"}},
			Stages: []apiv1.Stage{
				{Name: "canary", Count: 2, Soak: apiv1.Duration(30 * time.Minute), Timeout: apiv1.Duration(90 * time.Minute)},
				{Name: "all", Percent: 100, Rate: &apiv1.Rate{PerMinute: 10, Growth: 2}},
			}}},
		{name: "explicit zeros", file: `
model: summer
version: "1.10"
health: {predictions: 0, seconds: 0}
stages:
  - name: all
    percent: 100
    success: {min_healthy_percent: 0}
    failure: {max_count: 0, max_percent: 50}
    health: {max_error_percent: 0}
`, want: apiv1.RolloutSpec{Model: "summer", Version: "1.10", Health: &apiv1.HealthCheck{},
			Stages: []apiv1.Stage{{Name: "all", Percent: 100,
				Success: apiv1.SuccessGate{MinHealthyPercent: &zeroF},
				Failure: apiv1.FailureGate{MaxCount: &zero, MaxPercent: &fifty},
				Health:  apiv1.HealthGate{MaxErrorPercent: &zeroF}}}}},
		{name: "JSON", file: `{"model": "summer", "version": "3", "supersede": true, "stages": [{"percent": 100, "soak": "10s"}]}`,
			want: apiv1.RolloutSpec{Model: "summer", Version: "3", Supersede: true, Stages: []apiv1.Stage{{Percent: 100, Soak: apiv1.Duration(10 * time.Second)}}}},
		{name: "misspelt field", file: "model: summer\nversion: 2\nstages:\n  - {name: all, percent: 100, sok: 1h}\n", err: `unknown field "sok"`},
		{name: "misspelt gate", file: "model: summer\nversion: 2\nstages:\n  - {percent: 100, failure: {max_cont: 1}}\n", err: `unknown field "max_cont"`},
		{name: "duration as a number", file: "model: summer\nversion: 2\nstages:\n  - {percent: 100, soak: 30}\n", err: "want a duration"},
		{name: "not a mapping", file: "- model: summer\n", err: "want a mapping"},
		{name: "not YAML", file: "model: [summer\n", err: "neither YAML nor JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRolloutSpec([]byte(tc.file))
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v; want it to say %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "" && !reflect.DeepEqual(got, tc.want):
				t.Errorf("spec\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}
