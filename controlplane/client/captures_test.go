package client

import (
	"context"
	"net/http"
	"testing"
)

func TestCaptureRequests(t *testing.T) {
	ctx := context.Background()
	c, last := recordingServer(t, `{"model":"m 1","rows":5,"labelled":4,"by_version":{"1":3,"2":2}}`)
	n, err := c.Captures(ctx, "m 1")
	if err != nil {
		t.Fatal(err)
	}
	if q := last(); q.method != http.MethodGet || q.path != "/api/v1/captures/m 1" {
		t.Errorf("Captures asked %+v", q)
	}
	if n.Model != "m 1" || n.Rows != 5 || n.Labelled != 4 || n.ByVersion["2"] != 2 {
		t.Errorf("counts = %+v", n)
	}

	c, last = recordingServer(t, datasetJSON)
	for label, query := range map[string]string{"": "name=iris", "Species name": "label=Species+name&name=iris"} {
		v, err := c.CapturesToDataset(ctx, "m1", "iris", label)
		if err != nil {
			t.Fatal(err)
		}
		if q := last(); q.method != http.MethodPost || q.path != "/api/v1/captures/m1/dataset" || q.query != query || q.body != "" {
			t.Errorf("CapturesToDataset(label %q) asked %+v; want ?%s", label, q, query)
		}
		if v.Name != "iris" || v.Version != 2 || v.Rows != 150 {
			t.Errorf("version = %+v", v)
		}
	}
}
