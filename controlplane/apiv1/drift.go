package apiv1

import "time"

// Drift metrics a DriftPolicy may watch.
const (
	MetricPSI = "psi"
	MetricJS  = "js"
	MetricKS  = "ks"
)

// DriftReport is the answer to GET /api/v1/drift/{model}: the model's
// drift by window, with its policy if it has one.
type DriftReport struct {
	Model   string        `json:"model"`
	Policy  *DriftPolicy  `json:"policy"`
	Windows []DriftWindow `json:"windows"`
}

// DriftWindow is the drift of one model version and cohort in one window.
type DriftWindow struct {
	Version string    `json:"version"`
	Cohort  string    `json:"cohort"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Records uint64    `json:"records"` // telemetry records merged
	Samples uint64    `json:"samples"` // rows observed
	// PSI, JS and KS are the overall drift: the largest of the features'.
	PSI float64 `json:"psi"`
	JS  float64 `json:"js"`
	KS  float64 `json:"ks"`
	// Features are in the reference profile's order, inputs then outputs.
	Features []FeatureDrift `json:"features"`
	// Breach is whether the window breaches the model's policy (false
	// without one).
	Breach bool `json:"breach"`
	// Error says why the window has no drift at all (no reference profile,
	// no feature with values); its metrics are then 0.
	Error string `json:"error,omitempty"`
}

// FeatureDrift is the drift of one feature in one window.
type FeatureDrift struct {
	Name string  `json:"name"`
	Side string  `json:"side"` // "input" or "output"
	PSI  float64 `json:"psi"`
	JS   float64 `json:"js"`
	KS   float64 `json:"ks"`
	// Error says why the feature has no drift (no values in the window,
	// statistics not of the profile's bins); its metrics are then 0 and
	// left out of the overall ones.
	Error string `json:"error,omitempty"`
}

// DriftPolicy says when a model's drift raises an alert: when Windows
// windows in a row each have at least MinSamples samples and an overall
// Metric at or above Threshold. It is the body of PUT
// /api/v1/drift/{model}/policy and its answer.
type DriftPolicy struct {
	Metric     string  `json:"metric"` // MetricPSI, MetricJS or MetricKS
	Threshold  float64 `json:"threshold"`
	MinSamples uint64  `json:"min_samples"`
	Windows    int     `json:"windows"`
	// UpdatedAt is when the policy was last set (the control plane sets
	// it); streaks restart then.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// AlertList is the answer to GET /api/v1/alerts, newest first.
type AlertList struct {
	Alerts []Alert `json:"alerts"`
}

// Alert says that a model version's data drifted in a cohort for
// Policy.Windows windows in a row.
type Alert struct {
	// ID is model/version/cohort/start, start the streak's first window
	// start in unix milliseconds: one alert per streak.
	ID      string      `json:"id"`
	Model   string      `json:"model"`
	Version string      `json:"version"`
	Cohort  string      `json:"cohort"`
	Policy  DriftPolicy `json:"policy"`
	// StreakStart is the start of the streak's first window.
	StreakStart time.Time `json:"streak_start"`
	// Windows are the streak's windows up to the alert, oldest first.
	Windows []AlertWindow `json:"windows"`
	// TopFeatures are the three features of the last window with the
	// largest Policy.Metric.
	TopFeatures []FeatureDrift `json:"top_features"`
	RaisedAt    time.Time      `json:"raised_at"`
}

// AlertWindow is one breaching window of an alert's streak.
type AlertWindow struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Samples uint64    `json:"samples"`
	PSI     float64   `json:"psi"`
	JS      float64   `json:"js"`
	KS      float64   `json:"ks"`
}
