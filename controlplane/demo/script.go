package demo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
)

// Bounds on the script's waits.
const (
	enrollTimeout = 30 * time.Second
	jobTimeout    = 3 * time.Minute
	rolloutWait   = 3 * time.Minute
	retrainWait   = 3 * time.Minute
	shutdownWait  = 30 * time.Second
	poll          = 500 * time.Millisecond
)

// script is the demo's steps and what they share.
type script struct {
	ctx   context.Context
	c     *client.Client
	cfg   *Config
	say   func(string, ...any)
	pred  *predictor
	fleet *fleet

	v1      string
	printed map[string]bool // drift windows shown
	since   time.Time       // show drift windows that start from here
}

// run runs a step; once ctx has ended (--duration, Ctrl-C, a part of the
// fleet that stopped), its error is no error: the demo ends wherever it
// is.
func (s *script) run(step func() error) error {
	if s.ctx.Err() != nil {
		return nil
	}
	if err := step(); err != nil && s.ctx.Err() == nil {
		return err
	}
	return nil
}

// enroll starts the agents and waits until every one is online.
func (s *script) enroll() error {
	if err := s.fleet.addAgents(s.ctx, s.cfg.Agents); err != nil {
		return err
	}
	return waitFor(s.ctx, enrollTimeout, func() (bool, string) {
		devs, err := s.c.Devices(s.ctx)
		if err != nil {
			return false, "list devices: " + err.Error()
		}
		online := 0
		for _, dv := range devs {
			if dv.Online {
				online++
			}
		}
		return online == s.cfg.Agents, fmt.Sprintf("%d/%d agents enrolled and online", online, s.cfg.Agents)
	}, func(line string) { s.say("%s", line) })
}

// loop is the demo proper: data set, train, roll out, drift, retrain.
func (s *script) loop() error {
	ctx, c, say := s.ctx, s.c, s.say

	// The data set.
	ds, err := c.PushDataset(ctx, datasetName, "state", "classification", strings.NewReader(sensorCSV(trainRows, 0, 0)))
	if err != nil {
		return fmt.Errorf("push dataset: %w", err)
	}
	say("pushed dataset %s v%d: %d rows of %s → %s (classes %s), sha256 %s…",
		ds.Name, ds.Version, ds.Rows, strings.Join(sensorFeatures, ", "), ds.Label, strings.Join(ds.Classes, "/"), ds.SHA256[:12])

	// v1: a training job; the control plane gates the model and signs it.
	spec := client.JobSpec{Dataset: ds.Name, Model: modelName, TrainingSpec: client.TrainingSpec{Trainer: "mlp", Hidden: []int{16}, Epochs: 60, Seed: 1}}
	say("training %s v1: trainer %s (hidden %v), %d epochs at most  [shoal train --dataset %s --model %s --trainer mlp --hidden 16 --epochs 60]",
		modelName, spec.Trainer, spec.Hidden, spec.Epochs, ds.Name, modelName)
	job, err := c.SubmitJob(ctx, spec)
	if err != nil {
		return fmt.Errorf("submit training job: %w", err)
	}
	if job, err = s.waitJob(job.ID); err != nil {
		return err
	}
	s.v1 = job.Result.ModelVersion
	if len(job.Result.Lineage.Classes) > 0 {
		s.pred.setClasses(job.Result.Lineage.Classes)
	}
	say("model %s version %s: signed, sha256 %s…", modelName, s.v1, job.Result.ModelSHA256[:12])

	// Roll v1 out in stages.
	if err := s.rollout(s.v1); err != nil {
		return err
	}
	if err := s.pred.round(ctx, s.fleet.agents, true, false); err != nil {
		return err
	}

	// The policies.
	policy := client.DriftPolicy{Metric: "psi", Threshold: 0.2, MinSamples: 500, Windows: 2}
	if _, err := c.SetDriftPolicy(ctx, modelName, policy); err != nil {
		return fmt.Errorf("set drift policy: %w", err)
	}
	say("drift policy: alert when PSI ≥ %.1f in %d windows in a row of ≥ %d samples  [shoal drift policy %s --metric psi --threshold %.1f --min-samples %d --windows %d]",
		policy.Threshold, policy.Windows, policy.MinSamples, modelName, policy.Threshold, policy.MinSamples, policy.Windows)
	tmpl := retrainRollout()
	if _, err := c.SetLoopPolicy(ctx, modelName, client.LoopPolicy{Retrain: true, Rollout: &tmpl, Cooldown: apiv1.Duration(time.Hour)}); err != nil {
		return fmt.Errorf("set retraining policy: %w", err)
	}
	say("retraining policy: on an alert, retrain on the latest version of %s, gate, roll out canary 1 → 100%% (soak 3s, rolled back on failure)  [shoal loop policy %s --retrain --canary 1,100%% --soak 3s --timeout 1m --on-failure rollback --cooldown 1h]",
		datasetName, modelName)

	// Calm: the training distribution.
	say("streaming sensor readings from the training distribution: %d per agent every %s (about %d per %s drift window)",
		s.pred.batch, s.cfg.Interval, s.pred.batch*s.cfg.Agents*max(1, int(driftWindow/s.cfg.Interval)), driftWindow)
	s.printed = map[string]bool{}
	s.since = time.Now()
	calm := 0
	if err := s.stream(func() (bool, error) {
		n, err := s.showDrift()
		calm += n
		return calm >= 3, err
	}); err != nil {
		return err
	}
	alerts, err := c.Alerts(ctx, modelName)
	if err != nil {
		return fmt.Errorf("list drift alerts: %w", err)
	}
	say("no drift: %d alerts", len(alerts))

	// The sensors age.
	say("the sensors age: temperature now reads %.0f°C high (+%d std)", float64(shiftStd)*sensorStd[sensorShifted], shiftStd)
	s.pred.setShift(shiftStd)
	ds2, err := c.PushDataset(ctx, datasetName, "state", "classification", strings.NewReader(sensorCSV(trainRows, fieldRows, shiftStd)))
	if err != nil {
		return fmt.Errorf("push dataset v2: %w", err)
	}
	say("pushed dataset %s v%d: the %d training rows + %d labelled field rows with the shift (labelled field data, as agents' captures with POST /v1/feedback would give), sha256 %s…",
		ds2.Name, ds2.Version, trainRows, fieldRows, ds2.SHA256[:12])

	run, err := s.followRetraining()
	if err != nil {
		return err
	}
	say("the loop closed: %s v%s (drifted) → v%s, trained on %s v%d, gated, canaried and promoted by rollout %s", modelName, run.FromVersion, run.Version, run.Dataset, run.DatasetVersion, run.Rollout)
	return s.pred.round(ctx, s.fleet.agents, true, false)
}

// retrainRollout is the retraining policy's rollout: a canary of one
// device, then all of them, each soaking 3s, rolled back on a failure
// (`--canary 1,100% --soak 3s --timeout 1m --on-failure rollback`).
func retrainRollout() apiv1.RolloutSpec {
	soak, timeout := apiv1.Duration(3*time.Second), apiv1.Duration(time.Minute)
	noFailures := apiv1.FailureGate{MaxCount: new(0)}
	return apiv1.RolloutSpec{
		Stages: []apiv1.Stage{
			{Name: "canary", Count: 1, Soak: soak, Timeout: timeout, OnFailure: apiv1.OnFailureRollback, Failure: noFailures},
			{Name: "all", Percent: 100, Soak: soak, Timeout: timeout, OnFailure: apiv1.OnFailureRollback, Failure: noFailures},
		},
		OnFailure: apiv1.OnFailureRollback,
		Health:    &apiv1.HealthCheck{Predictions: 5, Seconds: 2},
	}
}

// followRetraining streams the aged readings until the drift alert, then
// follows the retraining run it starts — its events, its job, its
// rollout — until the run is done.
func (s *script) followRetraining() (client.LoopRun, error) {
	ctx, c, say := s.ctx, s.c, s.say
	var (
		alert    *client.Alert
		events   = 0
		jobShown = false
		ro       *client.RolloutFollower
		roLast   string
		run      client.LoopRun
		deadline = time.Now().Add(retrainWait)
	)
	err := s.stream(func() (bool, error) {
		if time.Now().After(deadline) {
			return false, fmt.Errorf("the retraining loop did not finish in %s", retrainWait)
		}
		if alert == nil {
			if _, err := s.showDrift(); err != nil {
				return false, err
			}
			alerts, err := c.Alerts(ctx, modelName)
			if err != nil {
				return false, fmt.Errorf("list drift alerts: %w", err)
			}
			if len(alerts) == 0 {
				return false, nil
			}
			alert = &alerts[0]
			var top []string
			for _, f := range alert.TopFeatures {
				top = append(top, fmt.Sprintf("%s %.2f", f.Name, f.PSI))
			}
			say("DRIFT ALERT %s on %s v%s: %d windows in a row over PSI %.1f; top features: %s", alert.ID, alert.Model, alert.Version, len(alert.Windows), alert.Policy.Threshold, strings.Join(top, ", "))
		}
		runs, err := c.LoopRuns(ctx, modelName)
		if err != nil {
			return false, fmt.Errorf("list retraining runs: %w", err)
		}
		if len(runs) == 0 {
			return false, nil
		}
		run = runs[0]
		for _, ev := range run.Events[min(events, len(run.Events)):] {
			say("retraining run %d: [%s] %s", run.Seq, ev.State, ev.Message)
		}
		events = len(run.Events)
		if run.Job != "" && !jobShown {
			j, err := c.Job(ctx, run.Job)
			if err != nil {
				return false, fmt.Errorf("retraining job %s: %w", run.Job, err)
			}
			if j.Final() {
				jobShown = true
				s.showJob(j)
			}
		}
		if run.Rollout != "" {
			if ro == nil {
				ro = c.FollowRollout(run.Rollout)
			}
			evs, r, err := ro.Next(ctx)
			if err != nil {
				return false, err
			}
			s.showRolloutEvents(evs)
			if line := client.RolloutProgress(r); line != roLast {
				say("  rollout %s: %s", r.ID, line)
				roLast = line
			}
		}
		switch run.State {
		case "rejected", "failed":
			return false, fmt.Errorf("retraining run %d %s: %s", run.Seq, run.State, strings.Join(run.Reasons, "; "))
		case "done":
			return true, nil
		}
		return false, nil
	})
	return run, err
}

// stream sends a prediction round every interval, and asks done every
// half second until it holds.
func (s *script) stream(done func() (bool, error)) error {
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	check := time.NewTicker(poll)
	defer check.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-tick.C:
			if err := s.pred.round(s.ctx, s.fleet.agents, false, true); err != nil {
				return err
			}
		case <-check.C:
			ok, err := done()
			if err != nil || ok {
				return err
			}
		}
	}
}

// streamUntilDone says where to look, then streams predictions until the
// demo ends, with the telemetry counts every 5 seconds.
func (s *script) streamUntilDone() error {
	ctx, c, say, url := s.ctx, s.c, s.say, s.c.BaseURL()
	say("open %s/api/v1/drift/%s, %s/api/v1/alerts, %s/api/v1/loop/%s, %s/api/v1/rollouts, %s/api/v1/jobs",
		url, modelName, url, url, modelName, url, url)
	say("or run: shoal --server %s drift %s | drift alerts | loop %s | rollout list | jobs | devices", url, modelName, modelName)
	if agents := s.fleet.agents; len(agents) > 0 {
		say("agents' inference APIs: %s/v2/models/%s (and the other agents)", agents[0].url, modelName)
	}
	if s.cfg.Duration == 0 {
		say("streaming predictions every %s; Ctrl-C to stop", s.cfg.Interval)
	} else if dl, ok := ctx.Deadline(); ok {
		say("streaming predictions every %s until %s (--duration)", s.cfg.Interval, dl.Format("15:04:05"))
	}
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := s.pred.round(ctx, s.fleet.agents, false, false); err != nil && ctx.Err() == nil {
				return err
			}
		case <-report.C:
			st, err := c.Telemetry(ctx, "")
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("read the control plane's telemetry counts: %w", err)
			}
			say("telemetry: %d predictions made (%d sensor readings), %d received by the control plane in %d records", s.pred.total(), s.pred.readings(), st.Total.Predictions, st.Total.Records)
		}
	}
}

// shutdown stops the fleet in order: the agents flush their telemetry to
// the control plane, then it stops. It prints the final count between.
func (s *script) shutdown() error {
	s.say("shutting down: agents flush their telemetry to the control plane, then it stops")
	errs := []error{s.fleet.stopAgents()}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	st, err := s.c.Telemetry(ctx, "")
	cancel()
	if err != nil {
		s.say("final count: %d predictions made (%d sensor readings); the control plane's count could not be read: %v", s.pred.total(), s.pred.readings(), err)
	} else {
		s.say("final count: %d predictions made (%d sensor readings), %d recorded by the control plane", s.pred.total(), s.pred.readings(), st.Total.Predictions)
	}
	errs = append(errs, s.fleet.stopControlPlane())
	return errors.Join(errs...)
}

// showDrift prints the whole drift windows (cohort all) that have settled
// since s.since and were not shown yet, and says how many of v1's it
// printed.
func (s *script) showDrift() (int, error) {
	rep, err := s.c.Drift(s.ctx, modelName, client.DriftQuery{Cohort: "all", Last: 2 * time.Minute})
	if err != nil {
		return 0, fmt.Errorf("read drift windows: %w", err)
	}
	ws := rep.Windows
	slices.SortFunc(ws, func(a, b client.DriftWindow) int { return a.Start.Compare(b.Start) })
	n := 0
	for _, w := range ws {
		key := w.Version + "/" + w.Start.String()
		if w.Start.Before(s.since) || w.End.Add(driftSettle).After(time.Now()) || s.printed[key] || (w.Cohort != "all" && w.Cohort != "") {
			continue
		}
		s.printed[key] = true
		if w.Version == s.v1 {
			n++
		}
		topName, topPSI := "", 0.0
		for _, f := range w.Features {
			if f.PSI >= topPSI {
				topName, topPSI = f.Name, f.PSI
			}
		}
		verdict := "ok"
		if w.Breach {
			verdict = "BREACH"
		}
		if w.Error != "" {
			verdict = w.Error
		}
		s.say("drift %s v%s window %s–%s: %4d samples, PSI %.3f (top: %s %.3f)  %s",
			modelName, w.Version, w.Start.Local().Format("15:04:05"), w.End.Local().Format("15:04:05"), w.Samples, w.PSI, orDash(topName), topPSI, verdict)
	}
	return n, nil
}

// waitJob follows a training job to its end, printing every tenth epoch
// and its validation gates.
func (s *script) waitJob(id string) (client.Job, error) {
	shown := 0
	wctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
	defer cancel()
	j, err := s.c.WaitJob(wctx, id, 100*time.Millisecond, func(j client.Job) {
		hist := j.History
		if len(hist) == 0 && j.Progress != nil {
			hist = append(hist, *j.Progress)
		}
		for _, p := range hist {
			if p.Epoch > shown && (p.Epoch == 1 || p.Epoch%10 == 0 || (j.Final() && p.Epoch == hist[len(hist)-1].Epoch)) {
				s.say("  epoch %3d/%d  train loss %.4f  validation loss %.4f  validation %s %.4f", p.Epoch, p.Epochs, p.TrainLoss, p.ValidationLoss, orDash(p.Metric), p.ValidationMetric)
				shown = p.Epoch
			}
		}
	})
	if err != nil {
		return j, fmt.Errorf("training job %s: %w", id, err)
	}
	s.showJob(j)
	if j.State != "succeeded" || j.Result == nil {
		return j, fmt.Errorf("training job %s %s: %s", id, j.State, j.Error)
	}
	if j.Result.Validation != nil && j.Result.Validation.Status != "passed" {
		return j, fmt.Errorf("training job %s: the model failed its gates: %s", id, strings.Join(j.Result.Validation.Reasons, "; "))
	}
	return j, nil
}

// showJob prints a finished job's result and its validation gates.
func (s *script) showJob(j client.Job) {
	if j.Result == nil {
		s.say("job %s %s: %s", j.ID, j.State, j.Error)
		return
	}
	r := j.Result
	s.say("job %s %s: %s v%s on %s v%d (%d train / %d validation / %d holdout rows, best epoch %d of %d): %s",
		j.ID, j.State, r.Model, r.ModelVersion, r.Lineage.Dataset, r.Lineage.DatasetVersion, r.TrainRows, r.ValidationRows, r.HoldoutRows, r.BestEpoch, r.Epochs, client.MetricsLine(r.Metrics))
	if v := r.Validation; v != nil {
		champ := ""
		if v.Champion != "" {
			champ = ", against champion v" + v.Champion
		}
		s.say("  validation gates %s (%d holdout rows%s):", strings.ToUpper(v.Status), v.HoldoutRows, champ)
		for _, ch := range v.Checks {
			mark := "pass"
			if !ch.Passed {
				mark = "FAIL"
			}
			detail := ""
			if ch.Detail != "" {
				detail = "  " + ch.Detail
			}
			s.say("    %-4s %-22s %.4g (limit %.4g)%s", mark, ch.Name, ch.Value, ch.Limit, detail)
		}
	}
}

// rollout rolls version v out in stages — a canary of one device, half
// the fleet, then all of it, each soaking a few seconds once its devices
// are healthy — printing the stages as they go, while the agents keep
// predicting (an agent reports a version healthy after 5 predictions or 5
// seconds).
func (s *script) rollout(v string) error {
	soak, timeout := apiv1.Duration(3*time.Second), apiv1.Duration(time.Minute)
	spec := apiv1.RolloutSpec{
		Model: modelName, Version: v,
		Health:    &apiv1.HealthCheck{Predictions: 5, Seconds: 5},
		OnFailure: apiv1.OnFailureRollback,
		Stages: []apiv1.Stage{
			{Name: "canary", Count: 1, Soak: soak, Timeout: timeout},
			{Name: "half", Percent: 50, Soak: soak, Timeout: timeout},
			{Name: "all", Percent: 100, Timeout: timeout},
		},
	}
	r, err := s.c.CreateRollout(s.ctx, spec)
	if err != nil {
		return fmt.Errorf("roll out %s %s: %w", modelName, v, err)
	}
	s.say("rollout %s: %s v%s to %d devices, canary 1 → 50%% → 100%%, rolled back if a stage fails (release %d, signed manifest over MQTT)",
		r.ID, modelName, v, r.Targets, r.ReleaseSequence)
	wctx, cancel := context.WithTimeout(s.ctx, rolloutWait)
	defer cancel()
	last, polls := "", 0
	r, err = s.c.WaitRollout(wctx, r.ID, poll, func(evs []client.RolloutEvent, r client.Rollout) error {
		s.showRolloutEvents(evs)
		if line := client.RolloutProgress(r); line != last {
			s.say("  %s", line)
			last = line
		}
		// A round every other poll, so that the new version's devices
		// become healthy.
		if polls++; polls%2 == 0 && !r.Ended() {
			return s.pred.round(wctx, s.fleet.agents, false, true)
		}
		return nil
	})
	switch {
	case err != nil && s.ctx.Err() == nil && wctx.Err() != nil:
		return fmt.Errorf("rollout %s is still %s after %s: %s", r.ID, r.State, rolloutWait, r.Reason)
	case err != nil:
		return err
	case r.State != "completed":
		return fmt.Errorf("rollout %s ended %s: %s", r.ID, strings.ReplaceAll(r.State, "_", " "), r.Reason)
	}
	return nil
}

// showRolloutEvents prints a rollout's events, leaving out each device's
// phase changes but its failures.
func (s *script) showRolloutEvents(evs []client.RolloutEvent) {
	for _, ev := range evs {
		if ev.Type != "device" || ev.Phase == "failed" {
			s.say("  %s", ev.Message)
		}
	}
}

// waitFor polls cond until it holds, printing its status line whenever it
// changes, or fails after timeout with the last one.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string), show func(string)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, status := cond()
		if status != last {
			show(status)
			last = status
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %s", timeout, status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
