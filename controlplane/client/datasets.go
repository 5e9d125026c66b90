package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// PushDataset uploads a CSV as the next version of dataset name, label
// naming its label column and task "classification", "regression" or ""
// (the control plane infers it). Pushing what the latest version holds
// returns that version.
func (c *Client) PushDataset(ctx context.Context, name, label, task string, body io.Reader) (v apiv1.DatasetVersion, err error) {
	q := url.Values{"name": {name}, "label": {label}}
	if task != "" {
		q.Set("task", task)
	}
	err = c.do(ctx, http.MethodPost, "/api/v1/datasets?"+q.Encode(), body, "text/csv", &v)
	return v, err
}

// Datasets lists datasets.
func (c *Client) Datasets(ctx context.Context) ([]apiv1.DatasetSummary, error) {
	var out apiv1.DatasetList
	err := c.getJSON(ctx, "/api/v1/datasets", &out)
	return out.Datasets, err
}

// Dataset returns every version of a dataset, oldest first.
func (c *Client) Dataset(ctx context.Context, name string) ([]apiv1.DatasetVersion, error) {
	var out apiv1.DatasetVersions
	err := c.getJSON(ctx, "/api/v1/datasets/"+url.PathEscape(name), &out)
	return out.Versions, err
}

// DatasetVersion returns one version of a dataset; version 0 is the
// latest.
func (c *Client) DatasetVersion(ctx context.Context, name string, version int) (v apiv1.DatasetVersion, err error) {
	err = c.getJSON(ctx, datasetVersionPath(name, version), &v)
	return v, err
}

// DatasetCSV writes the CSV of one version of a dataset (0: the latest)
// to w.
func (c *Client) DatasetCSV(ctx context.Context, name string, version int, w io.Writer) error {
	return c.do(ctx, http.MethodGet, datasetVersionPath(name, version)+"/csv", nil, "", w)
}

func datasetVersionPath(name string, version int) string {
	v := "latest"
	if version != 0 {
		v = strconv.Itoa(version)
	}
	return "/api/v1/datasets/" + url.PathEscape(name) + "/versions/" + v
}
