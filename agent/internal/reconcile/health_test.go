package reconcile

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The tests with the fake clock drive the health check by hand
// (checkHealth is what the watcher runs); the ones with Run use the real
// clock and the watcher's own timers.

// health returns model name's status in the reconciler's state.
func (e *testEnv) health(name string) *shoalv1.ModelStatus {
	e.t.Helper()
	ms := modelStatus(e.r.State(), name)
	if ms == nil {
		e.t.Fatalf("no status for model %q in %v", name, e.r.State())
	}
	return ms
}

// predictN runs n predictions on the serving model name.
func (e *testEnv) predictN(name string, n int) {
	e.t.Helper()
	for range n {
		if err := e.predict(name); err != nil {
			e.t.Fatal(err)
		}
	}
}

// checkNoFlap fails if a version, once reported healthy, is later
// reported active and not healthy without being activated again.
func (e *testEnv) checkNoFlap(name string) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	healthy := map[string]bool{} // by version@sha@active_since
	for i, rs := range e.reports {
		ms := modelStatus(rs, name)
		if ms.GetActive() == nil {
			continue
		}
		key := fmt.Sprint(ms.GetActive().GetVersion(), "@", ms.GetActive().GetSha256(), "@", ms.GetActiveSinceUnixMs())
		switch {
		case ms.GetHealthy():
			healthy[key] = true
		case healthy[key]:
			e.t.Errorf("report %d: version %s of %q was healthy and is not any more: %v", i, ms.GetActive().GetVersion(), name, ms)
		}
	}
}

func TestHealthyAfterPredictions(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HealthMinPredictions, c.HealthMinTime = 3, -1 })
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	ms := modelStatus(e.last(), "m")
	if ms.GetPhase() != shoalv1.Phase_PHASE_ACTIVE || ms.GetHealthy() || ms.GetActiveSinceUnixMs() != e.clock.Now().UnixMilli() {
		t.Fatalf("after activation: %v; want ACTIVE, not healthy, active since %d", ms, e.clock.Now().UnixMilli())
	}
	e.clock.Advance(time.Hour) // time alone does not count: that criterion is off
	e.predictN("m", 2)
	if next := e.r.checkHealth(); next != DefaultHealthPoll {
		t.Errorf("checkHealth asked to look again in %s; want the poll interval, %s", next, DefaultHealthPoll)
	}
	if e.health("m").GetHealthy() {
		t.Fatal("healthy after 2 of 3 predictions")
	}
	e.predictN("m", 1)
	if next := e.r.checkHealth(); next != 0 {
		t.Errorf("checkHealth asked to look again in %s once healthy", next)
	}
	if ms := modelStatus(e.last(), "m"); !ms.GetHealthy() || ms.GetActiveSinceUnixMs() != e.clock.Now().Add(-time.Hour).UnixMilli() {
		t.Errorf("after 3 predictions the last report says %v; want healthy, active since activation", ms)
	}
	// Nothing changes any more: no more reports.
	n := e.reportCount()
	e.r.checkHealth()
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if got := e.reportCount(); got != n {
		t.Errorf("%d more reports with nothing changed", got-n)
	}
	e.checkNoFlap("m")
}

func TestHealthyAfterTime(t *testing.T) {
	// The default time (30s) and no prediction criterion; a long poll
	// interval shows the deadline itself is scheduled.
	e := newEnv(t, func(c *Config) { c.HealthMinPredictions, c.HealthPoll = -1, time.Hour })
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	e.predictN("m", DefaultHealthMinPredictions+1) // counts for nothing: that criterion is off
	e.clock.Advance(DefaultHealthMinTime - time.Second)
	if next := e.r.checkHealth(); next != time.Second {
		t.Errorf("checkHealth asked to look again in %s; want the 1s left", next)
	}
	if e.health("m").GetHealthy() {
		t.Fatal("healthy a second before its time")
	}
	e.clock.Advance(time.Second)
	e.r.checkHealth()
	if ms := modelStatus(e.last(), "m"); !ms.GetHealthy() {
		t.Errorf("after %s: %v; want healthy", DefaultHealthMinTime, ms)
	}
}

func TestHealthyAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		minPreds int64
		minTime  time.Duration
		check    *shoalv1.HealthCheck
	}{
		{"defaults off", -1, -1, nil},
		{"manifest zero", 0, 0, &shoalv1.HealthCheck{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.HealthMinPredictions, c.HealthMinTime = tc.minPreds, tc.minTime })
			m := e.manifestFor("m", "1", modelBytes(t), 1)
			m.HealthCheck = tc.check
			e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
			ms := modelStatus(e.last(), "m")
			if ms.GetPhase() != shoalv1.Phase_PHASE_ACTIVE || !ms.GetHealthy() || ms.GetActiveSinceUnixMs() != e.clock.Now().UnixMilli() {
				t.Errorf("after activation, with no prediction and no time passed: %v; want ACTIVE and healthy", ms)
			}
		})
	}
}

func TestNewVersionResetsHealthy(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HealthMinPredictions, c.HealthMinTime = 1, -1 })
	m1 := e.manifestFor("m", "1", modelBytes(t), 1)
	m2 := e.manifestFor("m", "2", variant(t, "2"), 2)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m1, nil)))
	e.predictN("m", 1)
	e.r.checkHealth()
	if !e.health("m").GetHealthy() {
		t.Fatal("version 1 not healthy after its prediction")
	}
	first := e.health("m").GetActiveSinceUnixMs()

	e.clock.Advance(time.Minute)
	e.r.pass(context.Background(), desired(t, 2, e.seal(m2, nil)))
	ms := modelStatus(e.last(), "m")
	if ms.GetActive().GetVersion() != "2" || ms.GetHealthy() || ms.GetActiveSinceUnixMs() != first+time.Minute.Milliseconds() {
		t.Fatalf("after activating version 2: %v; want it not healthy, active since %d", ms, first+time.Minute.Milliseconds())
	}
	e.predictN("m", 1)
	e.r.checkHealth()
	if ms := modelStatus(e.last(), "m"); ms.GetActive().GetVersion() != "2" || !ms.GetHealthy() {
		t.Errorf("version 2 after its prediction: %v; want healthy", ms)
	}

	// A rollback to version 1 is a new activation too.
	rb := proto.Clone(m1).(*shoalv1.DeploymentManifest)
	rb.Rollback = true
	e.r.pass(context.Background(), desired(t, 3, e.seal(rb, nil)))
	if ms := modelStatus(e.last(), "m"); ms.GetActive().GetVersion() != "1" || ms.GetHealthy() {
		t.Errorf("after the rollback: %v; want version 1, not healthy", ms)
	}
	e.checkNoFlap("m")
}

func TestManifestHealthCheckWinsOverDefaults(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HealthMinPredictions, c.HealthMinTime = 1, -1 })
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	m.HealthCheck = &shoalv1.HealthCheck{MinPredictions: 3, MinSeconds: 60}
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	e.predictN("m", 2)
	e.clock.Advance(59 * time.Second)
	e.r.checkHealth()
	if e.health("m").GetHealthy() {
		t.Fatal("healthy by the defaults (1 prediction) although the manifest asks for 3 or 60s")
	}
	e.clock.Advance(time.Second)
	e.r.checkHealth()
	if !e.health("m").GetHealthy() {
		t.Error("not healthy after the manifest's 60s")
	}
}

// TestVersionLoadedAtStart: a version serving before the reconciler is
// made (loaded from disk) started serving then; it waits for the desired
// state to know its health check.
func TestVersionLoadedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		deploys bool // the desired state deploys the serving version
		preds   int  // predictions it then needs
	}{
		{"deployed", true, 2},
		{"not deployed", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := modelBytes(t)
			e := newEnv(t, func(c *Config) {
				c.HealthMinPredictions, c.HealthMinTime = -1, -1 // the defaults: healthy at once
				m, err := inference.Open(b, inference.Ref{Name: "m", Version: "1", SHA256: digest(b), ReleaseSequence: 1}, onnxrt.Options{})
				if err != nil {
					t.Fatal(err)
				}
				c.Models.Swap(m)
			})
			start := e.clock.Now().UnixMilli()
			e.clock.Advance(time.Minute)
			e.r.checkHealth()
			ms := e.health("m")
			if ms.GetActive().GetVersion() != "1" || ms.GetHealthy() || ms.GetActiveSinceUnixMs() != start {
				t.Fatalf("before any desired state: %v; want version 1, not healthy, active since %d", ms, start)
			}
			m := e.manifestFor("m", "1", b, 1)
			m.HealthCheck = &shoalv1.HealthCheck{MinPredictions: 2}
			var envs [][]byte
			if tc.deploys {
				envs = append(envs, e.seal(m, nil))
			}
			e.r.pass(context.Background(), desired(t, 1, envs...))
			if got := e.serving("m"); got != "1" || e.srv.requests() != nil {
				t.Fatalf("serving %q after %d requests; want version 1 kept, nothing downloaded", got, len(e.srv.requests()))
			}
			if healthy := e.health("m").GetHealthy(); healthy != (tc.preds == 0) {
				t.Fatalf("after the desired state: healthy %v; want %v", healthy, tc.preds == 0)
			}
			e.predictN("m", tc.preds)
			e.r.checkHealth()
			if ms := modelStatus(e.last(), "m"); !ms.GetHealthy() || ms.GetActiveSinceUnixMs() != start {
				t.Errorf("after %d predictions: %v; want healthy, active since %d", tc.preds, ms, start)
			}
		})
	}
}

// runEnv is a testEnv on the real clock whose Run is running; its reports
// also arrive on the returned channel.
func runEnv(t *testing.T, tweak func(*Config)) (*testEnv, <-chan *shoalv1.ReportedState) {
	t.Helper()
	reports := make(chan *shoalv1.ReportedState, 1024)
	var e *testEnv
	e = newEnv(t, func(c *Config) {
		c.Now = nil // real clock: the watcher's timers are real
		c.Report = func(rs *shoalv1.ReportedState) {
			e.mu.Lock()
			e.reports = append(e.reports, rs)
			e.mu.Unlock()
			reports <- rs
		}
		if tweak != nil {
			tweak(c)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e, reports
}

// fresh makes a manifest valid on the real clock.
func fresh(m *shoalv1.DeploymentManifest) *shoalv1.DeploymentManifest {
	m.IssuedAtUnixMs = time.Now().UnixMilli()
	m.ExpiresAtUnixMs = time.Now().Add(time.Hour).UnixMilli()
	return m
}

func waitReport(t *testing.T, reports <-chan *shoalv1.ReportedState, what string, cond func(*shoalv1.ReportedState) bool) *shoalv1.ReportedState {
	t.Helper()
	deadline := time.After(shoaltest.Patience)
	for {
		select {
		case rs := <-reports:
			if cond(rs) {
				return rs
			}
		case <-deadline:
			t.Fatalf("no report with %s within %s", what, shoaltest.Patience)
		}
	}
}

// TestRunNoticesPredictions: Run's watcher notices the prediction count
// reaching its threshold, also while another model's download is under
// way (a long pass).
func TestRunNoticesPredictions(t *testing.T) {
	e, reports := runEnv(t, func(c *Config) {
		c.HealthMinPredictions, c.HealthMinTime, c.HealthPoll = 2, -1, 5*time.Millisecond
		c.StallTimeout = time.Hour // the second model's download stalls until the test ends
	})
	a := e.seal(fresh(e.manifestFor("a", "1", modelBytes(t), 1)), nil)
	e.r.SetDesired(desired(t, 1, a))
	waitReport(t, reports, "a active", func(rs *shoalv1.ReportedState) bool {
		ms := modelStatus(rs, "a")
		if ms.GetPhase() == shoalv1.Phase_PHASE_ACTIVE && ms.GetHealthy() {
			t.Fatalf("a healthy before any prediction: %v", ms)
		}
		return ms.GetPhase() == shoalv1.Phase_PHASE_ACTIVE && ms.GetActiveSinceUnixMs() > 0
	})
	<-e.srv.started // a's download

	e.srv.mu.Lock()
	e.srv.hangAt = 10
	e.srv.mu.Unlock()
	b := e.seal(fresh(e.manifestFor("b", "1", variant(t, "b"), 1)), nil)
	e.r.SetDesired(desired(t, 2, a, b))
	select {
	case <-e.srv.started: // b's download, which now stalls
	case <-time.After(shoaltest.Patience):
		t.Fatalf("b's download did not start within %s", shoaltest.Patience)
	}
	e.predictN("a", 2)
	rs := waitReport(t, reports, "a healthy", func(rs *shoalv1.ReportedState) bool { return modelStatus(rs, "a").GetHealthy() })
	if ms := modelStatus(rs, "b"); ms.GetPhase() != shoalv1.Phase_PHASE_DOWNLOADING {
		t.Errorf("when a turned healthy b was %v; want it still downloading", ms)
	}
	e.checkNoFlap("a")
}

// TestRunNoticesTheDeadline: Run's watcher wakes at the deadline.
func TestRunNoticesTheDeadline(t *testing.T) {
	const minTime = 50 * time.Millisecond
	e, reports := runEnv(t, func(c *Config) {
		c.HealthMinPredictions, c.HealthMinTime, c.HealthPoll = -1, minTime, time.Hour
	})
	e.r.SetDesired(desired(t, 1, e.seal(fresh(e.manifestFor("m", "1", modelBytes(t), 1)), nil)))
	rs := waitReport(t, reports, "m healthy", func(rs *shoalv1.ReportedState) bool { return modelStatus(rs, "m").GetHealthy() })
	ms := modelStatus(rs, "m")
	if since := ms.GetActiveSinceUnixMs(); since == 0 || rs.GetReportedAtUnixMs()-since < minTime.Milliseconds() {
		t.Errorf("healthy at %d, active since %d: sooner than %s", rs.GetReportedAtUnixMs(), since, minTime)
	}
}
