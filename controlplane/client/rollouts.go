package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"
)

// Rollout is a staged rollout (docs/API.md, Rollouts).
type Rollout struct {
	ID              string          `json:"id"`
	Model           string          `json:"model"`
	Version         string          `json:"version"`
	State           string          `json:"state"`
	Reason          string          `json:"reason"`
	Stage           string          `json:"stage"`
	Targets         int             `json:"targets"`
	ReleaseSequence uint64          `json:"release_sequence"`
	Phases          map[string]int  `json:"phases"`
	Stages          []RolloutStage  `json:"stages"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	EndedAt         *time.Time      `json:"ended_at"`
	Spec            json.RawMessage `json:"spec"`
	Devices         []RolloutDevice `json:"devices"`
	Events          []RolloutEvent  `json:"events,omitempty"`
}

// Ended reports whether the rollout is over: completed, rolled back or
// aborted.
func (r Rollout) Ended() bool {
	return r.State == "completed" || r.State == "rolled_back" || r.State == "aborted"
}

// RolloutStage is one stage's progress.
type RolloutStage struct {
	Name      string     `json:"name"`
	State     string     `json:"state"`
	Size      int        `json:"size"`
	Notified  int        `json:"notified"`
	Healthy   int        `json:"healthy"`
	Failed    int        `json:"failed"`
	Offline   int        `json:"offline"`
	StartedAt *time.Time `json:"started_at"`
	GateMetAt *time.Time `json:"gate_met_at"`
	PassedAt  *time.Time `json:"passed_at"`
	Promoted  bool       `json:"promoted"`
}

// RolloutDevice is one device's phase in a rollout.
type RolloutDevice struct {
	ID         string     `json:"id"`
	Stage      string     `json:"stage"`
	Phase      string     `json:"phase"`
	Reason     string     `json:"reason"`
	Previous   string     `json:"previous_version"`
	NotifiedAt *time.Time `json:"notified_at"`
	ChangedAt  time.Time  `json:"changed_at"`
}

// RolloutEvent is one change in a rollout.
type RolloutEvent struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Stage   string    `json:"stage"`
	Device  string    `json:"device"`
	Phase   string    `json:"phase"`
	Message string    `json:"message"`
}

// CreateRollout starts a rollout. spec is the rollout's JSON form (a
// struct, a map or json.RawMessage); the server checks it.
func (c *Client) CreateRollout(ctx context.Context, spec any) (r Rollout, err error) {
	err = c.postJSON(ctx, "/api/v1/rollouts", spec, &r)
	return r, err
}

// Rollouts lists rollouts, newest first (of model, if not "").
func (c *Client) Rollouts(ctx context.Context, model string) ([]Rollout, error) {
	var out struct {
		Rollouts []Rollout `json:"rollouts"`
	}
	path := "/api/v1/rollouts"
	if model != "" {
		path += "?model=" + url.QueryEscape(model)
	}
	err := c.getJSON(ctx, path, &out)
	return out.Rollouts, err
}

// Rollout returns one rollout with its devices and events.
func (c *Client) Rollout(ctx context.Context, id string) (r Rollout, err error) {
	err = c.getJSON(ctx, "/api/v1/rollouts/"+url.PathEscape(id), &r)
	return r, err
}

// RolloutEvents returns a rollout's events after seq (0 for all).
func (c *Client) RolloutEvents(ctx context.Context, id string, after uint64) ([]RolloutEvent, error) {
	var out struct {
		Events []RolloutEvent `json:"events"`
	}
	err := c.getJSON(ctx, fmt.Sprintf("/api/v1/rollouts/%s/events?after=%d", url.PathEscape(id), after), &out)
	return out.Events, err
}

// RolloutAction runs pause, resume, promote, abort or rollback on a
// rollout and returns it afterwards.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (r Rollout, err error) {
	err = c.postJSON(ctx, "/api/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), struct{}{}, &r)
	return r, err
}
