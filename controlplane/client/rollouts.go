package client

import (
	"context"
	"fmt"
	"net/url"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// CreateRollout starts a rollout of spec (docs/API.md, Rollouts); the
// server checks it and fills its defaults.
func (c *Client) CreateRollout(ctx context.Context, spec apiv1.RolloutSpec) (r apiv1.Rollout, err error) {
	err = c.postJSON(ctx, "/api/v1/rollouts", spec, &r)
	return r, err
}

// Rollouts lists rollouts, newest first (of model, if not "").
func (c *Client) Rollouts(ctx context.Context, model string) ([]apiv1.Rollout, error) {
	var out apiv1.RolloutList
	path := "/api/v1/rollouts"
	if model != "" {
		path += "?model=" + url.QueryEscape(model)
	}
	err := c.getJSON(ctx, path, &out)
	return out.Rollouts, err
}

// Rollout returns one rollout with its devices and events.
func (c *Client) Rollout(ctx context.Context, id string) (r apiv1.Rollout, err error) {
	err = c.getJSON(ctx, "/api/v1/rollouts/"+url.PathEscape(id), &r)
	return r, err
}

// RolloutEvents returns a rollout's events after seq (0 for all).
func (c *Client) RolloutEvents(ctx context.Context, id string, after uint64) ([]apiv1.RolloutEvent, error) {
	var out apiv1.RolloutEvents
	err := c.getJSON(ctx, fmt.Sprintf("/api/v1/rollouts/%s/events?after=%d", url.PathEscape(id), after), &out)
	return out.Events, err
}

// RolloutAction runs pause, resume, promote, abort or rollback on a
// rollout and returns it afterwards.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (r apiv1.Rollout, err error) {
	err = c.postJSON(ctx, "/api/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), struct{}{}, &r)
	return r, err
}
