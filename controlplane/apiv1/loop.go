package apiv1

import "time"

// LoopPolicy is a model's retraining policy: what a drift alert on the
// model does. It is the body of PUT /api/v1/loop/{model}/policy and its
// answer.
type LoopPolicy struct {
	// Retrain turns the loop on for the model; false keeps the policy but
	// starts nothing.
	Retrain bool `json:"retrain"`
	// Dataset, if set, is trained on instead of the lineage job's.
	Dataset string `json:"dataset,omitempty"`
	// Captures adds the model's labelled captured rows to the dataset's
	// latest version, pushed as a new version to train on.
	Captures bool `json:"captures,omitempty"`
	// Gates, if set, replace the lineage job's gates.
	Gates *Gates `json:"gates,omitempty"`
	// Rollout is the template of the candidate's rollout, without model
	// and version (the loop fills them in); its last stage must be
	// percent: 100. Nil stops at the signed candidate.
	Rollout *RolloutSpec `json:"rollout,omitempty"`
	// Cooldown is the least time between the starts of two runs of the
	// model (1h if 0).
	Cooldown Duration `json:"cooldown,omitempty"`
	// UpdatedAt is when the policy was set (the control plane sets it).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Retraining run states. Rejected, Failed and Done are final, and so is
// Candidate when the policy has no rollout.
const (
	LoopTraining   = "training"
	LoopRejected   = "rejected"
	LoopCandidate  = "candidate"
	LoopRollingOut = "rolling_out"
	LoopDone       = "done"
	LoopFailed     = "failed"
)

// LoopRuns is the answer to GET /api/v1/loop/{model}: the model's
// retraining runs, newest first.
type LoopRuns struct {
	Model string    `json:"model"`
	Runs  []LoopRun `json:"runs"`
}

// LoopRun is one turn of the loop for a model: from a drift alert to a
// rejected or signed candidate, and its rollout.
type LoopRun struct {
	Model string `json:"model"`
	// Seq numbers the model's runs from 1.
	Seq   uint64 `json:"seq"`
	State string `json:"state"` // one of the retraining run states
	// Alert is the id of the drift alert that started the run;
	// FromVersion and Cohort are the alert's.
	Alert       string `json:"alert"`
	FromVersion string `json:"from_version"`
	Cohort      string `json:"cohort"`
	// LineageJob is the job that made FromVersion; Job the retraining
	// job, on Dataset at DatasetVersion.
	LineageJob     string `json:"lineage_job,omitempty"`
	Job            string `json:"job,omitempty"`
	Dataset        string `json:"dataset,omitempty"`
	DatasetVersion int    `json:"dataset_version,omitempty"`
	// CapturedRows is how many labelled captured rows were added to the
	// dataset: DatasetVersion holds them after the reference rows.
	CapturedRows int `json:"captured_rows,omitempty"`
	// Version is the version the job made (a candidate only if it passed).
	Version string `json:"version,omitempty"`
	// Rollout is the candidate's rollout id; RolloutState its state as
	// last seen.
	Rollout      string `json:"rollout,omitempty"`
	RolloutState string `json:"rollout_state,omitempty"`
	// Reasons say why the run was rejected or failed.
	Reasons   []string    `json:"reasons,omitempty"`
	StartedAt time.Time   `json:"started_at"`
	UpdatedAt time.Time   `json:"updated_at"`
	Events    []LoopEvent `json:"events"`
}

// LoopEvent is a change of a retraining run's state.
type LoopEvent struct {
	At      time.Time `json:"at"`
	State   string    `json:"state"`
	Message string    `json:"message"`
}
