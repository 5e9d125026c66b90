package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const datasetJSON = `{"name":"iris","version":2,"sha256":"ab12","size":4551,"label":"Species","task":"classification","rows":150,
 "features":[{"name":"Sepal length","categorical":false},{"name":"soil","categorical":true,"categories":["clay","sand"]}],
 "classes":["Iris-setosa","Iris-versicolor","Iris-virginica"],"created_at":"2026-01-02T03:04:05Z",
 "csv_url":"/api/v1/datasets/iris/versions/2/csv"}`

func TestDatasetRequests(t *testing.T) {
	ctx := context.Background()
	c, last := recordingServer(t, datasetJSON)

	for task, query := range map[string]string{
		"":           "label=Species+name&name=iris",
		"regression": "label=Species+name&name=iris&task=regression",
	} {
		v, err := c.PushDataset(ctx, "iris", "Species name", task, strings.NewReader("a,b\n1,2\n"))
		if err != nil {
			t.Fatal(err)
		}
		if q := last(); q.method != http.MethodPost || q.path != "/api/v1/datasets" || q.query != query || q.body != "a,b\n1,2\n" {
			t.Errorf("PushDataset(task %q) asked %+v; want ?%s", task, q, query)
		}
		if v.Name != "iris" || v.Version != 2 || v.Rows != 150 || v.Task != "classification" || len(v.Classes) != 3 ||
			v.Features[1].Categories[1] != "sand" || !v.Features[1].Categorical || v.CreatedAt.IsZero() || v.CSVURL == "" {
			t.Errorf("version = %+v", v)
		}
	}
	for version, path := range map[int]string{0: "/api/v1/datasets/iris/versions/latest", 2: "/api/v1/datasets/iris/versions/2"} {
		if _, err := c.DatasetVersion(ctx, "iris", version); err != nil {
			t.Fatal(err)
		}
		if q := last(); q.method != http.MethodGet || q.path != path {
			t.Errorf("DatasetVersion(%d) asked %+v; want %s", version, q, path)
		}
	}

	c, last = recordingServer(t, `{"name":"iris","versions":[`+datasetJSON+`]}`)
	vs, err := c.Dataset(ctx, "iris")
	if err != nil || len(vs) != 1 || vs[0].Label != "Species" {
		t.Errorf("Dataset = %+v, %v", vs, err)
	}
	if q := last(); q.path != "/api/v1/datasets/iris" {
		t.Errorf("Dataset asked %+v", q)
	}

	c, last = recordingServer(t, `{"datasets":[{"name":"iris","versions":2,"latest":2,"label":"Species","task":"classification",
	 "rows":150,"features":4,"classes":3,"size":4551,"updated_at":"2026-01-02T03:04:05Z"}]}`)
	list, err := c.Datasets(ctx)
	if err != nil || len(list) != 1 || list[0].Latest != 2 || list[0].Features != 4 || list[0].Classes != 3 || list[0].UpdatedAt.IsZero() {
		t.Errorf("Datasets = %+v, %v", list, err)
	}
	if q := last(); q.method != http.MethodGet || q.path != "/api/v1/datasets" {
		t.Errorf("Datasets asked %+v", q)
	}

	c, last = recordingServer(t, "a,b\n1,2\n")
	var csv bytes.Buffer
	if err := c.DatasetCSV(ctx, "iris", 0, &csv); err != nil || csv.String() != "a,b\n1,2\n" {
		t.Errorf("DatasetCSV = %q, %v", csv.String(), err)
	}
	if q := last(); q.path != "/api/v1/datasets/iris/versions/latest/csv" {
		t.Errorf("DatasetCSV asked %+v", q)
	}
}

// TestPushDatasetError: the server's refusal, naming the row and column,
// reaches the caller as it was written.
func TestPushDatasetError(t *testing.T) {
	const msg = `dataset iris not stored: row 17, column "Petal width": "abc" is not a number (15 of the column's 16 values are numbers; fix the cell, or leave it empty for a missing value)`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "invalid", "message": msg}})
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PushDataset(context.Background(), "iris", "Species", "", strings.NewReader("x"))
	if StatusOf(err) != http.StatusBadRequest || err.Error() != msg {
		t.Errorf("error = %v (status %d)", err, StatusOf(err))
	}
}
