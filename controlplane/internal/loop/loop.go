// Package loop closes the retraining loop (DESIGN §1, step 7): a drift
// alert on a model version starts a retraining job, the job's validation
// gates decide whether the new version is a signed candidate, and a
// candidate may go straight into a canary rollout.
//
// A Policy per model says whether the loop retrains it and how:
//
//   - Dataset: the dataset of the job that made the alerting version
//     (found by its result in the jobs' list), unless the policy names
//     another, at that dataset's latest version when the alert arrives.
//     Data captured from the fleet and pushed as a new version of the
//     dataset is thereby in the next retraining. The version is pinned
//     in the job spec and recorded on the run.
//   - Captures: with it set, the model's labelled captured rows (the
//     fleet's captured inputs joined with the labels of POST
//     /v1/feedback, as the monitor exports them) are appended to that
//     latest version's CSV and pushed as a new version of the dataset,
//     with the same label and task, which the job then trains on; the
//     run records how many (CapturedRows and an event). With no labelled
//     captured rows the job trains on the latest version, and an event
//     says so. A dataset with a categorical feature takes no captures
//     (the capture holds the feature's code, not its category), nor does
//     one whose export or push fails: the run says why in an event and
//     trains on the latest version.
//   - Trainer and training spec: the lineage job's, as it ran (every
//     default filled in), seed included. The same seed keeps a retrained
//     model reproducible from (dataset version, spec) alone; what changes
//     between two retrainings is the data, not chance.
//   - Gates: the policy's, else the lineage job's.
//   - Rollout: a rollout.Spec template (selector, stages, ...); the loop
//     fills in the model and the candidate version and sets Supersede, so
//     the candidate replaces a rollout of an older version still running.
//     Nil stops the loop at the signed candidate.
//   - Cooldown: no second run for the same model starts within it of the
//     last run's start, nor while a run is in progress (training, or
//     rolling out until its rollout ends).
//
// OnAlert is the drift.Options.OnAlert hook: it submits the job at once
// (Submit only queues it) and records a Run. Step, called periodically
// by Run with the injected clock, moves runs on as their jobs and
// rollouts end:
//
//	training ─► rejected               the job failed, or its gates did
//	         └► candidate ─► (final)    no rollout template
//	                      └► rolling_out ─► done         the rollout ended
//	                      └► failed                       the rollout was refused
//
// A run that cannot start (the version was not made by a job here, the
// dataset is gone, the job is refused) is stored as failed, with why.
// Every change is an Event on the run.
//
// Keys, in a store.Store under the "loop/" prefix:
//
//	loop/policy/{model}       JSON Policy
//	loop/seq/{model}          uint64, the last run number of the model
//	loop/run/{model}/{%020d}  JSON Run, by run number
package loop

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

// Jobs runs training jobs. Errors carry shoalerr codes: Invalid,
// NotFound, Unavailable.
type Jobs interface {
	Submit(ctx context.Context, spec jobs.Spec) (jobs.Job, error)
	Get(ctx context.Context, id string) (jobs.Job, error)
	List(ctx context.Context) ([]jobs.Job, error)
}

// Datasets says which versions of a dataset are stored, and stores new
// ones (reference rows plus captured rows). Errors: Invalid, NotFound.
type Datasets interface {
	// Get and OpenCSV take version 0 for the latest.
	Get(ctx context.Context, name string, version int) (dataset.Version, error)
	OpenCSV(ctx context.Context, name string, version int) (*os.File, dataset.Version, error)
	Push(ctx context.Context, name, label string, task dataset.Task, body io.Reader) (dataset.Version, bool, error)
}

// CaptureExporter writes a model's labelled captured rows as CSV: a
// header of the given feature names and the label column, then one row
// per labelled capture of the header's width (monitor.Monitor).
type CaptureExporter interface {
	ExportCapturesAs(ctx context.Context, model string, w io.Writer, header []string, labelColumn string) (rows int, err error)
}

// Rollouts starts and reports staged rollouts. Errors: Invalid, NotFound,
// Conflict.
type Rollouts interface {
	Create(ctx context.Context, spec rollout.Spec) (rollout.Rollout, error)
	Get(ctx context.Context, id string) (rollout.Rollout, error)
}

var (
	_ Jobs            = (*jobs.Runner)(nil)
	_ Datasets        = (*dataset.Store)(nil)
	_ Rollouts        = (*rollout.Engine)(nil)
	_ CaptureExporter = (*monitor.Monitor)(nil)
)

// Options configure a Service.
type Options struct {
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	Log *slog.Logger
	// Captures exports the labelled captured rows a policy with Captures
	// adds to the reference data; nil: such a policy trains on the
	// reference data alone, and its runs say so.
	Captures CaptureExporter
}

// Service runs the retraining loop. Its methods are safe for concurrent
// use.
type Service struct {
	st       store.Store
	jobs     Jobs
	datasets Datasets
	rollouts Rollouts
	captures CaptureExporter
	now      func() time.Time
	log      *slog.Logger

	// mu serialises starting and moving runs, so that two alerts of one
	// model do not both find no run in progress.
	mu sync.Mutex
}

// New returns a Service keeping its policies and runs in st.
func New(st store.Store, jb Jobs, datasets Datasets, rollouts Rollouts, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, jobs: jb, datasets: datasets, rollouts: rollouts, captures: opts.Captures, now: opts.Now, log: opts.Log}
}

// Run calls Step every interval until ctx ends. A step that fails is
// logged and tried again at the next tick.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Step(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("retraining loop step failed; trying again at the next tick", "err", err)
			}
		}
	}
}

// storeAttempts is how often a transaction is retried on a write conflict.
const storeAttempts = 5

const (
	policyPrefix = "loop/policy/"
	seqPrefix    = "loop/seq/"
	runPrefix    = "loop/run/"
)
