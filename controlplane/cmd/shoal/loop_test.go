package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// TestLoopCommands sets, shows and refuses retraining policies through the
// CLI against a real control plane, and lists (no) runs.
func TestLoopCommands(t *testing.T) {
	cp := controltest.Start(t)
	s := cp.URL()
	if _, _, err := run(t, s, "loop", "policy", "summer"); err == nil {
		t.Error("policy of a model that has none: no error")
	}
	out, _, err := run(t, s, "loop", "policy", "summer", "--retrain", "--captures", "--canary", "2,100%", "--soak", "30m", "--cooldown", "2h")
	for _, want := range []string{"retrain", "true", "captures", "2h0m0s", `"percent":100`, `"soak":"30m0s"`, `"on_failure":"rollback"`} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("set policy: %q %v; want %q", out, err, want)
		}
	}
	out, _, err = run(t, s, "--json", "loop", "policy", "summer")
	var p client.LoopPolicy
	if err != nil || json.Unmarshal([]byte(out), &p) != nil || !p.Retrain || !p.Captures || p.Cooldown.D() != 2*time.Hour || p.Rollout == nil || len(p.Rollout.Stages) != 2 {
		t.Fatalf("policy --json: %q %v", out, err)
	}
	out, _, err = run(t, s, "loop", "policy", "summer", "--retrain", "--no-rollout")
	if err != nil || !strings.Contains(out, "none: stop at the signed candidate") {
		t.Errorf("--no-rollout: %q %v", out, err)
	}
	if _, _, err := run(t, s, "loop", "policy", "summer", "--retrain", "--canary", "two"); err == nil || !strings.Contains(err.Error(), `"two"`) {
		t.Errorf("bad --canary: %v", err)
	}
	if _, _, err := run(t, s, "loop", "policy", "summer", "--retrain", "--canary", "1,50%"); err == nil || !strings.Contains(err.Error(), "100") {
		t.Errorf("a template whose last stage leaves devices out: %v", err)
	}
	out, _, err = run(t, s, "loop", "summer")
	if err != nil || !strings.Contains(out, "no retraining runs of summer yet") {
		t.Errorf("loop with no runs: %q %v", out, err)
	}
}
