package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// SetLoopPolicy stores model's retraining policy (docs/API.md, Retraining
// loop) and returns it as stored (defaults filled in).
func (c *Client) SetLoopPolicy(ctx context.Context, model string, p apiv1.LoopPolicy) (out apiv1.LoopPolicy, err error) {
	err = c.sendJSON(ctx, http.MethodPut, "/api/v1/loop/"+url.PathEscape(model)+"/policy", p, &out)
	return out, err
}

// LoopPolicy returns model's retraining policy.
func (c *Client) LoopPolicy(ctx context.Context, model string) (p apiv1.LoopPolicy, err error) {
	err = c.getJSON(ctx, "/api/v1/loop/"+url.PathEscape(model)+"/policy", &p)
	return p, err
}

// LoopRuns returns model's retraining runs, newest first.
func (c *Client) LoopRuns(ctx context.Context, model string) ([]apiv1.LoopRun, error) {
	var out apiv1.LoopRuns
	err := c.getJSON(ctx, "/api/v1/loop/"+url.PathEscape(model), &out)
	return out.Runs, err
}
