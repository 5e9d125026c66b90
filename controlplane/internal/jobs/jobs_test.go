package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
)

// env is a runner on a real Badger store, registry and dataset store in a
// temporary directory.
type env struct {
	t        *testing.T
	dir      string
	st       *badgerstore.Store
	reg      *registry.Registry
	datasets *dataset.Store
	runner   *Runner
	opts     []Option
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	onnxrt.MustInitForTest(t)
	e := &env{t: t, dir: t.TempDir(), opts: opts}
	e.open()
	t.Cleanup(func() {
		e.runner.Close()
		e.st.Close()
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	log := slog.New(slog.DiscardHandler)
	var err error
	if e.st, err = badgerstore.Open(filepath.Join(e.dir, "store"), log); err != nil {
		e.t.Fatal(err)
	}
	signer, err := trust.LoadOrCreateSigner(filepath.Join(e.dir, "key.pem"))
	if err != nil {
		e.t.Fatal(err)
	}
	if e.reg, err = registry.New(e.st, filepath.Join(e.dir, "artifacts"), signer, log, nil); err != nil {
		e.t.Fatal(err)
	}
	if e.datasets, err = dataset.NewStore(e.st, filepath.Join(e.dir, "datasets"), log, nil); err != nil {
		e.t.Fatal(err)
	}
	if e.runner, err = New(e.st, e.datasets, e.reg, log, nil, e.opts...); err != nil {
		e.t.Fatal(err)
	}
}

// restart closes the runner and the store and opens them again.
func (e *env) restart() {
	e.t.Helper()
	e.runner.Close()
	e.st.Close()
	e.open()
}

// pushIris pushes the shared iris.csv as dataset "iris", or skips the test.
func (e *env) pushIris() {
	e.t.Helper()
	dir := os.Getenv("SHOAL_DATASETS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "datasets")
	}
	f, err := os.Open(filepath.Join(dir, "iris.csv"))
	if errors.Is(err, fs.ErrNotExist) {
		e.t.Skipf("iris.csv is absent (%v); it lives in the shared datasets folder next to the repository, or set $SHOAL_DATASETS", err)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := e.datasets.Push(context.Background(), "iris", "Species", "", f); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) submit(spec Spec) Job {
	e.t.Helper()
	j, err := e.runner.Submit(context.Background(), spec)
	if err != nil {
		e.t.Fatal(err)
	}
	if j.State != Queued || !strings.HasPrefix(j.ID, "job-") {
		e.t.Fatalf("submitted job = %+v; want a queued job-N", j)
	}
	return j
}

func (e *env) wait(id string) Job {
	e.t.Helper()
	j, err := e.runner.Wait(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func irisSpec(model, trainer string) Spec {
	return Spec{Dataset: "iris", Model: model, Spec: training.Spec{Trainer: trainer, Seed: 1}}
}

func TestTrainIrisPushesVersionWithProfileAndLineage(t *testing.T) {
	e := newEnv(t)
	e.pushIris()
	ctx := context.Background()

	j := e.wait(e.submit(irisSpec("iris", training.Logistic)).ID)
	if j.State != Succeeded || j.Result == nil {
		t.Fatalf("job = %s (%s); want succeeded", j.State, j.Error)
	}
	res := j.Result
	if acc := res.Metrics[training.MetricAccuracy]; acc < 0.9 {
		t.Errorf("holdout accuracy = %g; want ≥ 0.9", acc)
	}
	if res.ModelVersion != "1" || res.Model != "iris" || j.StartedAt == nil || j.FinishedAt == nil {
		t.Errorf("result = %+v", res)
	}
	if j.Progress == nil || j.Progress.Epoch != res.Epochs || len(j.History) != res.Epochs || j.History[0].Metric != training.MetricAccuracy {
		t.Errorf("progress = %+v, %d history entries; want the last of %d epochs", j.Progress, len(j.History), res.Epochs)
	}
	mv, err := e.reg.Get(ctx, "iris", "1")
	if err != nil || mv.SHA256 != res.ModelSHA256 {
		t.Fatalf("registry has %+v, %v; want sha %s", mv, err, res.ModelSHA256)
	}
	l := res.Lineage
	ds, _ := e.datasets.Get(ctx, "iris", 0)
	if l.Dataset != "iris" || l.DatasetVersion != 1 || l.DatasetSHA256 != ds.SHA256 || l.DatasetRows != 150 || l.Label != "Species" ||
		l.Trainer != training.Logistic || l.CodeVersion == "" || l.ModelVersion != "1" || l.Metrics[training.MetricAccuracy] != res.Metrics[training.MetricAccuracy] ||
		l.Spec.Epochs != training.DefaultEpochs || l.Spec.Task != training.Classification || len(l.Classes) != 3 {
		t.Errorf("lineage = %+v", l)
	}

	p, ok, err := e.reg.ReferenceProfile(ctx, "iris", "1")
	if err != nil || !ok {
		t.Fatalf("reference profile: %v, %v (result says %q)", ok, err, res.ProfileError)
	}
	want := []string{"Sepal length", "Sepal width", "Petal length", "Petal width"}
	if len(p.GetInputs()) != len(want) || p.GetInputName() != "input" || p.GetRows() != 150 {
		t.Fatalf("profile input %q has %d features over %d rows; want %d over 150", p.GetInputName(), len(p.GetInputs()), p.GetRows(), len(want))
	}
	for i, f := range p.GetInputs() {
		if f.GetName() != want[i] || f.GetCategorical() || f.GetReference().GetCount() != 150 {
			t.Errorf("profile input %d = %s (categorical %v, %d values); want %q", i, f.GetName(), f.GetCategorical(), f.GetReference().GetCount(), want[i])
		}
	}
	out := p.GetOutputs()
	if p.GetOutputName() != "label" || len(out) != 1 || !out[0].GetCategorical() || out[0].GetClasses() != 3 || out[0].GetReference().GetCount() != 150 {
		t.Fatalf("profile outputs %q = %v; want the predicted label, 3 classes", p.GetOutputName(), out)
	}
	// The predictions are mostly right: each class is predicted about a
	// third of the time.
	for c, n := range out[0].GetReference().GetBinCounts() {
		if n < 35 || n > 65 {
			t.Errorf("class %d predicted %d times of 150", c, n)
		}
	}
	_, m, err := e.reg.Manifest(ctx, "iris", "1", registry.ManifestOptions{})
	if err != nil || len(m.GetReferenceProfile()) != res.ProfileBytes || res.ProfileBytes == 0 {
		t.Errorf("manifest carries %d profile bytes (%v); the result says %d", len(m.GetReferenceProfile()), err, res.ProfileBytes)
	}

	// The next job makes the next version, an MLP this time.
	spec := irisSpec("iris", training.MLP)
	spec.Hidden, spec.Epochs = []int{8}, 5
	// Five epochs make a weaker model than version 1: let the champion
	// gate take it (TestGatesPassSignFailKeepUnsigned tests the gate).
	spec.Gates.ChampionMargin = 1
	j2 := e.wait(e.submit(spec).ID)
	if j2.State != Succeeded || j2.Result.ModelVersion != "2" || j2.Result.Lineage.Spec.Epochs != 5 {
		t.Fatalf("second job = %s %q, result %+v", j2.State, j2.Error, j2.Result)
	}
	list, err := e.runner.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != j2.ID || list[1].ID != j.ID || list[0].History != nil {
		t.Errorf("List = %+v, %v; want the two jobs, newest first, without history", list, err)
	}
	// Records survive a restart.
	e.restart()
	if got, err := e.runner.Get(ctx, j.ID); err != nil || got.State != Succeeded || got.Result.ModelVersion != "1" {
		t.Errorf("after restart: %+v, %v", got, err)
	}
}

func TestNextVersion(t *testing.T) {
	for _, c := range []struct {
		have []string
		want string
	}{
		{nil, "1"},
		{[]string{"1", "2"}, "3"},
		{[]string{"3", "1"}, "4"},
		{[]string{"rc1", "2024-06", "07", "v9"}, "1"},
		{[]string{"1", "10", "9", "beta"}, "11"},
	} {
		var vs []registry.ModelVersion
		for _, v := range c.have {
			vs = append(vs, registry.ModelVersion{Version: v})
		}
		if got := nextVersion(vs); got != c.want {
			t.Errorf("nextVersion(%v) = %q; want %q", c.have, got, c.want)
		}
	}
}

func TestFailingJobsSayWhy(t *testing.T) {
	e := newEnv(t)
	e.pushIris()
	ctx := context.Background()
	hidden := irisSpec("iris", training.Logistic)
	hidden.Hidden = []int{4}
	regression := irisSpec("iris", training.Logistic)
	regression.Task = training.Regression
	old := irisSpec("iris", training.Logistic)
	old.DatasetVersion = 7
	for _, c := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no such dataset", Spec{Dataset: "nope", Model: "m", Spec: training.Spec{Trainer: training.Logistic}}, `dataset "nope" has no versions`},
		{"no such version", old, `dataset "iris" has no version 7`},
		{"task mismatch", regression, "the job asks for regression but dataset iris v1 is a classification dataset"},
		{"spec the trainer refuses", hidden, `trainer "logistic" has no hidden layers`},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := e.wait(e.submit(c.spec).ID)
			if j.State != Failed || !strings.Contains(j.Error, c.want) || j.Result != nil {
				t.Errorf("job = %s %q; want failed with %q", j.State, j.Error, c.want)
			}
		})
	}
	if _, err := e.reg.Versions(ctx, "iris"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("failed jobs pushed a model: %v", err)
	}

	// What can be known before the job runs is refused at once.
	for _, c := range []struct {
		name string
		spec Spec
		want string
	}{
		{"bad dataset name", Spec{Dataset: "a b", Model: "m", Spec: training.Spec{Trainer: "logistic"}}, "job spec: dataset"},
		{"negative version", Spec{Dataset: "iris", DatasetVersion: -1, Model: "m", Spec: training.Spec{Trainer: "logistic"}}, "dataset_version -1"},
		{"bad model name", Spec{Dataset: "iris", Model: "a/b", Spec: training.Spec{Trainer: "logistic"}}, "job spec: model"},
		{"no trainer", Spec{Dataset: "iris", Model: "m"}, "trainer is empty; use one of linear, logistic, mlp"},
		{"unknown trainer", Spec{Dataset: "iris", Model: "m", Spec: training.Spec{Trainer: "xgboost"}}, `trainer "xgboost" is unknown`},
		{"unknown task", Spec{Dataset: "iris", Model: "m", Spec: training.Spec{Trainer: "mlp", Task: "ranking"}}, `task "ranking" is unknown`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.runner.Submit(ctx, c.spec)
			if !shoalerr.Is(err, shoalerr.Invalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Submit = %v; want Invalid with %q", err, c.want)
			}
		})
	}
	for _, id := range []string{"job-99", "job-0", "job-01", "12", "x"} {
		if _, err := e.runner.Get(ctx, id); !shoalerr.Is(err, shoalerr.NotFound) {
			t.Errorf("Get(%q) = %v; want NotFound", id, err)
		}
	}
}

// blockTrainer reports one epoch, says it started, and waits for its
// context to end.
type blockTrainer struct{ started chan string }

func (b blockTrainer) Train(ctx context.Context, spec training.Spec, _ training.Data, progress func(training.Progress)) (*training.Result, error) {
	progress(training.Progress{Epoch: 1, Epochs: 10, TrainLoss: 1.5, ValidationMetric: 0.4, Metric: "accuracy"})
	b.started <- spec.Trainer
	<-ctx.Done()
	return nil, fmt.Errorf("stopped at epoch 2: %w", ctx.Err())
}

func TestCancel(t *testing.T) {
	started := make(chan string, 1)
	e := newEnv(t, WithTrainer("block", blockTrainer{started}))
	e.pushIris()
	ctx := context.Background()

	running := e.submit(irisSpec("iris", "block"))
	<-started
	queued := e.submit(irisSpec("iris", training.Logistic))

	j, err := e.runner.Cancel(ctx, queued.ID)
	if err != nil || j.State != Cancelled || j.FinishedAt == nil {
		t.Fatalf("cancel of a queued job = %+v, %v", j, err)
	}
	j, err = e.runner.Get(ctx, running.ID)
	if err != nil || j.State != Running || j.Progress.Epoch != 1 || len(j.History) != 1 {
		t.Fatalf("running job = %+v, %v; want running at epoch 1", j, err)
	}
	j, err = e.runner.Cancel(ctx, running.ID)
	if err != nil || !j.CancelRequested {
		t.Fatalf("cancel of a running job = %+v, %v; want cancel_requested", j, err)
	}
	if j = e.wait(running.ID); j.State != Cancelled || j.CancelRequested {
		t.Fatalf("cancelled running job = %+v", j)
	}
	for _, id := range []string{running.ID, queued.ID} {
		if _, err := e.runner.Cancel(ctx, id); !shoalerr.Is(err, shoalerr.Conflict) || !strings.Contains(err.Error(), "has cancelled already") {
			t.Errorf("second cancel of %s: %v; want Conflict", id, err)
		}
	}
	if _, err := e.runner.Cancel(ctx, "job-42"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("cancel of an unknown job: %v", err)
	}
	if _, err := e.reg.Versions(ctx, "iris"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("cancelled jobs pushed a model: %v", err)
	}
}

// TestRestart checks the restart rule: a job running when the control
// plane stops fails with the reason, a queued one runs after the restart.
func TestRestart(t *testing.T) {
	started := make(chan string, 1)
	e := newEnv(t, WithTrainer("block", blockTrainer{started}))
	e.pushIris()
	ctx := context.Background()

	running := e.submit(irisSpec("iris", "block"))
	<-started
	queued := e.submit(irisSpec("iris", training.Logistic))
	e.restart() // Close stops the running job

	j, err := e.runner.Get(ctx, running.ID)
	if err != nil || j.State != Failed || !strings.Contains(j.Error, "shut down while the job ran; submit it again") {
		t.Errorf("job running at Close = %+v, %v; want failed with the reason", j, err)
	}
	if j = e.wait(queued.ID); j.State != Succeeded || j.Result.ModelVersion != "1" {
		t.Errorf("job queued at Close = %s %q; want it run after the restart", j.State, j.Error)
	}

	// A crash leaves a record running: the next start marks it failed.
	crashed := Job{ID: "job-77", State: Running, Spec: irisSpec("iris", "block")}
	if err := e.st.Update(func(tx store.Tx) error { return store.PutJSON(tx, jobKey(77), crashed) }); err != nil {
		t.Fatal(err)
	}
	e.restart()
	j, err = e.runner.Get(ctx, "job-77")
	if err != nil || j.State != Failed || j.FinishedAt == nil || !strings.Contains(j.Error, "the control plane stopped while the job ran") {
		t.Errorf("job running at a crash = %+v, %v", j, err)
	}
	if _, err := e.runner.Submit(ctx, irisSpec("iris", "block")); err != nil {
		t.Fatal(err)
	}
	<-started
	e.runner.Close()
	if _, err := e.runner.Submit(ctx, irisSpec("iris", "block")); !shoalerr.Is(err, shoalerr.Unavailable) {
		t.Errorf("Submit after Close: %v; want Unavailable", err)
	}
}

// manyEpochs reports epochs epochs, then fails.
type manyEpochs struct{ epochs int }

func (m manyEpochs) Train(_ context.Context, _ training.Spec, _ training.Data, progress func(training.Progress)) (*training.Result, error) {
	for i := 1; i <= m.epochs; i++ {
		progress(training.Progress{Epoch: i, Epochs: m.epochs, TrainLoss: 1 / float64(i)})
	}
	return nil, shoalerr.E(shoalerr.Invalid, "test", "diverged after %d epochs", m.epochs)
}

func TestHistoryThinnedEvenly(t *testing.T) {
	e := newEnv(t, WithTrainer("long", manyEpochs{2500}), WithMaxQueued(1))
	e.pushIris()
	j := e.wait(e.submit(irisSpec("iris", "long")).ID)
	if j.State != Failed || j.Error != "diverged after 2500 epochs" || j.Progress.Epoch != 2500 {
		t.Fatalf("job = %s %q, progress %+v", j.State, j.Error, j.Progress)
	}
	if n := len(j.History); n < maxHistory/2 || n >= maxHistory {
		t.Fatalf("history has %d entries; want %d to %d", n, maxHistory/2, maxHistory-1)
	}
	step := j.History[1].Epoch - j.History[0].Epoch
	for i, p := range j.History {
		if p.Epoch != (i+1)*step {
			t.Fatalf("history entry %d is epoch %d; want every %d epochs", i, p.Epoch, step)
		}
	}
}
