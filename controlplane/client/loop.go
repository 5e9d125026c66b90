package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// LoopPolicy is a model's retraining policy (docs/API.md, Retraining
// loop). Rollout is the rollout template's JSON form (as for
// CreateRollout); nil stops at the signed candidate.
type LoopPolicy struct {
	Retrain   bool            `json:"retrain"`
	Dataset   string          `json:"dataset,omitempty"`
	Captures  bool            `json:"captures,omitempty"`
	Gates     *Gates          `json:"gates,omitempty"`
	Rollout   json.RawMessage `json:"rollout,omitempty"`
	Cooldown  string          `json:"cooldown,omitempty"`
	UpdatedAt time.Time       `json:"updated_at,omitzero"`
}

// LoopRun is one retraining run started by a drift alert.
type LoopRun struct {
	Model          string      `json:"model"`
	Seq            uint64      `json:"seq"`
	State          string      `json:"state"`
	Alert          string      `json:"alert"`
	FromVersion    string      `json:"from_version"`
	Cohort         string      `json:"cohort"`
	LineageJob     string      `json:"lineage_job"`
	Job            string      `json:"job"`
	Dataset        string      `json:"dataset"`
	DatasetVersion int         `json:"dataset_version"`
	CapturedRows   int         `json:"captured_rows"`
	Version        string      `json:"version"`
	Rollout        string      `json:"rollout"`
	RolloutState   string      `json:"rollout_state"`
	Reasons        []string    `json:"reasons"`
	StartedAt      time.Time   `json:"started_at"`
	UpdatedAt      time.Time   `json:"updated_at"`
	Events         []LoopEvent `json:"events"`
}

// LoopEvent is one step of a retraining run.
type LoopEvent struct {
	At      time.Time `json:"at"`
	State   string    `json:"state"`
	Message string    `json:"message"`
}

// SetLoopPolicy stores model's retraining policy and returns it as stored
// (defaults filled in).
func (c *Client) SetLoopPolicy(ctx context.Context, model string, p LoopPolicy) (out LoopPolicy, err error) {
	data, err := json.Marshal(p)
	if err != nil {
		return LoopPolicy{}, err
	}
	err = c.do(ctx, http.MethodPut, "/api/v1/loop/"+url.PathEscape(model)+"/policy", bytes.NewReader(data), "application/json", &out)
	return out, err
}

// LoopPolicy returns model's retraining policy.
func (c *Client) LoopPolicy(ctx context.Context, model string) (p LoopPolicy, err error) {
	err = c.getJSON(ctx, "/api/v1/loop/"+url.PathEscape(model)+"/policy", &p)
	return p, err
}

// LoopRuns returns model's retraining runs, newest first.
func (c *Client) LoopRuns(ctx context.Context, model string) ([]LoopRun, error) {
	var out struct {
		Runs []LoopRun `json:"runs"`
	}
	err := c.getJSON(ctx, "/api/v1/loop/"+url.PathEscape(model), &out)
	return out.Runs, err
}
