package client

import (
	"context"
	"net/url"
	"time"
)

// FeatureDrift is the drift of one feature in one window (docs/API.md,
// Drift).
type FeatureDrift struct {
	Name  string  `json:"name"`
	Side  string  `json:"side"`
	PSI   float64 `json:"psi"`
	JS    float64 `json:"js"`
	KS    float64 `json:"ks"`
	Error string  `json:"error"`
}

// DriftWindow is the drift of a model version and cohort in one window;
// PSI, JS and KS are the largest of its features'.
type DriftWindow struct {
	Version  string         `json:"version"`
	Cohort   string         `json:"cohort"`
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end"`
	Records  uint64         `json:"records"`
	Samples  uint64         `json:"samples"`
	PSI      float64        `json:"psi"`
	JS       float64        `json:"js"`
	KS       float64        `json:"ks"`
	Features []FeatureDrift `json:"features"`
	Breach   bool           `json:"breach"`
	Error    string         `json:"error"`
}

// DriftPolicy says when a model's drift raises an alert.
type DriftPolicy struct {
	Metric     string    `json:"metric"`
	Threshold  float64   `json:"threshold"`
	MinSamples uint64    `json:"min_samples"`
	Windows    int       `json:"windows"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
}

// DriftReport is a model's drift by window, with its policy if it has
// one.
type DriftReport struct {
	Model   string        `json:"model"`
	Policy  *DriftPolicy  `json:"policy"`
	Windows []DriftWindow `json:"windows"`
}

// DriftQuery selects the windows of a DriftReport; its zero value asks
// for every version, the "all" cohort and the last 24 hours.
type DriftQuery struct {
	Version string
	Cohort  string
	Last    time.Duration
}

// Alert is a drift alert: K windows in a row breached the policy.
type Alert struct {
	ID          string         `json:"id"`
	Model       string         `json:"model"`
	Version     string         `json:"version"`
	Cohort      string         `json:"cohort"`
	Policy      DriftPolicy    `json:"policy"`
	StreakStart time.Time      `json:"streak_start"`
	Windows     []AlertWindow  `json:"windows"`
	TopFeatures []FeatureDrift `json:"top_features"`
	RaisedAt    time.Time      `json:"raised_at"`
}

// AlertWindow is one breaching window of an alert.
type AlertWindow struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Samples uint64    `json:"samples"`
	PSI     float64   `json:"psi"`
	JS      float64   `json:"js"`
	KS      float64   `json:"ks"`
}

// Drift returns model's drift by window.
func (c *Client) Drift(ctx context.Context, model string, q DriftQuery) (r DriftReport, err error) {
	v := url.Values{}
	if q.Version != "" {
		v.Set("version", q.Version)
	}
	if q.Cohort != "" {
		v.Set("cohort", q.Cohort)
	}
	if q.Last > 0 {
		v.Set("last", q.Last.String())
	}
	path := "/api/v1/drift/" + url.PathEscape(model)
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	err = c.getJSON(ctx, path, &r)
	return r, err
}

// DriftPolicy returns model's drift policy.
func (c *Client) DriftPolicy(ctx context.Context, model string) (p DriftPolicy, err error) {
	err = c.getJSON(ctx, "/api/v1/drift/"+url.PathEscape(model)+"/policy", &p)
	return p, err
}

// SetDriftPolicy sets model's drift policy and returns it as stored.
func (c *Client) SetDriftPolicy(ctx context.Context, model string, p DriftPolicy) (out DriftPolicy, err error) {
	p.UpdatedAt = time.Time{}
	err = c.sendJSON(ctx, "PUT", "/api/v1/drift/"+url.PathEscape(model)+"/policy", p, &out)
	return out, err
}

// Alerts returns the drift alerts, newest first (of model, if not "").
func (c *Client) Alerts(ctx context.Context, model string) ([]Alert, error) {
	var out struct {
		Alerts []Alert `json:"alerts"`
	}
	path := "/api/v1/alerts"
	if model != "" {
		path += "?model=" + url.QueryEscape(model)
	}
	err := c.getJSON(ctx, path, &out)
	return out.Alerts, err
}
