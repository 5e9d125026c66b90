package client

import (
	"context"
	"net/url"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// DriftQuery selects the windows of a drift report; its zero value asks
// for every version, the "all" cohort and the last 24 hours.
type DriftQuery struct {
	Version string
	Cohort  string
	Last    time.Duration
}

// Drift returns model's drift by window (docs/API.md, Drift).
func (c *Client) Drift(ctx context.Context, model string, q DriftQuery) (r apiv1.DriftReport, err error) {
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
func (c *Client) DriftPolicy(ctx context.Context, model string) (p apiv1.DriftPolicy, err error) {
	err = c.getJSON(ctx, "/api/v1/drift/"+url.PathEscape(model)+"/policy", &p)
	return p, err
}

// SetDriftPolicy sets model's drift policy and returns it as stored.
func (c *Client) SetDriftPolicy(ctx context.Context, model string, p apiv1.DriftPolicy) (out apiv1.DriftPolicy, err error) {
	p.UpdatedAt = time.Time{}
	err = c.sendJSON(ctx, "PUT", "/api/v1/drift/"+url.PathEscape(model)+"/policy", p, &out)
	return out, err
}

// Alerts returns the drift alerts, newest first (of model, if not "").
func (c *Client) Alerts(ctx context.Context, model string) ([]apiv1.Alert, error) {
	var out apiv1.AlertList
	path := "/api/v1/alerts"
	if model != "" {
		path += "?model=" + url.QueryEscape(model)
	}
	err := c.getJSON(ctx, path, &out)
	return out.Alerts, err
}
