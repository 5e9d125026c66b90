package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// Captures returns model's capture counts (docs/API.md, Captures): rows
// kept, those with a label, and rows by model version.
func (c *Client) Captures(ctx context.Context, model string) (n apiv1.CaptureCounts, err error) {
	err = c.getJSON(ctx, "/api/v1/captures/"+url.PathEscape(model), &n)
	return n, err
}

// CapturesToDataset stores model's labelled captured rows as the next
// version of dataset name, the label in column label ("" for "label"),
// and returns that version.
func (c *Client) CapturesToDataset(ctx context.Context, model, name, label string) (v apiv1.DatasetVersion, err error) {
	q := url.Values{"name": {name}}
	if label != "" {
		q.Set("label", label)
	}
	err = c.do(ctx, http.MethodPost, "/api/v1/captures/"+url.PathEscape(model)+"/dataset?"+q.Encode(), nil, "", &v)
	return v, err
}
