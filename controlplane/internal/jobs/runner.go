package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Datasets loads stored dataset versions. Errors: Invalid, NotFound.
type Datasets interface {
	// Load takes version 0 for the latest.
	Load(ctx context.Context, name string, version int) (*dataset.Dataset, error)
}

// Registry stores the models jobs make. Errors carry shoalerr codes:
// Invalid, NotFound, Conflict, TooLarge.
type Registry interface {
	Versions(ctx context.Context, name string) ([]registry.ModelVersion, error)
	PushValidated(ctx context.Context, name, version string, body io.Reader, rep *validation.Report) (registry.ModelVersion, bool, error)
	OpenArtifact(sha256Hex string) (*os.File, error)
	SetReferenceProfile(ctx context.Context, name, version string, profile *shoalv1.ReferenceProfile) error
}

var (
	_ Datasets = (*dataset.Store)(nil)
	_ Registry = (*registry.Registry)(nil)
)

// Defaults.
const (
	DefaultWorkers   = 1
	DefaultMaxQueued = 100
	// saveEvery is the least time between two writes of a running job's
	// progress to the store.
	saveEvery = 2 * time.Second
	// maxHistory bounds a job's history.
	maxHistory = 1000
	// updateAttempts is how often a transaction is retried on a conflict.
	updateAttempts = 16
)

// Why a running job's context ends.
var (
	errCancelled = errors.New("cancelled")
	errShutdown  = errors.New("control plane shut down")
)

// Option adjusts a Runner.
type Option func(*Runner)

// WithWorkers sets how many jobs run at once (default DefaultWorkers).
func WithWorkers(n int) Option { return func(r *Runner) { r.workers = max(n, 1) } }

// WithMaxQueued bounds the jobs waiting to run (default DefaultMaxQueued).
func WithMaxQueued(n int) Option { return func(r *Runner) { r.maxQueued = max(n, 1) } }

// WithTrainer makes a trainer available to jobs under name (Spec.Trainer),
// such as a training.Command the operator configured. The built-in
// trainers are there already as "logistic", "linear" and "mlp".
func WithTrainer(name string, t training.Trainer) Option {
	return func(r *Runner) { r.trainers[name] = t }
}

// Runner runs training jobs. Its methods are safe for concurrent use.
type Runner struct {
	st        store.Store
	datasets  Datasets
	registry  Registry
	log       *slog.Logger
	now       func() time.Time
	trainers  map[string]training.Trainer
	workers   int
	maxQueued int

	base context.Context // ends at Close
	stop context.CancelFunc
	wg   sync.WaitGroup
	// publish serialises choosing a version number and pushing it.
	publish sync.Mutex

	mu     sync.Mutex
	wake   *sync.Cond
	queue  []string          // ids of queued jobs, in order
	active map[string]*entry // queued and running jobs
	closed bool
}

// entry is a queued or running job.
type entry struct {
	job    Job
	cancel context.CancelCauseFunc // set while running
	stride int                     // epochs between history entries
	saved  time.Time               // last write of the job's progress
	done   chan struct{}           // closed when the job is final
}

// New returns a Runner keeping its jobs in st, and starts its workers.
// Jobs found running in st (the control plane stopped without Close) are
// marked failed; jobs found queued are queued again. Call Close to stop it.
func New(st store.Store, datasets Datasets, reg Registry, log *slog.Logger, now func() time.Time, opts ...Option) (*Runner, error) {
	if st == nil || datasets == nil || reg == nil || log == nil {
		return nil, errors.New("jobs.New: store, datasets, registry and logger are required")
	}
	if now == nil {
		now = time.Now
	}
	r := &Runner{
		st: st, datasets: datasets, registry: reg, log: log, now: now,
		trainers: map[string]training.Trainer{
			training.Logistic: training.Builtin{}, training.Linear: training.Builtin{}, training.MLP: training.Builtin{},
		},
		workers: DefaultWorkers, maxQueued: DefaultMaxQueued,
		active: map[string]*entry{},
	}
	for _, o := range opts {
		o(r)
	}
	r.wake = sync.NewCond(&r.mu)
	if err := r.recover(); err != nil {
		return nil, err
	}
	r.base, r.stop = context.WithCancel(context.Background())
	r.wg.Add(r.workers)
	for range r.workers {
		go r.work()
	}
	return r, nil
}

// recover marks the jobs that were running failed and queues those that
// were queued.
func (r *Runner) recover() error {
	var requeued, failed int
	err := store.Retry(r.st, updateAttempts, func(tx store.Tx) error {
		r.queue, r.active, requeued, failed = nil, map[string]*entry{}, 0, 0
		var interrupted []Job
		err := tx.Scan([]byte(jobPrefix), func(_, v []byte) error {
			j, err := decodeJob(v)
			if err != nil {
				return err
			}
			switch j.State {
			case Queued:
				r.queue = append(r.queue, j.ID)
				r.active[j.ID] = &entry{job: j, stride: 1, done: make(chan struct{})}
				requeued++
			case Running:
				interrupted = append(interrupted, j)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, j := range interrupted {
			n, err := numberOf("jobs.New", j.ID)
			if err != nil {
				return err
			}
			at := r.now().UTC()
			j.State, j.FinishedAt, j.CancelRequested = Failed, &at, false
			j.Error = "the control plane stopped while the job ran; submit it again (the same seed trains the same model)"
			if err := store.PutJSON(tx, jobKey(n), j); err != nil {
				return err
			}
			failed++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("jobs: recover jobs: %w", err)
	}
	if requeued+failed > 0 {
		r.log.Info("jobs recovered", "queued", requeued, "failed_interrupted", failed)
	}
	return nil
}

// Submit queues a job. Errors: Invalid (a spec that cannot run: bad names,
// an unknown trainer or task), Unavailable (the queue is full, or the
// runner is closed).
func (r *Runner) Submit(ctx context.Context, spec Spec) (Job, error) {
	const op = "jobs.Submit"
	if err := spec.validate(op, r.trainers); err != nil {
		return Job{}, err
	}
	if err := ctx.Err(); err != nil {
		return Job{}, err
	}
	spec.Hidden = slices.Clone(spec.Hidden)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return Job{}, shoalerr.E(shoalerr.Unavailable, op, "the control plane is shutting down; submit the job again once it is back")
	case len(r.queue) >= r.maxQueued:
		return Job{}, shoalerr.E(shoalerr.Unavailable, op, "%d jobs are queued already, the most; wait for some to finish or cancel some", len(r.queue))
	}
	j := Job{State: Queued, Spec: spec, CreatedAt: r.now().UTC()}
	err := store.Retry(r.st, updateAttempts, func(tx store.Tx) error {
		n, err := nextNumber(tx)
		if err != nil {
			return err
		}
		j.ID = idOf(n)
		return store.PutJSON(tx, jobKey(n), j)
	})
	if err != nil {
		return Job{}, fmt.Errorf("jobs: store new job: %w", err)
	}
	r.active[j.ID] = &entry{job: j, stride: 1, done: make(chan struct{})}
	r.queue = append(r.queue, j.ID)
	r.wake.Signal()
	r.log.Info("job queued", "job", j.ID, "dataset", spec.Dataset, "dataset_version", spec.DatasetVersion, "model", spec.Model, "trainer", spec.Trainer)
	return j.clone(), nil
}

// Get returns a job. Errors: NotFound.
func (r *Runner) Get(ctx context.Context, id string) (Job, error) {
	const op = "jobs.Get"
	n, err := numberOf(op, id)
	if err != nil {
		return Job{}, err
	}
	if err := ctx.Err(); err != nil {
		return Job{}, err
	}
	r.mu.Lock()
	e, ok := r.active[id]
	var j Job
	if ok {
		j = e.job.clone()
	}
	r.mu.Unlock()
	if ok {
		return j, nil
	}
	var found bool
	err = r.st.View(func(tx store.Tx) error {
		var err error
		found, err = store.GetJSON(tx, jobKey(n), &j)
		return err
	})
	switch {
	case err != nil:
		return Job{}, fmt.Errorf("jobs: read %s: %w", id, err)
	case !found:
		return Job{}, shoalerr.E(shoalerr.NotFound, op, "there is no job %s; list jobs with GET /api/v1/jobs", id)
	}
	return j, nil
}

// List returns every job, the newest first, without their histories.
func (r *Runner) List(ctx context.Context) ([]Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Job
	err := r.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(jobPrefix), func(_, v []byte) error {
			j, err := decodeJob(v)
			out = append(out, j)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: list: %w", err)
	}
	r.mu.Lock()
	for i, j := range out {
		if e, ok := r.active[j.ID]; ok {
			out[i] = e.job.clone()
		}
		out[i].History = nil
	}
	r.mu.Unlock()
	slices.Reverse(out)
	return out, nil
}

// Cancel cancels a job: a queued one at once, a running one at its next
// batch (the job it returns then is still running, with CancelRequested
// set; Wait for it to be cancelled). Errors: NotFound, Conflict (the job
// is final already).
func (r *Runner) Cancel(ctx context.Context, id string) (Job, error) {
	const op = "jobs.Cancel"
	if _, err := numberOf(op, id); err != nil {
		return Job{}, err
	}
	r.mu.Lock()
	e, ok := r.active[id]
	if !ok {
		r.mu.Unlock()
		j, err := r.Get(ctx, id)
		if err != nil {
			return Job{}, err
		}
		return Job{}, shoalerr.E(shoalerr.Conflict, op, "job %s has %s already; there is nothing to cancel", id, j.State)
	}
	if e.job.State == Running {
		if !e.job.CancelRequested {
			e.job.CancelRequested = true
			e.cancel(errCancelled)
			r.log.Info("job cancel requested", "job", id)
		}
		j := e.job.clone()
		r.mu.Unlock()
		return j, nil
	}
	// Queued: the workers never see it again.
	r.queue = slices.DeleteFunc(r.queue, func(q string) bool { return q == id })
	delete(r.active, id)
	at := r.now().UTC()
	e.job.State, e.job.FinishedAt, e.job.Error = Cancelled, &at, "cancelled before it ran"
	j := e.job.clone()
	r.mu.Unlock()
	err := r.save(j)
	close(e.done)
	if err != nil {
		return Job{}, err
	}
	r.log.Info("job cancelled", "job", id, "state_was", Queued)
	return j, nil
}

// Wait returns the job once it is final, or ctx's error. Errors: as Get.
func (r *Runner) Wait(ctx context.Context, id string) (Job, error) {
	r.mu.Lock()
	e, ok := r.active[id]
	r.mu.Unlock()
	if ok {
		select {
		case <-e.done:
		case <-ctx.Done():
			return Job{}, ctx.Err()
		}
	}
	return r.Get(ctx, id)
}

// Close stops the runner: queued jobs stay queued (they run after the
// next start), running jobs are stopped and marked failed, and Close
// returns once they are. It may be called more than once.
func (r *Runner) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for _, e := range r.active {
		if e.cancel != nil {
			e.cancel(errShutdown)
		}
	}
	r.wake.Broadcast()
	r.mu.Unlock()
	r.stop()
	r.wg.Wait()
	return nil
}

// work runs queued jobs, one at a time, until Close.
func (r *Runner) work() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.closed {
			r.wake.Wait()
		}
		if r.closed {
			r.mu.Unlock()
			return
		}
		id := r.queue[0]
		r.queue = r.queue[1:]
		e := r.active[id]
		ctx, cancel := context.WithCancelCause(r.base)
		at := r.now().UTC()
		e.cancel, e.job.State, e.job.StartedAt = cancel, Running, &at
		j := e.job.clone()
		r.mu.Unlock()

		if err := r.save(j); err != nil {
			r.log.Error("could not record job start", "job", id, "err", err)
		}
		r.log.Info("job started", "job", id)
		res, err := r.run(ctx, e)
		cancel(nil)
		r.finish(ctx, e, res, err)
	}
}

// finish records a job's end.
func (r *Runner) finish(ctx context.Context, e *entry, res *Result, err error) {
	r.mu.Lock()
	at := r.now().UTC()
	e.job.FinishedAt, e.job.CancelRequested = &at, false
	switch cause := context.Cause(ctx); {
	case err == nil:
		e.job.State, e.job.Result = Succeeded, res
	case errors.Is(cause, errCancelled):
		e.job.State, e.job.Error = Cancelled, "cancelled while it ran"
	case errors.Is(cause, errShutdown):
		e.job.State, e.job.Error = Failed, "the control plane shut down while the job ran; submit it again (the same seed trains the same model)"
	default:
		// A model refused by its gates is kept: res says which version.
		e.job.State, e.job.Error, e.job.Result = Failed, err.Error(), res
	}
	j := e.job.clone()
	r.mu.Unlock()

	// The record is final before the job leaves the active set, so that
	// Get never sees an older one.
	if serr := r.save(j); serr != nil {
		r.log.Error("could not record job end", "job", j.ID, "state", j.State, "err", serr)
	}
	r.mu.Lock()
	delete(r.active, j.ID)
	r.mu.Unlock()
	close(e.done)
	switch j.State {
	case Succeeded:
		r.log.Info("job succeeded", "job", j.ID, "model", res.Model, "version", res.ModelVersion, "metrics", res.Metrics)
	case Cancelled:
		r.log.Info("job cancelled", "job", j.ID)
	default:
		r.log.Warn("job failed", "job", j.ID, "err", j.Error)
	}
}

// progress records an epoch of a running job, and writes the job to the
// store if it was last written saveEvery ago. It runs on the goroutine
// that runs the job.
func (r *Runner) progress(e *entry, p training.Progress) {
	if p.Epoch == 0 {
		if p.Line != "" {
			r.log.Debug("trainer output", "job", e.job.ID, "stream", p.Stream, "line", p.Line)
		}
		return
	}
	r.mu.Lock()
	e.job.Progress = &p
	if p.Epoch%e.stride == 0 {
		e.job.History = append(e.job.History, p)
		if len(e.job.History) >= maxHistory {
			e.stride *= 2
			e.job.History = slices.DeleteFunc(e.job.History, func(q training.Progress) bool { return q.Epoch%e.stride != 0 })
		}
	}
	var j Job
	due := time.Since(e.saved) >= saveEvery
	if due {
		e.saved = time.Now()
		j = e.job.clone()
	}
	r.mu.Unlock()
	if due {
		if err := r.save(j); err != nil {
			r.log.Warn("could not record job progress", "job", j.ID, "err", err)
		}
	}
}

func (r *Runner) save(j Job) error {
	n, err := numberOf("jobs.save", j.ID)
	if err != nil {
		return err
	}
	err = store.Retry(r.st, updateAttempts, func(tx store.Tx) error { return store.PutJSON(tx, jobKey(n), j) })
	if err != nil {
		return fmt.Errorf("jobs: store %s: %w", j.ID, err)
	}
	return nil
}
