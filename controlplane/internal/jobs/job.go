package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// State is where a job is in its life.
type State string

// The states, the API's (apiv1). Succeeded, Failed and Cancelled are
// final.
const (
	Queued    State = apiv1.JobQueued
	Running   State = apiv1.JobRunning
	Succeeded State = apiv1.JobSucceeded
	Failed    State = apiv1.JobFailed
	Cancelled State = apiv1.JobCancelled
)

// Final reports whether a job in state s will not change again.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Spec is what a job trains: a dataset version, the model whose next
// version it makes, and the training spec (its fields inline in JSON:
// "trainer", "epochs", "seed", ...). Task may be left out: it is the
// dataset's.
type Spec struct {
	Dataset string `json:"dataset"`
	// DatasetVersion is a version number; 0 is the latest when the job
	// runs (its lineage records which it was).
	DatasetVersion int    `json:"dataset_version,omitempty"`
	Model          string `json:"model"`
	// Gates judge the trained model before it may be deployed (docs/API.md,
	// Validation gates); left out, only the defaults apply.
	Gates validation.Gates `json:"gates,omitzero"`
	training.Spec
}

// Job is one training job (JSON as in docs/API.md, Training jobs).
type Job struct {
	ID         string     `json:"id"`
	State      State      `json:"state"`
	Spec       Spec       `json:"spec"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Progress is the last epoch reported; History the epochs so far (at
	// most 1000, thinned evenly past that).
	Progress *training.Progress  `json:"progress,omitempty"`
	History  []training.Progress `json:"history,omitempty"`
	// CancelRequested is set while a running job is being stopped.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Result is set when the job succeeded.
	Result *Result `json:"result,omitempty"`
	// Error says why the job failed or was cancelled.
	Error string `json:"error,omitempty"`
}

// Result is what a job made: a succeeded job's, or that of one failed by
// its validation gates (the version is kept, unsigned).
type Result struct {
	Model        string `json:"model"`
	ModelVersion string `json:"model_version"`
	ModelSHA256  string `json:"model_sha256"`
	// Metrics are measured on the holdout rows (training.Result.Metrics):
	// what a validation gate would judge the model by.
	Metrics   map[string]float64 `json:"metrics"`
	Epochs    int                `json:"epochs"`
	BestEpoch int                `json:"best_epoch"`
	// Rows in each split (built-in trainers).
	TrainRows      int                   `json:"train_rows,omitempty"`
	ValidationRows int                   `json:"validation_rows,omitempty"`
	HoldoutRows    int                   `json:"holdout_rows,omitempty"`
	Imputed        []training.Imputation `json:"imputed,omitempty"`
	// ProfileBytes is the size of the reference profile stored with the
	// version; ProfileError says why none was, if so (the model is
	// stored either way).
	ProfileBytes int     `json:"profile_bytes,omitempty"`
	ProfileError string  `json:"profile_error,omitempty"`
	Lineage      Lineage `json:"lineage"`
	// Validation is the gates' report, also stored with the version.
	Validation *validation.Report `json:"validation,omitempty"`
}

// Lineage is what a model version was made from and how.
type Lineage struct {
	Dataset        string   `json:"dataset"`
	DatasetVersion int      `json:"dataset_version"`
	DatasetSHA256  string   `json:"dataset_sha256"`
	DatasetRows    int      `json:"dataset_rows"`
	Features       []string `json:"features"`
	Label          string   `json:"label"`
	Classes        []string `json:"classes,omitempty"`
	Trainer        string   `json:"trainer"`
	// Spec is the training spec as run: for the built-in trainers with
	// every default filled in, so that it trains the same model again.
	Spec training.Spec `json:"spec"`
	// CodeVersion is the control plane's version (buildinfo.Version).
	CodeVersion string `json:"code_version"`
	// Metrics, Model and ModelVersion repeat the Result's, so that the
	// lineage reads on its own.
	Metrics      map[string]float64 `json:"metrics"`
	Model        string             `json:"model"`
	ModelVersion string             `json:"model_version"`
}

// Key layout, all under "jobs/":
//
//	jobs/seq              uint64, the last job number issued
//	jobs/job/{%020d}      JSON Job, by job number
const (
	seqKey    = "jobs/seq"
	jobPrefix = "jobs/job/"
	idPrefix  = "job-"
)

func jobKey(n uint64) []byte { return fmt.Appendf(nil, "%s%020d", jobPrefix, n) }

func idOf(n uint64) string { return idPrefix + strconv.FormatUint(n, 10) }

// numberOf reads a job id ("job-12"). Errors: NotFound, since an id that
// is not one names no job.
func numberOf(op, id string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(id, idPrefix), 10, 64)
	if err != nil || !strings.HasPrefix(id, idPrefix) || idOf(n) != id || n == 0 {
		return 0, shoalerr.E(shoalerr.NotFound, op, "there is no job %.40q; job ids look like job-12 (list them with GET /api/v1/jobs)", id)
	}
	return n, nil
}

func nextNumber(tx store.Tx) (uint64, error) {
	var n uint64
	v, err := tx.Get([]byte(seqKey))
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return 0, err
	case len(v) != 8:
		return 0, fmt.Errorf("job counter holds %d bytes; want 8", len(v))
	default:
		n = binary.BigEndian.Uint64(v)
	}
	n++
	return n, tx.Set([]byte(seqKey), binary.BigEndian.AppendUint64(nil, n))
}

func decodeJob(b []byte) (Job, error) {
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return Job{}, fmt.Errorf("decode job record: %w", err)
	}
	return j, nil
}

// validate checks what can be checked of a spec before the job runs; the
// dataset is read, and the training spec checked by the trainer, when it
// runs.
func (s Spec) validate(op string, trainers map[string]training.Trainer) error {
	if err := dataset.ValidateName(s.Dataset); err != nil {
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "job spec: dataset")
	}
	if s.DatasetVersion < 0 {
		return shoalerr.E(shoalerr.Invalid, op, "job spec: dataset_version %d is not a version; give 1, 2, ... or leave it out for the latest", s.DatasetVersion)
	}
	if err := registry.ValidateName("model name", s.Model); err != nil {
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "job spec: model")
	}
	if _, ok := trainers[s.Trainer]; !ok {
		names := slices.Sorted(maps.Keys(trainers))
		if s.Trainer == "" {
			return shoalerr.E(shoalerr.Invalid, op, "job spec: trainer is empty; use one of %s", strings.Join(names, ", "))
		}
		return shoalerr.E(shoalerr.Invalid, op, "job spec: trainer %.40q is unknown; use one of %s", s.Trainer, strings.Join(names, ", "))
	}
	switch s.Task {
	case "", training.Classification, training.Regression:
	default:
		return shoalerr.E(shoalerr.Invalid, op, "job spec: task %.40q is unknown; use %q or %q, or leave it out for the dataset's", s.Task, training.Classification, training.Regression)
	}
	if err := s.Gates.Check(s.Task); err != nil {
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "job spec")
	}
	return nil
}

// clone returns a copy of j that shares nothing mutable with it.
func (j Job) clone() Job {
	if j.Progress != nil {
		p := *j.Progress
		j.Progress = &p
	}
	j.History = slices.Clone(j.History)
	j.Spec.Hidden = slices.Clone(j.Spec.Hidden)
	return j // Result is never changed once set
}
