package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// The drift test's sensor features; driftShifted is the one phase (b)
// moves by 3 standard deviations.
var driftFeatures = []string{"temp", "vibration", "current", "pressure"}

const driftShifted = "current"

// driftMeans are the class-dependent means of the features (std 1).
var driftMeans = [3][4]float64{
	{0, 0, 0, 0},
	{2, -1, 1, 0.5},
	{-1, 2, -1, 1.5},
}

// driftRow draws a row of class c, with shift added to driftShifted.
func driftRow(r *rand.Rand, c int, shift float64) []float64 {
	row := make([]float64, len(driftFeatures))
	for j := range row {
		row[j] = driftMeans[c][j] + r.NormFloat64()
		if driftFeatures[j] == driftShifted {
			row[j] += shift
		}
	}
	return row
}

// driftCSV is a classification data set of n rows drawn from driftRow.
func driftCSV(r *rand.Rand, n int) string { return driftCSVShifted(r, n, 0, 0) }

// driftCSVShifted is driftCSV whose last shifted rows have shift added to
// driftShifted: the training data plus labelled rows from the field.
func driftCSVShifted(r *rand.Rand, n, shifted int, shift float64) string {
	var b strings.Builder
	b.WriteString(strings.Join(driftFeatures, ",") + ",class\n")
	for i := 0; i < n+shifted; i++ {
		c := i % 3
		sh := 0.0
		if i >= n {
			sh = shift
		}
		for _, v := range driftRow(r, c, sh) {
			fmt.Fprintf(&b, "%.4f,", v)
		}
		fmt.Fprintf(&b, "c%d\n", c)
	}
	return b.String()
}

// driftSender makes batches of predictions on an agent until stopped,
// drawn from the training distribution plus the current shift.
type driftSender struct {
	shift atomic.Int64 // in standard deviations
	stop  chan struct{}
	wg    sync.WaitGroup
	errMu sync.Mutex
	err   error
}

func startDriftSender(t *testing.T, model string, agents []*fleetAgent, seed uint64) *driftSender {
	s := &driftSender{stop: make(chan struct{})}
	const batch = 25
	for i, fa := range agents {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			for {
				select {
				case <-s.stop:
					return
				default:
				}
				shift := float64(s.shift.Load())
				x := make([]float32, 0, batch*len(driftFeatures))
				for k := 0; k < batch; k++ {
					for _, v := range driftRow(r, r.IntN(3), shift) {
						x = append(x, float32(v))
					}
				}
				if _, err := fa.infer(model, "input", []int64{batch, int64(len(driftFeatures))}, x); err != nil {
					s.errMu.Lock()
					s.err = fmt.Errorf("%s infer: %w", fa.id, err)
					s.errMu.Unlock()
					return
				}
			}
		}()
	}
	t.Cleanup(s.halt)
	return s
}

func (s *driftSender) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

func (s *driftSender) check(t *testing.T) {
	t.Helper()
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err != nil {
		t.Fatal(s.err)
	}
}

// TestDriftAlert: a model trained by a training job (so its version has a
// reference profile) runs on three agents; predictions drawn from the
// training distribution give settled windows with samples and low PSI
// and no alert; predictions with one feature shifted by 3 standard
// deviations raise an alert within K windows that names that feature.
func TestDriftAlert(t *testing.T) {
	onnxrt.MustInitForTest(t)
	const (
		window = time.Second
		settle = 500 * time.Millisecond
		model  = "sensors"
	)
	policy := client.DriftPolicy{Metric: "psi", Threshold: 0.2, MinSamples: 200, Windows: 2}
	cp := controltest.Start(t, controltest.WithLogger(testLogger(t).With("component", "controlplane")),
		controltest.WithDrift(window, settle, 250*time.Millisecond))
	ctx := context.Background()
	c := cp.Client

	r := rand.New(rand.NewPCG(7, 11))
	ds, err := c.PushDataset(ctx, "sensors", "class", "classification", strings.NewReader(driftCSV(r, 600)))
	if err != nil {
		t.Fatalf("push dataset: %v", err)
	}
	job, err := c.SubmitJob(ctx, client.JobSpec{Dataset: ds.Name, Model: model, TrainingSpec: client.TrainingSpec{Trainer: "logistic", Seed: 1}})
	if err != nil {
		t.Fatalf("submit training job: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, shoaltest.Patience)
	job, err = c.WaitJob(wctx, job.ID, 50*time.Millisecond, nil)
	cancel()
	if err != nil {
		t.Fatalf("wait for training job: %v", err)
	}
	if job.State != "succeeded" || job.Result == nil || job.Result.ProfileBytes == 0 {
		t.Fatalf("training job %s: state %s, error %q, result %+v; want succeeded with a reference profile", job.ID, job.State, job.Error, job.Result)
	}
	version := job.Result.ModelVersion

	var agents []*fleetAgent
	for i := 1; i <= 3; i++ {
		agents = append(agents, startAgent(t, cp, fmt.Sprintf("dev-%d", i), func(cfg *agent.Config) {
			cfg.StatsWindow = 200 * time.Millisecond
		}))
	}
	cp.Deploy(t, model, version)
	waitDevices(t, c, "trained version active everywhere", allActive(3, model, version))
	agreeWithORT(t, c, cp.URL(), model, version, agents)
	if _, err := c.SetDriftPolicy(ctx, model, policy); err != nil {
		t.Fatalf("set drift policy: %v", err)
	}

	// (a) The training distribution: settled windows with samples, low
	// PSI, and no alert once they are judged.
	start := time.Now()
	send := startDriftSender(t, model, agents, 3)
	var calm []client.DriftWindow
	shoaltest.Eventually(t, "three settled windows of unshifted data with samples", func() error {
		send.check(t)
		rep, err := c.Drift(ctx, model, client.DriftQuery{Version: version, Last: time.Minute})
		if err != nil {
			return err
		}
		calm = calm[:0]
		for _, w := range rep.Windows {
			// Whole windows only: the first one started before the data.
			if w.Start.After(start) && w.End.Add(settle).Before(time.Now()) {
				calm = append(calm, w)
			}
		}
		if len(calm) < 3 {
			return fmt.Errorf("%d settled whole windows of %d: %+v", len(calm), len(rep.Windows), rep.Windows)
		}
		return nil
	})
	for _, w := range calm {
		t.Logf("unshifted window %s: %d samples, PSI %.3f", w.Start.Format("15:04:05.000"), w.Samples, w.PSI)
		if w.Error != "" || w.Samples < policy.MinSamples || w.PSI >= policy.Threshold || w.Breach {
			t.Errorf("unshifted window %s: samples %d, PSI %.3f, breach %v, error %q; want ≥ %d samples, PSI under %.2f, no breach",
				w.Start.Format("15:04:05.000"), w.Samples, w.PSI, w.Breach, w.Error, policy.MinSamples, policy.Threshold)
		}
		if len(w.Features) != len(driftFeatures)+1 { // and the output
			t.Errorf("unshifted window %s: features %+v; want the %d inputs and the output", w.Start.Format("15:04:05.000"), w.Features, len(driftFeatures))
		}
	}
	if err := cp.EvaluateDrift(ctx); err != nil {
		t.Fatalf("evaluate drift: %v", err)
	}
	if alerts, err := c.Alerts(ctx, model); err != nil || len(alerts) != 0 {
		t.Fatalf("alerts after unshifted data: %+v, %v; want none", alerts, err)
	}

	// The retraining loop: on an alert, retrain on the data set's latest
	// version — the training data plus labelled rows from the field, which
	// see the shift — gate it, and roll the candidate out.
	if _, err := c.SetLoopPolicy(ctx, model, client.LoopPolicy{Retrain: true, Rollout: &apiv1.RolloutSpec{
		Health: &apiv1.HealthCheck{Predictions: 0, Seconds: 0},
		Stages: []apiv1.Stage{{Name: "canary", Count: 1}, {Name: "all", Percent: 100}},
	}}); err != nil {
		t.Fatalf("set retraining policy: %v", err)
	}
	if _, err := c.PushDataset(ctx, "sensors", "class", "classification", strings.NewReader(driftCSVShifted(rand.New(rand.NewPCG(7, 11)), 600, 300, 3))); err != nil {
		t.Fatalf("push dataset v2: %v", err)
	}

	// (b) Shift one feature: an alert on K windows, all after the shift,
	// naming that feature. How soon it comes is logged, not judged.
	shifted := time.Now()
	send.shift.Store(3)
	var alert client.Alert
	shoaltest.Eventually(t, "drift alert after the shift", func() error {
		send.check(t)
		if err := cp.EvaluateDrift(ctx); err != nil {
			return err
		}
		alerts, err := c.Alerts(ctx, model)
		if err != nil {
			return err
		}
		if len(alerts) == 0 {
			rep, _ := c.Drift(ctx, model, client.DriftQuery{Version: version, Last: 10 * time.Second})
			return fmt.Errorf("no alert; windows %+v", rep.Windows)
		}
		alert = alerts[0]
		return nil
	})
	send.halt()
	if len(listAlerts(t, c, model)) != 1 {
		t.Errorf("alerts: %+v; want one", listAlerts(t, c, model))
	}
	if alert.Model != model || alert.Version != version || alert.Cohort != "all" || len(alert.Windows) < policy.Windows {
		t.Errorf("alert %+v; want model %s version %s cohort all with ≥ %d windows", alert, model, version, policy.Windows)
	}
	for _, w := range alert.Windows {
		if w.End.Before(shifted) || w.Samples < policy.MinSamples || w.PSI < policy.Threshold {
			t.Errorf("alert window %s–%s: samples %d, PSI %.3f; want windows after the shift (%s) with ≥ %d samples and PSI ≥ %.2f",
				w.Start.Format("15:04:05.000"), w.End.Format("15:04:05.000"), w.Samples, w.PSI, shifted.Format("15:04:05.000"), policy.MinSamples, policy.Threshold)
		}
	}
	names := make([]string, len(alert.TopFeatures))
	for i, f := range alert.TopFeatures {
		names[i] = f.Name
	}
	if !slices.Contains(names, driftShifted) {
		t.Errorf("alert top features %v; want %q among them", names, driftShifted)
	}
	for _, f := range alert.TopFeatures {
		if f.Side == "input" && f.Name != driftShifted && f.PSI >= policy.Threshold {
			t.Errorf("alert top feature %s has PSI %.3f; only %s was shifted", f.Name, f.PSI, driftShifted)
		}
	}
	t.Logf("alert %s raised %s after the shift; top features %v", alert.ID, alert.RaisedAt.Sub(shifted).Round(time.Millisecond), names)

	// The alert started a retraining run: a job on sensors v2 with the
	// same trainer, a candidate that passed its gates, and its rollout.
	var run client.LoopRun
	shoaltest.Eventually(t, "retraining run rolled out", func() error {
		runs, err := c.LoopRuns(ctx, model)
		if err != nil {
			return err
		}
		if len(runs) == 0 {
			return errors.New("no retraining run")
		}
		run = runs[0]
		switch run.State {
		case "rejected", "failed":
			t.Fatalf("retraining run %s: %v; events %+v", run.State, run.Reasons, run.Events)
		case "done":
			return nil
		}
		return fmt.Errorf("run %d is %s (rollout %s %s)", run.Seq, run.State, run.Rollout, run.RolloutState)
	})
	if run.Alert != alert.ID || run.FromVersion != version || run.Dataset != "sensors" || run.DatasetVersion != 2 || run.Version == "" || run.Version == version {
		t.Errorf("retraining run %+v; want alert %s from version %s, on sensors v2, making a new version", run, alert.ID, version)
	}
	retrained, err := c.Job(ctx, run.Job)
	if err != nil || retrained.Result == nil || retrained.Result.Validation == nil || retrained.Result.Validation.Status != "passed" || retrained.Spec.Trainer != "logistic" {
		t.Fatalf("retraining job %s: %+v, %v; want logistic, gates passed", run.Job, retrained, err)
	}
	ro, err := c.Rollout(ctx, run.Rollout)
	if err != nil || ro.State != "completed" || ro.Version != run.Version || ro.Phases["healthy"] != len(agents) {
		t.Fatalf("rollout %s of the candidate: %+v, %v; want completed on every agent", run.Rollout, ro, err)
	}
	waitDevices(t, c, "the retrained version active everywhere", allActive(len(agents), model, run.Version))
	t.Logf("retrained %s → %s on sensors v2 (holdout %v), rolled out by %s", version, run.Version, retrained.Result.Metrics, run.Rollout)
}

func listAlerts(t *testing.T, c *client.Client, model string) []client.Alert {
	t.Helper()
	a, err := c.Alerts(context.Background(), model)
	if err != nil {
		t.Fatalf("alerts: %v", err)
	}
	return a
}

// agreeWithORT checks that the agents' predictions with the trained model
// equal ONNX Runtime's on the control plane's side, run on the artifact
// the registry serves, to the last bit of each float32.
func agreeWithORT(t *testing.T, c *client.Client, server, model, version string, agents []*fleetAgent) {
	t.Helper()
	mv, err := c.ModelVersion(context.Background(), model, version)
	if err != nil {
		t.Fatal(err)
	}
	data, code, err := httpGet(server + mv.ArtifactURL)
	if err != nil || code != 200 {
		t.Fatalf("artifact of %s %s: %d %v", model, version, code, err)
	}
	sess, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	r := rand.New(rand.NewPCG(5, 6))
	for _, fa := range agents {
		for k := 0; k < 5; k++ {
			row := driftRow(r, r.IntN(3), 0)
			x := make([]float32, len(row))
			for j, v := range row {
				x[j] = float32(v)
			}
			out, err := fa.infer(model, "input", []int64{1, int64(len(x))}, x)
			if err != nil {
				t.Fatalf("%s infer: %v", fa.id, err)
			}
			want, err := sess.Run([]onnxrt.Tensor{{Name: "input", DataType: onnxrt.FP32, Shape: []int64{1, int64(len(x))}, Data: x}})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range want {
				found := false
				for _, o := range out.Outputs {
					if o.Name != w.Name {
						continue
					}
					found = true
					got, err := o.Float64s()
					if err != nil {
						t.Fatalf("%s output %s: %v", fa.id, o.Name, err)
					}
					switch wd := w.Data.(type) {
					case []float32:
						for j := range wd {
							if j >= len(got) || float32(got[j]) != wd[j] {
								t.Fatalf("%s output %s = %v; ONNX Runtime on the control plane gives %v", fa.id, o.Name, got, wd)
							}
						}
					case []int64:
						for j := range wd {
							if j >= len(got) || int64(got[j]) != wd[j] {
								t.Fatalf("%s output %s = %v; ONNX Runtime on the control plane gives %v", fa.id, o.Name, got, wd)
							}
						}
					}
				}
				if !found {
					t.Fatalf("%s: output %q missing from %+v", fa.id, w.Name, out.Outputs)
				}
			}
		}
	}
}
