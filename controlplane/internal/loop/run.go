package loop

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/drift"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// State is where a run is: one of apiv1's retraining-run states.
type State = string

// The states. Rejected, Failed and Done are final, and so is Candidate
// when the policy has no rollout.
const (
	Training   State = apiv1.LoopTraining
	Rejected   State = apiv1.LoopRejected
	Candidate  State = apiv1.LoopCandidate
	RollingOut State = apiv1.LoopRollingOut
	Done       State = apiv1.LoopDone
	Failed     State = apiv1.LoopFailed
)

// Run is one turn of the loop for a model: from an alert to a rejected
// or signed candidate, and its rollout. Its stored JSON is the API's
// (apiv1.LoopRun), declared once.
type Run struct {
	apiv1.LoopRun

	// notes are events of the start, recorded with the state it ends in.
	notes []string
}

// Event is a change of a run's state.
type Event = apiv1.LoopEvent

// inProgress reports whether r still waits on a job or a rollout.
func (r Run) inProgress() bool { return r.State == Training || r.State == RollingOut }

func (r *Run) to(at time.Time, state State, format string, args ...any) {
	r.State, r.UpdatedAt = state, at
	r.Events = append(r.Events, Event{At: at, State: state, Message: fmt.Sprintf(format, args...)})
}

// OnAlert starts a run for alert if the model's policy says to retrain it,
// no run of the model is in progress and the last one started more than
// the cooldown ago. It is drift.Options.OnAlert: it submits the job (which
// only queues it) and returns; errors are logged and, once a run is
// recorded, kept on it.
func (s *Service) OnAlert(alert drift.Alert) {
	ctx, cancel := context.WithTimeout(context.Background(), alertTimeout)
	defer cancel()
	if _, err := s.Start(ctx, alert); err != nil {
		s.log.Warn("drift alert started no retraining", "model", alert.Model, "version", alert.Version, "alert", alert.ID, "err", err)
	}
}

// alertTimeout bounds what OnAlert does.
const alertTimeout = 30 * time.Second

// ErrSkipped is wrapped by Start's error when the policy says to start
// nothing: no policy, Retrain off, a run in progress, or the cooldown.
var ErrSkipped = errors.New("no retraining run started")

// Start is OnAlert's work: it returns the run started (possibly failed at
// once, and stored so), or an error wrapping ErrSkipped, or a store error.
func (s *Service) Start(ctx context.Context, alert drift.Alert) (Run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	model := alert.Model
	p, ok, err := store.ViewJSON[Policy](ctx, s.st, policyKey(model))
	switch {
	case err != nil:
		return Run{}, fmt.Errorf("loop: read the retraining policy of %q: %w", model, err)
	case !ok:
		return Run{}, fmt.Errorf("%w: model %q has no retraining policy", ErrSkipped, model)
	case !p.Retrain:
		return Run{}, fmt.Errorf("%w: the retraining policy of model %q has retrain off", ErrSkipped, model)
	}
	runs, err := s.runs(model)
	if err != nil {
		return Run{}, err
	}
	now := s.now().UTC()
	if len(runs) > 0 {
		last := runs[len(runs)-1]
		switch {
		case last.inProgress():
			return Run{}, fmt.Errorf("%w: run %d of model %q is %s", ErrSkipped, last.Seq, model, last.State)
		case now.Sub(last.StartedAt) < p.Cooldown.D():
			return Run{}, fmt.Errorf("%w: run %d of model %q started at %s, within the cooldown of %v", ErrSkipped, last.Seq, model, last.StartedAt.Format(time.RFC3339), p.Cooldown)
		}
	}

	r := Run{LoopRun: apiv1.LoopRun{Model: model, Alert: alert.ID, FromVersion: alert.Version, Cohort: alert.Cohort, StartedAt: now}}
	spec, err := s.retrainSpec(ctx, &r, p)
	if err == nil {
		var j jobs.Job
		if j, err = s.jobs.Submit(ctx, spec); err == nil {
			r.Job = j.ID
			r.to(now, Training, "drift alert %s on version %s (cohort %s): job %s retrains %s on dataset %s v%d with trainer %s",
				alert.ID, alert.Version, alert.Cohort, j.ID, model, r.Dataset, r.DatasetVersion, spec.Trainer)
		}
	}
	if err != nil {
		r.Reasons = []string{err.Error()}
		r.to(now, Failed, "drift alert %s on version %s: could not start retraining: %v", alert.ID, alert.Version, err)
	}
	if len(r.notes) > 0 { // before the state's event: they led to it
		last := r.Events[len(r.Events)-1]
		r.Events = r.Events[:len(r.Events)-1]
		for _, n := range r.notes {
			r.Events = append(r.Events, Event{At: now, State: r.State, Message: n})
		}
		r.Events, r.notes = append(r.Events, last), nil
	}
	if serr := s.insert(&r); serr != nil {
		return Run{}, serr
	}
	s.log.Info("retraining run started", "model", model, "run", r.Seq, "state", r.State, "job", r.Job, "dataset", r.Dataset, "dataset_version", r.DatasetVersion)
	return r, nil
}

// retrainSpec finds the job that made r.FromVersion and returns the spec
// that retrains it, filling in r's lineage and dataset.
func (s *Service) retrainSpec(ctx context.Context, r *Run, p Policy) (jobs.Spec, error) {
	const op = "loop.Start"
	all, err := s.jobs.List(ctx)
	if err != nil {
		return jobs.Spec{}, err
	}
	var lineage *jobs.Job
	for i := range all { // newest first
		if res := all[i].Result; res != nil && res.Model == r.Model && res.ModelVersion == r.FromVersion {
			lineage = &all[i]
			break
		}
	}
	if lineage == nil {
		return jobs.Spec{}, shoalerr.E(shoalerr.NotFound, op, "version %s of model %q was not made by a training job here, so there is no trainer and spec to retrain it with; train it with a job (shoal train) once by hand", r.FromVersion, r.Model)
	}
	r.LineageJob = lineage.ID
	lin := lineage.Result.Lineage
	spec := jobs.Spec{Dataset: lin.Dataset, Model: r.Model, Gates: lineage.Spec.Gates, Spec: lin.Spec}
	spec.Trainer = lin.Trainer
	spec.Hidden = slices.Clone(spec.Hidden)
	if p.Dataset != "" {
		spec.Dataset = p.Dataset
	}
	if p.Gates != nil {
		spec.Gates = *p.Gates
	}
	v, err := s.datasets.Get(ctx, spec.Dataset, 0)
	if err != nil {
		return jobs.Spec{}, err
	}
	if p.Captures {
		v = s.addCaptures(ctx, r, v)
	}
	spec.DatasetVersion = v.Version
	r.Dataset, r.DatasetVersion = spec.Dataset, v.Version
	// The task is the dataset's; a policy dataset may differ from the
	// lineage's only in its rows.
	spec.Task = ""
	return spec, nil
}

// Step moves every run in progress on: a training run whose job ended is
// rejected or becomes a candidate (and starts its rollout, if the policy
// has a template); a rolling-out run whose rollout ended is done. It
// returns the first error met, having tried every run.
func (s *Service) Step(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	runs, err := s.runs("")
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range runs {
		if !r.inProgress() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		changed, err := s.step(ctx, &r)
		if err != nil {
			errs = append(errs, fmt.Errorf("loop: run %d of %s: %w", r.Seq, r.Model, err))
		}
		if changed {
			if err := s.save(r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Service) step(ctx context.Context, r *Run) (changed bool, _ error) {
	now := s.now().UTC()
	switch r.State {
	case Training:
		j, err := s.jobs.Get(ctx, r.Job)
		switch {
		case shoalerr.Is(err, shoalerr.NotFound):
			r.Reasons = []string{err.Error()}
			r.to(now, Rejected, "job %s is gone", r.Job)
			return true, nil
		case err != nil:
			return false, err
		case !j.State.Final():
			return false, nil
		}
		if j.Result != nil {
			r.Version = j.Result.ModelVersion
		}
		if j.State != jobs.Succeeded || j.Result == nil || j.Result.Validation == nil || !j.Result.Validation.Passed() {
			r.Reasons = rejection(j)
			r.to(now, Rejected, "job %s %s: %s", j.ID, j.State, strings.Join(r.Reasons, "; "))
			return true, nil
		}
		r.to(now, Candidate, "job %s made version %s; it passed its gates and is signed", j.ID, r.Version)
		p, ok, err := store.ViewJSON[Policy](ctx, s.st, policyKey(r.Model))
		if err != nil {
			return true, err
		}
		if !ok || p.Rollout == nil {
			return true, nil
		}
		spec := *p.Rollout
		spec.Model, spec.Version, spec.Supersede = r.Model, r.Version, true
		ro, err := s.rollouts.Create(ctx, spec)
		if err != nil {
			r.Reasons = []string{err.Error()}
			r.to(now, Failed, "the rollout of version %s was refused: %v", r.Version, err)
			return true, nil
		}
		r.Rollout, r.RolloutState = ro.ID, ro.State
		r.to(now, RollingOut, "rollout %s of version %s started (%s)", ro.ID, r.Version, stageNames(ro.Spec))
		return true, nil
	case RollingOut:
		ro, err := s.rollouts.Get(ctx, r.Rollout)
		if err != nil {
			return false, err
		}
		if ro.State == r.RolloutState {
			return false, nil
		}
		r.RolloutState, r.UpdatedAt = ro.State, now
		switch ro.State {
		case rollout.StateCompleted, rollout.StateRolledBack, rollout.StateAborted:
			msg := fmt.Sprintf("rollout %s %s", ro.ID, strings.ReplaceAll(ro.State, "_", " "))
			if ro.Reason != "" {
				msg += ": " + ro.Reason
			}
			r.to(now, Done, "%s", msg)
		}
		return true, nil
	}
	return false, nil
}

// rejection says why job j made no candidate.
func rejection(j jobs.Job) []string {
	var out []string
	if j.Result != nil && j.Result.Validation != nil {
		out = append(out, j.Result.Validation.Reasons...)
	}
	if len(out) == 0 && j.Error != "" {
		out = append(out, j.Error)
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("job %s %s without a validation report", j.ID, j.State))
	}
	return out
}

func stageNames(spec rollout.Spec) string {
	names := make([]string, len(spec.Stages))
	for i, st := range spec.Stages {
		names[i] = st.Name
	}
	return "stages " + strings.Join(names, ", ")
}

// Runs returns model's runs, newest first, with their events. Errors:
// Invalid (bad model name), Internal.
func (s *Service) Runs(ctx context.Context, model string) ([]Run, error) {
	const op = "loop.Runs"
	if err := registry.ValidateName("model name", model); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "retraining runs")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	runs, err := s.runs(model)
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read the retraining runs of model %q", model)
	}
	slices.Reverse(runs)
	return runs, nil
}

// runs returns model's runs (every model's if ""), oldest first per model.
func (s *Service) runs(model string) ([]Run, error) {
	prefix := runPrefix
	if model != "" {
		prefix += model + "/"
	}
	var out []Run
	err := s.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(prefix), func(_, v []byte) error {
			var r Run
			if err := jsonDecode(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("loop: list runs: %w", err)
	}
	return out, nil
}

// insert numbers r and stores it.
func (s *Service) insert(r *Run) error {
	err := store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		key := []byte(seqPrefix + r.Model)
		var n uint64
		switch v, err := tx.Get(key); {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case len(v) != 8:
			return fmt.Errorf("run counter of %s holds %d bytes; want 8", r.Model, len(v))
		default:
			n = binary.BigEndian.Uint64(v)
		}
		n++
		if err := tx.Set(key, binary.BigEndian.AppendUint64(nil, n)); err != nil {
			return err
		}
		r.Seq = n
		return store.PutJSON(tx, runKey(r.Model, n), r)
	})
	if err != nil {
		return fmt.Errorf("loop: store a run of %s: %w", r.Model, err)
	}
	return nil
}

func (s *Service) save(r Run) error {
	err := store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		return store.PutJSON(tx, runKey(r.Model, r.Seq), r)
	})
	if err != nil {
		return fmt.Errorf("loop: store run %d of %s: %w", r.Seq, r.Model, err)
	}
	s.log.Info("retraining run", "model", r.Model, "run", r.Seq, "state", r.State, "version", r.Version, "rollout", r.Rollout)
	return nil
}

func runKey(model string, seq uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%020d", runPrefix, model, seq)
}

func jsonDecode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode run record: %w", err)
	}
	return nil
}
