package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// JobSpec is what a training job trains (docs/API.md, Training jobs):
// a dataset version (0: the latest), the model whose next version it
// makes, and the training spec. Zero fields take the trainer's defaults.
type JobSpec struct {
	Dataset         string  `json:"dataset"`
	DatasetVersion  int     `json:"dataset_version,omitempty"`
	Model           string  `json:"model"`
	Trainer         string  `json:"trainer"`
	Task            string  `json:"task,omitempty"`
	Hidden          []int   `json:"hidden,omitempty"`
	Activation      string  `json:"activation,omitempty"`
	LearningRate    float64 `json:"learning_rate,omitempty"`
	Epochs          int     `json:"epochs,omitempty"`
	BatchSize       int     `json:"batch_size,omitempty"`
	L2              float64 `json:"l2,omitempty"`
	Seed            uint64  `json:"seed"`
	ValidationSplit float64 `json:"validation_split,omitempty"`
	Patience        int     `json:"patience,omitempty"`
	Gates           *Gates  `json:"gates,omitempty"`
	Holdout         float64 `json:"holdout,omitempty"`
}

// JobProgress is one epoch of a training job.
type JobProgress struct {
	Epoch            int     `json:"epoch,omitempty"`
	Epochs           int     `json:"epochs,omitempty"`
	TrainLoss        float64 `json:"train_loss,omitempty"`
	ValidationLoss   float64 `json:"validation_loss,omitempty"`
	ValidationMetric float64 `json:"validation_metric,omitempty"`
	Metric           string  `json:"metric,omitempty"`
}

// Job is a training job.
type Job struct {
	ID              string        `json:"id"`
	State           string        `json:"state"`
	Spec            JobSpec       `json:"spec"`
	CreatedAt       time.Time     `json:"created_at"`
	StartedAt       *time.Time    `json:"started_at,omitempty"`
	FinishedAt      *time.Time    `json:"finished_at,omitempty"`
	Progress        *JobProgress  `json:"progress,omitempty"`
	History         []JobProgress `json:"history,omitempty"`
	CancelRequested bool          `json:"cancel_requested,omitempty"`
	Result          *JobResult    `json:"result,omitempty"`
	Error           string        `json:"error,omitempty"`
}

// Final reports whether the job will not change again.
func (j Job) Final() bool {
	return j.State == "succeeded" || j.State == "failed" || j.State == "cancelled"
}

// JobResult is what a succeeded job made.
type JobResult struct {
	Model          string             `json:"model"`
	ModelVersion   string             `json:"model_version"`
	ModelSHA256    string             `json:"model_sha256"`
	Metrics        map[string]float64 `json:"metrics"`
	Epochs         int                `json:"epochs"`
	BestEpoch      int                `json:"best_epoch"`
	TrainRows      int                `json:"train_rows,omitempty"`
	ValidationRows int                `json:"validation_rows,omitempty"`
	HoldoutRows    int                `json:"holdout_rows,omitempty"`
	ProfileBytes   int                `json:"profile_bytes,omitempty"`
	ProfileError   string             `json:"profile_error,omitempty"`
	Lineage        JobLineage         `json:"lineage"`
	Validation     *Validation        `json:"validation,omitempty"`
}

// Gates are what a trained model must pass to be signed (docs/API.md,
// Validation gates); zero fields take the defaults.
type Gates struct {
	MinAccuracy    float64 `json:"min_accuracy,omitempty"`
	MinF1          float64 `json:"min_macro_f1,omitempty"`
	MaxRMSE        float64 `json:"max_rmse,omitempty"`
	MaxMAE         float64 `json:"max_mae,omitempty"`
	ChampionMargin float64 `json:"champion_margin,omitempty"`
	MaxLatencyP95  string  `json:"max_latency_p95,omitempty"` // "50ms"
	LatencyRuns    int     `json:"latency_runs,omitempty"`
}

// Validation is the gates' report on a model version.
type Validation struct {
	Status      string            `json:"status"` // passed or failed
	Checks      []ValidationCheck `json:"checks"`
	Reasons     []string          `json:"reasons,omitempty"`
	Champion    string            `json:"champion,omitempty"`
	HoldoutRows int               `json:"holdout_rows"`
	ValidatedAt time.Time         `json:"validated_at"`
}

// ValidationCheck is one gate's result.
type ValidationCheck struct {
	Name   string  `json:"name"`
	Passed bool    `json:"passed"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Detail string  `json:"detail,omitempty"`
}

// JobLineage is what a model version was made from and how.
type JobLineage struct {
	Dataset        string             `json:"dataset"`
	DatasetVersion int                `json:"dataset_version"`
	DatasetSHA256  string             `json:"dataset_sha256"`
	DatasetRows    int                `json:"dataset_rows"`
	Features       []string           `json:"features"`
	Label          string             `json:"label"`
	Classes        []string           `json:"classes,omitempty"`
	Trainer        string             `json:"trainer"`
	Spec           JobSpec            `json:"spec"`
	CodeVersion    string             `json:"code_version"`
	Metrics        map[string]float64 `json:"metrics"`
	Model          string             `json:"model"`
	ModelVersion   string             `json:"model_version"`
}

// SubmitJob queues a training job.
func (c *Client) SubmitJob(ctx context.Context, spec JobSpec) (j Job, err error) {
	err = c.postJSON(ctx, "/api/v1/jobs", spec, &j)
	return j, err
}

// Jobs lists training jobs, the newest first, without their histories.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var out struct {
		Jobs []Job `json:"jobs"`
	}
	err := c.getJSON(ctx, "/api/v1/jobs", &out)
	return out.Jobs, err
}

// Job returns one training job.
func (c *Client) Job(ctx context.Context, id string) (j Job, err error) {
	err = c.getJSON(ctx, "/api/v1/jobs/"+url.PathEscape(id), &j)
	return j, err
}

// CancelJob cancels a training job: a queued one at once, a running one
// soon (the answer has CancelRequested set; WaitJob for the end).
func (c *Client) CancelJob(ctx context.Context, id string) (j Job, err error) {
	err = c.do(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, "", &j)
	return j, err
}

// WaitJob asks for the job every poll until it is final and returns it,
// calling progress (if not nil) with each answer.
func (c *Client) WaitJob(ctx context.Context, id string, poll time.Duration, progress func(Job)) (Job, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return Job{}, err
		}
		if progress != nil {
			progress(j)
		}
		if j.Final() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return Job{}, ctx.Err()
		case <-t.C:
		}
	}
}
