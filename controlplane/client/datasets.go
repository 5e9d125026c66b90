package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// DatasetFeature is one feature column of a dataset.
type DatasetFeature struct {
	Name        string   `json:"name"`
	Categorical bool     `json:"categorical"`
	Categories  []string `json:"categories,omitempty"`
}

// DatasetVersion is one stored version of a dataset (docs/API.md,
// Datasets).
type DatasetVersion struct {
	Name      string           `json:"name"`
	Version   int              `json:"version"`
	SHA256    string           `json:"sha256"`
	Size      int64            `json:"size"`
	Label     string           `json:"label"`
	Task      string           `json:"task"`
	Rows      int              `json:"rows"`
	Features  []DatasetFeature `json:"features"`
	Classes   []string         `json:"classes,omitempty"`
	CreatedAt time.Time        `json:"created_at"`
	CSVURL    string           `json:"csv_url"`
}

// DatasetSummary is one dataset in the dataset list, described by its
// latest version.
type DatasetSummary struct {
	Name      string    `json:"name"`
	Versions  int       `json:"versions"`
	Latest    int       `json:"latest"`
	Label     string    `json:"label"`
	Task      string    `json:"task"`
	Rows      int       `json:"rows"`
	Features  int       `json:"features"`
	Classes   int       `json:"classes"`
	Size      int64     `json:"size"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PushDataset uploads a CSV as the next version of dataset name, label
// naming its label column and task "classification", "regression" or ""
// (the control plane infers it). Pushing what the latest version holds
// returns that version.
func (c *Client) PushDataset(ctx context.Context, name, label, task string, body io.Reader) (v DatasetVersion, err error) {
	q := url.Values{"name": {name}, "label": {label}}
	if task != "" {
		q.Set("task", task)
	}
	err = c.do(ctx, http.MethodPost, "/api/v1/datasets?"+q.Encode(), body, "text/csv", &v)
	return v, err
}

// Datasets lists datasets.
func (c *Client) Datasets(ctx context.Context) ([]DatasetSummary, error) {
	var out struct {
		Datasets []DatasetSummary `json:"datasets"`
	}
	err := c.getJSON(ctx, "/api/v1/datasets", &out)
	return out.Datasets, err
}

// Dataset returns every version of a dataset, oldest first.
func (c *Client) Dataset(ctx context.Context, name string) ([]DatasetVersion, error) {
	var out struct {
		Versions []DatasetVersion `json:"versions"`
	}
	err := c.getJSON(ctx, "/api/v1/datasets/"+url.PathEscape(name), &out)
	return out.Versions, err
}

// DatasetVersion returns one version of a dataset; version 0 is the
// latest.
func (c *Client) DatasetVersion(ctx context.Context, name string, version int) (v DatasetVersion, err error) {
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
