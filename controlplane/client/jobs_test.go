package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestJobRequests(t *testing.T) {
	ctx := context.Background()
	c, last := recordingServer(t, `{"id":"job-3","state":"queued","spec":{"dataset":"iris","model":"m","trainer":"mlp","seed":0},"created_at":"2026-01-02T03:04:05Z"}`)

	j, err := c.SubmitJob(ctx, JobSpec{Dataset: "iris", Model: "m", TrainingSpec: TrainingSpec{Trainer: "mlp", Hidden: []int{64, 32}, Epochs: 5}})
	if err != nil || j.ID != "job-3" || j.State != "queued" || j.Final() {
		t.Fatalf("SubmitJob = %+v, %v", j, err)
	}
	q := last()
	var sent map[string]any
	if err := json.Unmarshal([]byte(q.body), &sent); err != nil || q.method != http.MethodPost || q.path != "/api/v1/jobs" {
		t.Fatalf("SubmitJob asked %+v", q)
	}
	// Unset fields stay out, so the control plane applies its defaults;
	// the seed is always sent (0 is a seed), and so is the task, as the
	// control plane writes it ("" is the dataset's task).
	want := map[string]any{"dataset": "iris", "model": "m", "trainer": "mlp", "task": "", "hidden": []any{64.0, 32.0}, "epochs": 5.0, "seed": 0.0}
	if len(sent) != len(want) {
		t.Errorf("SubmitJob sent %v; want %v", sent, want)
	}
	if _, err := c.CancelJob(ctx, "job-3"); err != nil {
		t.Fatal(err)
	}
	if q := last(); q.method != http.MethodPost || q.path != "/api/v1/jobs/job-3/cancel" {
		t.Errorf("CancelJob asked %+v", q)
	}
	if _, err := c.Job(ctx, "job-3"); err != nil || last().path != "/api/v1/jobs/job-3" {
		t.Errorf("Job asked %+v (%v)", last(), err)
	}
}

// TestWaitJob follows a job through running to succeeded.
func TestWaitJob(t *testing.T) {
	answers := []string{
		`{"id":"job-1","state":"running","progress":{"epoch":1,"epochs":3}}`,
		`{"id":"job-1","state":"running","progress":{"epoch":2,"epochs":3}}`,
		`{"id":"job-1","state":"succeeded","progress":{"epoch":3,"epochs":3},"result":{"model":"m","model_version":"4","metrics":{"accuracy":0.95}}}`,
	}
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := min(int(n.Add(1))-1, len(answers)-1)
		io.WriteString(w, answers[i])
	}))
	t.Cleanup(srv.Close)
	c, _ := New(srv.URL)
	var epochs []int
	j, err := c.WaitJob(context.Background(), "job-1", time.Millisecond, func(j Job) { epochs = append(epochs, j.Progress.Epoch) })
	if err != nil || j.State != "succeeded" || j.Result.ModelVersion != "4" || j.Result.Metrics["accuracy"] != 0.95 {
		t.Fatalf("WaitJob = %+v, %v", j, err)
	}
	if len(epochs) != 3 || epochs[2] != 3 {
		t.Errorf("progress saw epochs %v; want 1, 2, 3", epochs)
	}
}
