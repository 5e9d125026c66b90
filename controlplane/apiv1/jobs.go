package apiv1

import "time"

// Job states. Succeeded, Failed and Cancelled are final.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// JobList is the answer to GET /api/v1/jobs, newest first, without the
// jobs' histories.
type JobList struct {
	Jobs []Job `json:"jobs"`
}

// Job is a training job.
type Job struct {
	ID         string     `json:"id"`
	State      string     `json:"state"` // one of the Job states
	Spec       JobSpec    `json:"spec"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Progress is the last epoch reported; History the epochs so far (at
	// most 1000, thinned evenly past that).
	Progress *JobProgress  `json:"progress,omitempty"`
	History  []JobProgress `json:"history,omitempty"`
	// CancelRequested is set while a running job is being stopped.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Result is set when the job succeeded, or failed its validation
	// gates.
	Result *JobResult `json:"result,omitempty"`
	// Error says why the job failed or was cancelled.
	Error string `json:"error,omitempty"`
}

// Final reports whether the job will not change again.
func (j Job) Final() bool {
	return j.State == JobSucceeded || j.State == JobFailed || j.State == JobCancelled
}

// JobSpec is the body of POST /api/v1/jobs: a dataset version, the model
// whose next version the job makes, the gates that model must pass, and
// the training spec (its fields inline).
type JobSpec struct {
	Dataset string `json:"dataset"`
	// DatasetVersion is a version number; 0 is the latest when the job
	// runs (its lineage records which it was).
	DatasetVersion int    `json:"dataset_version,omitempty"`
	Model          string `json:"model"`
	// Gates judge the trained model before it may be deployed; zero, only
	// the defaults apply.
	Gates Gates `json:"gates,omitzero"`
	TrainingSpec
}

// TrainingSpec says how to train. A zero field other than Trainer, Task
// and Seed takes the trainer's default; an empty Task is the dataset's.
type TrainingSpec struct {
	Trainer string `json:"trainer"`
	Task    string `json:"task"` // TaskClassification or TaskRegression
	// Hidden lists the hidden layers' widths (mlp only).
	Hidden []int `json:"hidden,omitempty"`
	// Activation between layers: "relu" or "tanh".
	Activation   string  `json:"activation,omitempty"`
	LearningRate float64 `json:"learning_rate,omitempty"`
	// Epochs is the most passes over the training split.
	Epochs    int     `json:"epochs,omitempty"`
	BatchSize int     `json:"batch_size,omitempty"`
	L2        float64 `json:"l2,omitempty"`
	Seed      uint64  `json:"seed"`
	// ValidationSplit is the share of the training rows kept aside to
	// pick the best epoch and stop early.
	ValidationSplit float64 `json:"validation_split,omitempty"`
	// Patience stops training after this many epochs without a lower
	// validation loss (-1 never stops early).
	Patience int `json:"patience,omitempty"`
	// Holdout is the share of the rows kept out of training to measure
	// the model.
	Holdout float64 `json:"holdout,omitempty"`
}

// JobProgress is one epoch of a training job, or a line a command trainer
// wrote.
type JobProgress struct {
	Epoch            int     `json:"epoch,omitempty"`
	Epochs           int     `json:"epochs,omitempty"`
	TrainLoss        float64 `json:"train_loss,omitempty"`
	ValidationLoss   float64 `json:"validation_loss,omitempty"`
	ValidationMetric float64 `json:"validation_metric,omitempty"`
	Metric           string  `json:"metric,omitempty"`
	// Line is a line a command trainer wrote, and Stream where
	// ("stdout" or "stderr").
	Line   string `json:"line,omitempty"`
	Stream string `json:"stream,omitempty"`
}

// JobResult is what a job made.
type JobResult struct {
	Model        string `json:"model"`
	ModelVersion string `json:"model_version"`
	ModelSHA256  string `json:"model_sha256"`
	// Metrics are measured on the holdout rows.
	Metrics   map[string]float64 `json:"metrics"`
	Epochs    int                `json:"epochs"`
	BestEpoch int                `json:"best_epoch"`
	// Rows in each split (built-in trainers).
	TrainRows      int `json:"train_rows,omitempty"`
	ValidationRows int `json:"validation_rows,omitempty"`
	HoldoutRows    int `json:"holdout_rows,omitempty"`
	// Imputed are the features whose missing values the model replaces.
	Imputed []Imputation `json:"imputed,omitempty"`
	// ProfileBytes is the size of the reference profile stored with the
	// version; ProfileError says why none was, if so.
	ProfileBytes int        `json:"profile_bytes,omitempty"`
	ProfileError string     `json:"profile_error,omitempty"`
	Lineage      JobLineage `json:"lineage"`
	// Validation is the gates' verdict, also stored with the version.
	Validation *Validation `json:"validation,omitempty"`
}

// Imputation says that Missing of a feature's training rows had no value,
// and the Value that replaced them (in the model too).
type Imputation struct {
	Feature string  `json:"feature"`
	Missing int     `json:"missing"`
	Value   float64 `json:"value"`
}

// JobLineage is what a model version was made from and how.
type JobLineage struct {
	Dataset        string   `json:"dataset"`
	DatasetVersion int      `json:"dataset_version"`
	DatasetSHA256  string   `json:"dataset_sha256"`
	DatasetRows    int      `json:"dataset_rows"`
	Features       []string `json:"features"`
	Label          string   `json:"label"`
	Classes        []string `json:"classes,omitempty"`
	Trainer        string   `json:"trainer"`
	// Spec is the training spec as run, every default filled in for the
	// built-in trainers: it trains the same model again.
	Spec TrainingSpec `json:"spec"`
	// CodeVersion is the control plane's version.
	CodeVersion  string             `json:"code_version"`
	Metrics      map[string]float64 `json:"metrics"`
	Model        string             `json:"model"`
	ModelVersion string             `json:"model_version"`
}
