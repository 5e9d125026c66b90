package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
)

// holdTrainer reports an epoch, says it started and holds until its
// context ends.
type holdTrainer struct{ started chan struct{} }

func (h holdTrainer) Train(ctx context.Context, _ training.Spec, _ training.Data, progress func(training.Progress)) (*training.Result, error) {
	progress(training.Progress{Epoch: 1, Epochs: 20, TrainLoss: 0.9, ValidationMetric: 0.5, Metric: training.MetricAccuracy})
	h.started <- struct{}{}
	<-ctx.Done()
	return nil, fmt.Errorf("stopped: %w", ctx.Err())
}

// jobsEnv is the API with datasets and jobs behind it, on Badger in a
// temp dir; the trainer "hold" is a holdTrainer.
func jobsEnv(t *testing.T) (*env, *jobs.Runner, chan struct{}) {
	t.Helper()
	onnxrt.MustInitForTest(t)
	dir := t.TempDir()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := badgerstore.Open(filepath.Join(dir, "store"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	signer, err := trust.LoadOrCreateSigner(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(st, filepath.Join(dir, "artifacts"), signer, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.NewStore(st, filepath.Join(dir, "datasets"), log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	runner, err := jobs.New(st, ds, reg, log, time.Now, jobs.WithTrainer("hold", holdTrainer{started}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runner.Close() })
	e := &env{t: t, logs: logs, reg: reg}
	e.srv = httptest.NewServer(mustNew(t, Deps{Datasets: ds, Jobs: runner}, log))
	t.Cleanup(e.srv.Close)
	return e, runner, started
}

func (r response) job(t *testing.T, status int) jobs.Job {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d; want %d (body %s)", r.status, status, r.body)
	}
	var j jobs.Job
	r.json(t, &j)
	return j
}

func TestJobs(t *testing.T) {
	e, runner, started := jobsEnv(t)
	ctx := context.Background()
	if r := e.get("/api/v1/jobs"); r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"jobs":[]}` {
		t.Errorf("empty job list = %d %s", r.status, r.body)
	}
	if r := e.pushCSV("name=toy&label=y", toyCSV); r.status != http.StatusCreated {
		t.Fatalf("push dataset: %d %s", r.status, r.body)
	}

	r := e.postJSON("/api/v1/jobs", `{"dataset":"toy","model":"toy-clf","trainer":"hold","epochs":20,"seed":3}`)
	j := r.job(t, http.StatusAccepted)
	if loc := r.header.Get("Location"); loc != "/api/v1/jobs/"+j.ID || j.State != jobs.Queued || j.Spec.Epochs != 20 || j.Spec.Seed != 3 || j.Spec.Dataset != "toy" {
		t.Fatalf("submitted job = %+v (Location %q)", j, loc)
	}
	<-started
	got := e.get("/api/v1/jobs/"+j.ID).job(t, http.StatusOK)
	if got.State != jobs.Running || got.Progress == nil || got.Progress.Epoch != 1 || got.Progress.Epochs != 20 || len(got.History) != 1 {
		t.Errorf("running job = %+v", got)
	}
	var raw map[string]any
	e.get("/api/v1/jobs/"+j.ID).json(t, &raw)
	for _, k := range []string{"id", "state", "spec", "created_at", "started_at", "progress", "history"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("job JSON lacks %q: %v", k, raw)
		}
	}
	var list struct{ Jobs []jobs.Job }
	e.get("/api/v1/jobs").json(t, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != j.ID || list.Jobs[0].State != jobs.Running || list.Jobs[0].History != nil {
		t.Errorf("job list = %+v", list.Jobs)
	}

	if c := e.postJSON("/api/v1/jobs/"+j.ID+"/cancel", "").job(t, http.StatusOK); !c.CancelRequested {
		t.Errorf("cancel answer = %+v; want cancel_requested", c)
	}
	if _, err := runner.Wait(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if got = e.get("/api/v1/jobs/"+j.ID).job(t, http.StatusOK); got.State != jobs.Cancelled || got.FinishedAt == nil {
		t.Errorf("cancelled job = %+v", got)
	}
	e.postJSON("/api/v1/jobs/"+j.ID+"/cancel", "").wantError(t, http.StatusConflict, shoalerr.Conflict, "has cancelled already")

	// A job that cannot find its dataset fails, saying why.
	j = e.postJSON("/api/v1/jobs", `{"dataset":"nope","model":"m","trainer":"logistic"}`).job(t, http.StatusAccepted)
	if _, err := runner.Wait(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if got = e.get("/api/v1/jobs/"+j.ID).job(t, http.StatusOK); got.State != jobs.Failed || !strings.Contains(got.Error, `dataset "nope" has no versions`) {
		t.Errorf("failed job = %+v", got)
	}

	e.postJSON("/api/v1/jobs", `{"dataset":"toy","model":"m","trainer":"logistic","epoch":3}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "not the JSON this route takes")
	e.postJSON("/api/v1/jobs", `{"dataset":"toy","model":"m","trainer":"sklearn"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, `trainer "sklearn" is unknown; use one of hold, linear, logistic, mlp`)
	e.postJSON("/api/v1/jobs", "").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "needs a JSON body")
	e.get("/api/v1/jobs/job-99").wantError(t, http.StatusNotFound, shoalerr.NotFound, "there is no job job-99")
	e.postJSON("/api/v1/jobs/nope/cancel", "").wantError(t, http.StatusNotFound, shoalerr.NotFound, `there is no job "nope"`)
}
