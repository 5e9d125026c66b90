package apiv1

import (
	"encoding/json"
	"time"
)

// ModelList is the answer to GET /api/v1/models.
type ModelList struct {
	Models []ModelSummary `json:"models"`
}

// ModelSummary is one model of the model list. Versions are in push
// order; Latest is the one pushed last.
type ModelSummary struct {
	Name      string    `json:"name"`
	Versions  []string  `json:"versions"`
	Latest    string    `json:"latest"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ModelVersions is the answer to GET /api/v1/models/{name}: every version,
// in push order.
type ModelVersions struct {
	Name     string         `json:"name"`
	Versions []ModelVersion `json:"versions"`
}

// ModelVersion is one stored version of a model.
type ModelVersion struct {
	Name        string       `json:"name"`
	Version     string       `json:"version"`
	SHA256      string       `json:"sha256"`
	Size        int64        `json:"size"`
	CreatedAt   time.Time    `json:"created_at"`
	ArtifactURL string       `json:"artifact_url"`
	Signature   string       `json:"signature"`
	KeyID       string       `json:"key_id"`
	Inputs      []TensorSpec `json:"inputs"`
	Outputs     []TensorSpec `json:"outputs"`
	// Validation is the verdict of a training job's gates; nil for a
	// version pushed by hand. A version that failed has no Signature and
	// cannot be deployed.
	Validation *Validation `json:"validation,omitempty"`
}

// TensorSpec is a model input or output. DataType is the Open Inference
// Protocol's name ("FP32", "INT64", "BYTES", ...); -1 in Shape is a
// dimension of any size.
type TensorSpec struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// Validation verdicts.
const (
	ValidationPassed = "passed"
	ValidationFailed = "failed"
)

// Validation is the validation gates' verdict on a trained model version
// (docs/API.md, Validation gates).
type Validation struct {
	Status string            `json:"status"` // ValidationPassed or ValidationFailed
	Checks []ValidationCheck `json:"checks"`
	// Reasons say why each failed check failed.
	Reasons []string `json:"reasons,omitempty"`
	// Champion is the version compared with, if any.
	Champion    string `json:"champion,omitempty"`
	HoldoutRows int    `json:"holdout_rows"`
	// Gates are the gates as applied, defaults filled in.
	Gates Gates `json:"gates"`
	// Lineage is the version's JobLineage.
	Lineage     json.RawMessage `json:"lineage,omitempty"`
	ValidatedAt time.Time       `json:"validated_at"`
}

// ValidationCheck is one gate's result: Value is what was measured, Limit
// what it was held to.
type ValidationCheck struct {
	Name   string  `json:"name"`
	Passed bool    `json:"passed"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Detail string  `json:"detail,omitempty"`
}

// Gates are what a trained model must pass to be signed (docs/API.md,
// Validation gates). A zero threshold is no threshold; zero
// ChampionMargin, MaxLatencyP95 and LatencyRuns take their defaults.
type Gates struct {
	MinAccuracy float64 `json:"min_accuracy,omitempty"`
	MinF1       float64 `json:"min_macro_f1,omitempty"`
	MaxRMSE     float64 `json:"max_rmse,omitempty"`
	MaxMAE      float64 `json:"max_mae,omitempty"`
	// ChampionMargin is how much worse than the deployed champion the
	// candidate may be: accuracy points for classification, a share of
	// the champion's RMSE for regression.
	ChampionMargin float64 `json:"champion_margin,omitempty"`
	LatencyRuns    int     `json:"latency_runs,omitempty"`
	// MaxLatencyP95 bounds the 95th percentile latency of LatencyRuns
	// runs of one row ("50ms").
	MaxLatencyP95 Duration `json:"max_latency_p95,omitempty"`
}

// DeployRequest is the body of POST /api/v1/deployments.
type DeployRequest struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Devices are the target devices; none is every enrolled device.
	Devices []string `json:"devices,omitempty"`
	// Rollback deliberately goes back to an older version: agents accept
	// it although they have applied a higher release.
	Rollback bool `json:"rollback,omitempty"`
	// Profile is the firmware profile the artifact is for.
	Profile string `json:"profile,omitempty"`
	// TTL is the manifest's lifetime, a duration string ("720h" if "").
	TTL string `json:"ttl,omitempty"`
	// CaptureShare is the share (0 to 1) of predictions the agents
	// capture, with their inputs, for retraining.
	CaptureShare float64 `json:"capture_share,omitempty"`
}

// Deployment is the answer to POST /api/v1/deployments.
type Deployment struct {
	Model           string           `json:"model"`
	Version         string           `json:"version"`
	ReleaseSequence uint64           `json:"release_sequence"`
	ExpiresAt       time.Time        `json:"expires_at"`
	Devices         []DeployedDevice `json:"devices"`
}

// DeployedDevice is a device a deployment went to, at the generation of
// its desired state that holds it.
type DeployedDevice struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
}
