package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/controlplane"
	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
)

type demoOptions struct {
	agents    int
	duration  time.Duration
	dataDir   string
	httpAddr  string
	mqttAddr  string
	ortLib    string
	interval  time.Duration
	keepData  bool
	agentLogs bool
}

func newDemoCmd(o *rootOptions) *cobra.Command {
	d := &demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole loop on embedded defaults: train, roll out, stream, detect drift, retrain, gate, canary, promote",
		Long: `shoal demo starts a control plane (embedded MQTT broker, Badger store) and
N agents in this process and runs the whole MLOps loop on a built-in
synthetic sensor data set (temperature, vibration, current, pressure →
normal / worn / failing):

  1. push the data set and train v1 with a training job (epochs, gates);
  2. roll v1 out in stages (canary, half, all), each gated on health;
  3. set a drift policy and a retraining policy;
  4. stream predictions through the agents' Open Inference Protocol APIs
     and show the drift windows (low PSI, no alert);
  5. the sensors age: temperature shifts by 3 standard deviations and
     labelled field data arrives as the data set's v2; drift is detected,
     an alert starts a retraining run, the candidate passes its gates and
     is rolled out as a canary, then to the whole fleet.

Drift windows are 5 seconds here (an hour by default). Progress is printed
as it goes, with the URLs to look at. It stays up until Ctrl-C, or
--duration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), o, d)
		},
	}
	cmd.Flags().IntVar(&d.agents, "agents", 5, "number of agents to start")
	cmd.Flags().DurationVar(&d.duration, "duration", 0, "exit after this long (default: run until Ctrl-C)")
	cmd.Flags().StringVar(&d.dataDir, "data-dir", "", "keep state here (default: a temporary directory, removed on exit)")
	cmd.Flags().StringVar(&d.httpAddr, "http-addr", "127.0.0.1:8080", "control plane HTTP address")
	cmd.Flags().StringVar(&d.mqttAddr, "mqtt-addr", "127.0.0.1:1883", "embedded MQTT broker address")
	cmd.Flags().StringVar(&d.ortLib, "onnxruntime-lib", "", "path to libonnxruntime.so (default: $ONNXRUNTIME_LIB, the cache, the system)")
	cmd.Flags().DurationVar(&d.interval, "interval", time.Second, "time between prediction rounds")
	cmd.Flags().BoolVar(&d.agentLogs, "verbose", false, "show the control plane's and agents' logs")
	return cmd
}

// The demo's model and data set, and its drift settings.
const (
	demoModelName   = "sensors"
	demoDataset     = "sensors"
	demoRows        = 900
	demoFieldRows   = 450
	demoShiftStd    = 3 // the shift of the aged sensors, in standard deviations
	demoDriftWindow = 5 * time.Second
	demoDriftSettle = time.Second
	demoWindowRows  = 1500 // readings per drift window the stream aims at (PSI over 20 bins is noisy on fewer)
)

// The synthetic sensor data set: four readings whose means depend on the
// machine's state; sensorShifted is the reading that drifts as the
// sensors age.
var (
	sensorFeatures = []string{"temperature", "vibration", "current", "pressure"}
	sensorUnits    = []string{"°C", "g", "A", "kPa"}
	sensorBase     = []float64{60, 0.5, 8, 101}
	sensorStd      = []float64{5, 0.1, 1, 1.5}
	// sensorMeans are the class means in standard deviations from base.
	sensorMeans = [3][4]float64{
		{0, 0, 0, 0},     // normal
		{2, -1, 1, 0.5},  // worn
		{-1, 2, -1, 1.5}, // failing
	}
	sensorClasses = []string{"normal", "worn", "failing"}
)

const sensorShifted = 0 // temperature

// sensorRow draws a reading of class c, with shift standard deviations
// added to the shifted feature.
func sensorRow(r *rand.Rand, c int, shift float64) []float64 {
	row := make([]float64, len(sensorFeatures))
	for j := range row {
		z := sensorMeans[c][j] + r.NormFloat64()
		if j == sensorShifted {
			z += shift
		}
		row[j] = sensorBase[j] + z*sensorStd[j]
	}
	return row
}

// sensorCSV is the data set: n rows of the training distribution
// followed by field rows with the shift, each labelled; the seed is fixed,
// so the first n rows are the same in every version.
func sensorCSV(n, field int, shift float64) string {
	r := rand.New(rand.NewPCG(7, 11))
	var b strings.Builder
	b.WriteString(strings.Join(sensorFeatures, ",") + ",state\n")
	for i := 0; i < n+field; i++ {
		c := i % 3
		sh := 0.0
		if i >= n {
			sh = shift
		}
		for _, v := range sensorRow(r, c, sh) {
			fmt.Fprintf(&b, "%.4f,", v)
		}
		b.WriteString(sensorClasses[c] + "\n")
	}
	return b.String()
}

type demoAgent struct {
	id  string
	a   *agent.Agent
	api string
}

func runDemo(ctx context.Context, o *rootOptions, d *demoOptions) error {
	if d.agents < 1 {
		return fmt.Errorf("--agents must be at least 1")
	}
	if d.interval <= 0 {
		return fmt.Errorf("--interval must be positive")
	}
	if d.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.duration)
		defer cancel()
	}
	out := o.stdout
	var sayMu sync.Mutex
	say := func(format string, args ...any) {
		sayMu.Lock()
		defer sayMu.Unlock()
		fmt.Fprintf(out, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	log := slog.New(slog.DiscardHandler)
	if d.agentLogs {
		log = o.logger()
	}

	dir := d.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "shoal-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}

	cp, err := controlplane.New(controlplane.Config{
		DataDir:           filepath.Join(dir, "controlplane"),
		HTTPAddr:          d.httpAddr,
		MQTTAddr:          d.mqttAddr,
		ONNXRuntimeLib:    d.ortLib,
		DriftWindow:       demoDriftWindow,
		DriftSettle:       demoDriftSettle,
		DriftEvalInterval: time.Second,
		Logger:            log.With("component", "controlplane"),
	})
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		return fmt.Errorf("start control plane: %w", err)
	}
	// The agents stop first, so that their last telemetry reaches the
	// control plane; then the control plane stops.
	cpCtx, stopCP := context.WithCancel(context.WithoutCancel(ctx))
	agentCtx, stopAgents := context.WithCancel(context.WithoutCancel(ctx))
	var cpWG, agentWG sync.WaitGroup
	cpWG.Add(1)
	go func() { defer cpWG.Done(); cp.Run(cpCtx) }()
	var agents []*demoAgent
	// Each round sends a batch per agent, sized so that a drift window
	// gets about demoWindowRows predictions.
	rounds := max(1, int(demoDriftWindow/d.interval))
	pred := &predictor{model: demoModelName, batch: max(1, (demoWindowRows+rounds*d.agents-1)/(rounds*d.agents)), classes: sensorClasses}
	defer func() {
		say("shutting down: agents flush their telemetry to the control plane, then it stops")
		stopAgents()
		agentWG.Wait()
		for _, a := range agents {
			a.a.Close()
		}
		if c, err := client.New(cp.URL()); err == nil {
			if s, err := c.Telemetry(context.Background(), ""); err == nil {
				say("final count: %d predictions made (%d sensor readings), %d recorded by the control plane", pred.total(), pred.readings(), s.Total.Predictions)
			}
		}
		stopCP()
		cpWG.Wait()
		cp.Close()
	}()
	say("control plane up: API %s, MQTT %s (embedded broker), data in %s; drift windows of %s", cp.URL(), cp.MQTTAddr(), dir, demoDriftWindow)

	c, err := client.New(cp.URL())
	if err != nil {
		return err
	}
	dm := &demo{ctx: ctx, c: c, d: d, say: say, pred: pred}
	err = dm.run(func() error {
		// Enroll N agents, each with its own one-time token.
		for i := 1; i <= d.agents; i++ {
			id := fmt.Sprintf("demo-%02d", i)
			tok, err := c.CreateToken(ctx, time.Hour)
			if err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			a, err := agent.New(agent.Config{
				DataDir:         filepath.Join(dir, "agents", id),
				ServerURL:       cp.URL(),
				DeviceID:        id,
				EnrollToken:     agent.Secret(tok.Token),
				APIAddr:         "127.0.0.1:0",
				ONNXRuntimeLib:  d.ortLib,
				TelemetryWindow: time.Second,
				StatsWindow:     time.Second,
				IntraOpThreads:  1,
				Logger:          log.With("component", "agent", "device", id),
			})
			if err != nil {
				return fmt.Errorf("start agent %s: %w", id, err)
			}
			da := &demoAgent{id: id, a: a, api: "http://" + a.APIAddr()}
			agents = append(agents, da)
			agentWG.Add(1)
			go func() { defer agentWG.Done(); a.Run(agentCtx) }()
		}
		dm.agents = agents
		return waitFor(ctx, 30*time.Second, func() (bool, string) {
			devs, err := c.Devices(ctx)
			if err != nil {
				return false, err.Error()
			}
			online := 0
			for _, dv := range devs {
				if dv.Online {
					online++
				}
			}
			return online == d.agents, fmt.Sprintf("%d/%d agents enrolled and online", online, d.agents)
		}, func(s string) { say("%s", s) })
	})
	if err != nil {
		return err
	}
	if err := dm.run(dm.loop); err != nil {
		return err
	}

	say("open %s/api/v1/drift/%s, %s/api/v1/alerts, %s/api/v1/loop/%s, %s/api/v1/rollouts, %s/api/v1/jobs",
		cp.URL(), demoModelName, cp.URL(), cp.URL(), demoModelName, cp.URL(), cp.URL())
	say("or run: shoal --server %s drift %s | drift alerts | loop %s | rollout list | jobs | devices", cp.URL(), demoModelName, demoModelName)
	say("agents' inference APIs: %s/v2/models/%s (and the other agents)", agents[0].api, demoModelName)
	if d.duration == 0 {
		say("streaming predictions every %s; Ctrl-C to stop", d.interval)
	} else if dl, ok := ctx.Deadline(); ok {
		say("streaming predictions every %s until %s (--duration)", d.interval, dl.Format("15:04:05"))
	}
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := pred.round(ctx, agents, say, false); err != nil && ctx.Err() == nil {
				return err
			}
		case <-report.C:
			s, err := c.Telemetry(ctx, "")
			if err == nil {
				say("telemetry: %d predictions made (%d sensor readings), %d received by the control plane in %d records", pred.total(), pred.readings(), s.Total.Predictions, s.Total.Records)
			}
		}
	}
}

// demo is the state of the demo's loop.
type demo struct {
	ctx    context.Context
	c      *client.Client
	d      *demoOptions
	say    func(string, ...any)
	pred   *predictor
	agents []*demoAgent

	v1      string
	printed map[string]bool // drift windows shown
	since   time.Time       // show drift windows that start from here
}

// run runs a step; once --duration is up (or Ctrl-C), its error is no
// error: the demo ends cleanly wherever it is.
func (dm *demo) run(step func() error) error {
	if dm.ctx.Err() != nil {
		return nil
	}
	if err := step(); err != nil && dm.ctx.Err() == nil {
		return err
	}
	return nil
}

// loop is the demo proper: data set, train, roll out, drift, retrain.
func (dm *demo) loop() error {
	ctx, c, say := dm.ctx, dm.c, dm.say

	// The data set.
	ds, err := c.PushDataset(ctx, demoDataset, "state", "classification", strings.NewReader(sensorCSV(demoRows, 0, 0)))
	if err != nil {
		return fmt.Errorf("push dataset: %w", err)
	}
	say("pushed dataset %s v%d: %d rows of %s → %s (classes %s), sha256 %s…",
		ds.Name, ds.Version, ds.Rows, strings.Join(sensorFeatures, ", "), ds.Label, strings.Join(ds.Classes, "/"), ds.SHA256[:12])

	// v1: a training job; the control plane gates the model and signs it.
	spec := client.JobSpec{Dataset: ds.Name, Model: demoModelName, TrainingSpec: client.TrainingSpec{Trainer: "mlp", Hidden: []int{16}, Epochs: 60, Seed: 1}}
	say("training %s v1: trainer %s (hidden %v), %d epochs at most  [shoal train --dataset %s --model %s --trainer mlp --hidden 16 --epochs 60]",
		demoModelName, spec.Trainer, spec.Hidden, spec.Epochs, ds.Name, demoModelName)
	job, err := c.SubmitJob(ctx, spec)
	if err != nil {
		return fmt.Errorf("submit training job: %w", err)
	}
	if job, err = dm.waitJob(job.ID, true); err != nil {
		return err
	}
	dm.v1 = job.Result.ModelVersion
	if len(job.Result.Lineage.Classes) > 0 {
		dm.pred.setClasses(job.Result.Lineage.Classes)
	}
	say("model %s version %s: signed, sha256 %s…", demoModelName, dm.v1, job.Result.ModelSHA256[:12])

	// Roll v1 out in stages.
	if err := demoRollout(ctx, c, demoModelName, dm.v1, dm.agents, dm.pred, say); err != nil {
		return err
	}
	if err := dm.pred.round(ctx, dm.agents, say, true); err != nil {
		return err
	}

	// The policies.
	policy := client.DriftPolicy{Metric: "psi", Threshold: 0.2, MinSamples: 500, Windows: 2}
	if _, err := c.SetDriftPolicy(ctx, demoModelName, policy); err != nil {
		return fmt.Errorf("set drift policy: %w", err)
	}
	say("drift policy: alert when PSI ≥ %.1f in %d windows in a row of ≥ %d samples  [shoal drift policy %s --metric psi --threshold %.1f --min-samples %d --windows %d]",
		policy.Threshold, policy.Windows, policy.MinSamples, demoModelName, policy.Threshold, policy.MinSamples, policy.Windows)
	stages, err := stagesFromFlags("--canary", []string{"1", "100%"}, 3*time.Second, time.Minute, "rollback", 0)
	if err != nil {
		return err
	}
	tmpl := apiv1.RolloutSpec{Stages: stages, OnFailure: "rollback", Health: &apiv1.HealthCheck{Predictions: 5, Seconds: 2}}
	if _, err := c.SetLoopPolicy(ctx, demoModelName, client.LoopPolicy{Retrain: true, Rollout: &tmpl, Cooldown: apiv1.Duration(time.Hour)}); err != nil {
		return fmt.Errorf("set retraining policy: %w", err)
	}
	say("retraining policy: on an alert, retrain on the latest version of %s, gate, roll out canary 1 → 100%% (soak 3s, rolled back on failure)  [shoal loop policy %s --retrain --canary 1,100%% --soak 3s --timeout 1m --on-failure rollback --cooldown 1h]",
		demoDataset, demoModelName)

	// Calm: the training distribution.
	say("streaming sensor readings from the training distribution: %d per agent every %s (about %d per %s drift window)",
		dm.pred.batch, dm.d.interval, dm.pred.batch*dm.d.agents*max(1, int(demoDriftWindow/dm.d.interval)), demoDriftWindow)
	dm.printed = map[string]bool{}
	dm.since = time.Now()
	calm := 0
	if err := dm.stream(func() (bool, error) {
		n, err := dm.showDrift()
		calm += n
		return calm >= 3, err
	}); err != nil {
		return err
	}
	if alerts, err := c.Alerts(ctx, demoModelName); err == nil {
		say("no drift: %d alerts", len(alerts))
	}

	// The sensors age.
	say("the sensors age: temperature now reads %.0f°C high (+%d std)", float64(demoShiftStd)*sensorStd[sensorShifted], demoShiftStd)
	dm.pred.setShift(demoShiftStd)
	ds2, err := c.PushDataset(ctx, demoDataset, "state", "classification", strings.NewReader(sensorCSV(demoRows, demoFieldRows, demoShiftStd)))
	if err != nil {
		return fmt.Errorf("push dataset v2: %w", err)
	}
	say("pushed dataset %s v%d: the %d training rows + %d labelled field rows with the shift (labelled field data, as agents' captures with POST /v1/feedback would give), sha256 %s…",
		ds2.Name, ds2.Version, demoRows, demoFieldRows, ds2.SHA256[:12])

	var (
		alert    *client.Alert
		events   = 0
		jobShown = false
		roAfter  uint64
		roLast   string
		run      client.LoopRun
		deadline = time.Now().Add(3 * time.Minute)
	)
	err = dm.stream(func() (bool, error) {
		if time.Now().After(deadline) {
			return false, fmt.Errorf("the retraining loop did not finish in 3 minutes")
		}
		if alert == nil {
			if _, err := dm.showDrift(); err != nil {
				return false, err
			}
			alerts, err := c.Alerts(ctx, demoModelName)
			if err != nil {
				return false, err
			}
			if len(alerts) == 0 {
				return false, nil
			}
			alert = &alerts[0]
			var top []string
			for _, f := range alert.TopFeatures {
				top = append(top, fmt.Sprintf("%s %.2f", f.Name, f.PSI))
			}
			say("DRIFT ALERT %s on %s v%s: %d windows in a row over PSI %.1f; top features: %s", alert.ID, alert.Model, alert.Version, len(alert.Windows), alert.Policy.Threshold, strings.Join(top, ", "))
		}
		runs, err := c.LoopRuns(ctx, demoModelName)
		if err != nil || len(runs) == 0 {
			return false, err
		}
		run = runs[0]
		for _, ev := range run.Events[min(events, len(run.Events)):] {
			say("retraining run %d: [%s] %s", run.Seq, ev.State, ev.Message)
		}
		events = len(run.Events)
		if run.Job != "" && !jobShown {
			j, err := c.Job(ctx, run.Job)
			if err != nil {
				return false, err
			}
			if j.Final() {
				jobShown = true
				dm.showJob(j)
			}
		}
		if run.Rollout != "" {
			evs, err := c.RolloutEvents(ctx, run.Rollout, roAfter)
			if err != nil {
				return false, err
			}
			for _, ev := range evs {
				roAfter = ev.Seq
				if ev.Type != "device" || ev.Phase == "failed" {
					say("  %s", ev.Message)
				}
			}
			r, err := c.Rollout(ctx, run.Rollout)
			if err != nil {
				return false, err
			}
			if line := progressLine(r); line != roLast {
				say("  rollout %s: %s", r.ID, line)
				roLast = line
			}
		}
		switch run.State {
		case "rejected", "failed":
			return false, fmt.Errorf("retraining run %d %s: %s", run.Seq, run.State, strings.Join(run.Reasons, "; "))
		case "done":
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	say("the loop closed: %s v%s (drifted) → v%s, trained on %s v%d, gated, canaried and promoted by rollout %s", demoModelName, run.FromVersion, run.Version, run.Dataset, run.DatasetVersion, run.Rollout)
	return dm.pred.round(ctx, dm.agents, say, true)
}

// stream sends a prediction round every interval, and asks done every
// half second until it holds.
func (dm *demo) stream(done func() (bool, error)) error {
	tick := time.NewTicker(dm.d.interval)
	defer tick.Stop()
	check := time.NewTicker(500 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case <-dm.ctx.Done():
			return dm.ctx.Err()
		case <-tick.C:
			if err := dm.pred.roundOf(dm.ctx, dm.agents, dm.say, false, true); err != nil {
				return err
			}
		case <-check.C:
			ok, err := done()
			if err != nil || ok {
				return err
			}
		}
	}
}

// showDrift prints the whole drift windows (cohort all) that have settled
// since dm.since and were not shown yet, and says how many of v1's it
// printed.
func (dm *demo) showDrift() (int, error) {
	rep, err := dm.c.Drift(dm.ctx, demoModelName, client.DriftQuery{Cohort: "all", Last: 2 * time.Minute})
	if err != nil {
		return 0, err
	}
	ws := rep.Windows
	slices.SortFunc(ws, func(a, b client.DriftWindow) int { return a.Start.Compare(b.Start) })
	n := 0
	for _, w := range ws {
		key := w.Version + "/" + w.Start.String()
		if w.Start.Before(dm.since) || w.End.Add(demoDriftSettle).After(time.Now()) || dm.printed[key] || (w.Cohort != "all" && w.Cohort != "") {
			continue
		}
		dm.printed[key] = true
		if w.Version == dm.v1 {
			n++
		}
		top := client.FeatureDrift{}
		for _, f := range w.Features {
			if f.PSI >= top.PSI {
				top = f
			}
		}
		verdict := "ok"
		if w.Breach {
			verdict = "BREACH"
		}
		if w.Error != "" {
			verdict = w.Error
		}
		dm.say("drift %s v%s window %s–%s: %4d samples, PSI %.3f (top: %s %.3f)  %s",
			demoModelName, w.Version, w.Start.Local().Format("15:04:05"), w.End.Local().Format("15:04:05"), w.Samples, w.PSI, orDash(top.Name), top.PSI, verdict)
	}
	return n, nil
}

// waitJob follows a training job to its end, printing every tenth epoch
// (if epochs) and its validation gates.
func (dm *demo) waitJob(id string, epochs bool) (client.Job, error) {
	shown := 0
	wctx, cancel := context.WithTimeout(dm.ctx, 3*time.Minute)
	defer cancel()
	j, err := dm.c.WaitJob(wctx, id, 100*time.Millisecond, func(j client.Job) {
		if !epochs {
			return
		}
		hist := j.History
		if len(hist) == 0 && j.Progress != nil {
			hist = []client.JobProgress{*j.Progress}
		}
		for _, p := range hist {
			if p.Epoch > shown && (p.Epoch == 1 || p.Epoch%10 == 0 || (j.Final() && p.Epoch == hist[len(hist)-1].Epoch)) {
				dm.say("  epoch %3d/%d  train loss %.4f  validation loss %.4f  validation %s %.4f", p.Epoch, p.Epochs, p.TrainLoss, p.ValidationLoss, orDash(p.Metric), p.ValidationMetric)
				shown = p.Epoch
			}
		}
	})
	if err != nil {
		return j, fmt.Errorf("training job %s: %w", id, err)
	}
	dm.showJob(j)
	if j.State != "succeeded" || j.Result == nil {
		return j, fmt.Errorf("training job %s %s: %s", id, j.State, j.Error)
	}
	if j.Result.Validation != nil && j.Result.Validation.Status != "passed" {
		return j, fmt.Errorf("training job %s: the model failed its gates: %s", id, strings.Join(j.Result.Validation.Reasons, "; "))
	}
	return j, nil
}

// showJob prints a finished job's result and its validation gates.
func (dm *demo) showJob(j client.Job) {
	if j.Result == nil {
		dm.say("job %s %s: %s", j.ID, j.State, j.Error)
		return
	}
	r := j.Result
	dm.say("job %s %s: %s v%s on %s v%d (%d train / %d validation / %d holdout rows, best epoch %d of %d): %s",
		j.ID, j.State, r.Model, r.ModelVersion, r.Lineage.Dataset, r.Lineage.DatasetVersion, r.TrainRows, r.ValidationRows, r.HoldoutRows, r.BestEpoch, r.Epochs, metrics(r.Metrics))
	if v := r.Validation; v != nil {
		champ := ""
		if v.Champion != "" {
			champ = ", against champion v" + v.Champion
		}
		dm.say("  validation gates %s (%d holdout rows%s):", strings.ToUpper(v.Status), v.HoldoutRows, champ)
		for _, ch := range v.Checks {
			mark := "pass"
			if !ch.Passed {
				mark = "FAIL"
			}
			detail := ""
			if ch.Detail != "" {
				detail = "  " + ch.Detail
			}
			dm.say("    %-4s %-22s %.4g (limit %.4g)%s", mark, ch.Name, ch.Value, ch.Limit, detail)
		}
	}
}

// demoRollout rolls version v of model out in stages — a canary of one
// device, half the fleet, then all of it, each soaking a few seconds once
// its devices are healthy — printing the stages as they go, while the
// agents keep predicting (an agent reports a version healthy after 5
// predictions or 5 seconds).
func demoRollout(ctx context.Context, c *client.Client, model, v string, agents []*demoAgent, pred *predictor, say func(string, ...any)) error {
	spec := apiv1.RolloutSpec{
		Model: model, Version: v,
		Health:    &apiv1.HealthCheck{Predictions: 5, Seconds: 5},
		OnFailure: "rollback",
		Stages: []apiv1.Stage{
			{Name: "canary", Count: 1, Soak: apiv1.Duration(3 * time.Second), Timeout: apiv1.Duration(time.Minute)},
			{Name: "half", Percent: 50, Soak: apiv1.Duration(3 * time.Second), Timeout: apiv1.Duration(time.Minute)},
			{Name: "all", Percent: 100, Timeout: apiv1.Duration(time.Minute)},
		},
	}
	r, err := c.CreateRollout(ctx, spec)
	if err != nil {
		return fmt.Errorf("roll out %s %s: %w", model, v, err)
	}
	say("rollout %s: %s v%s to %d devices, canary 1 → 50%% → 100%%, rolled back if a stage fails (release %d, signed manifest over MQTT)",
		r.ID, model, v, r.Targets, r.ReleaseSequence)
	var after uint64
	last := ""
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; ; i++ {
		evs, err := c.RolloutEvents(ctx, r.ID, after)
		if err != nil {
			return fmt.Errorf("follow rollout %s: %w", r.ID, err)
		}
		for _, ev := range evs {
			after = ev.Seq
			if ev.Type != "device" || ev.Phase == "failed" {
				say("  %s", ev.Message)
			}
		}
		if r, err = c.Rollout(ctx, r.ID); err != nil {
			return fmt.Errorf("follow rollout %s: %w", r.ID, err)
		}
		if line := progressLine(r); line != last {
			say("  %s", line)
			last = line
		}
		if r.Ended() {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rollout %s is still %s after 3 minutes: %s", r.ID, r.State, r.Reason)
		}
		if i%2 == 1 {
			if err := pred.roundOf(ctx, agents, say, false, true); err != nil && ctx.Err() == nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	if r.State != "completed" {
		return fmt.Errorf("rollout %s ended %s: %s", r.ID, strings.ReplaceAll(r.State, "_", " "), r.Reason)
	}
	return nil
}

// predictor sends a batch of sensor readings to each agent per round and
// counts the predictions.
type predictor struct {
	model string
	batch int

	mu      sync.Mutex
	n, rows int // predictions (requests) and the readings in them
	r       *rand.Rand
	shift   float64
	classes []string
}

func (p *predictor) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *predictor) readings() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rows
}

func (p *predictor) setShift(s float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shift = s
}

func (p *predictor) setClasses(c []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.classes = slices.Clone(c)
}

// round predicts once on each agent. An agent with no model active yet is
// skipped when the fleet is still being rolled out to (during), and an
// error otherwise.
func (p *predictor) round(ctx context.Context, agents []*demoAgent, say func(string, ...any), verbose bool) error {
	return p.roundOf(ctx, agents, say, verbose, false)
}

func (p *predictor) roundOf(ctx context.Context, agents []*demoAgent, say func(string, ...any), verbose, during bool) error {
	for _, a := range agents {
		p.mu.Lock()
		if p.r == nil {
			p.r = rand.New(rand.NewPCG(3, 5))
		}
		batch := max(p.batch, 1)
		x := make([]float64, 0, batch*len(sensorFeatures))
		for range batch {
			x = append(x, sensorRow(p.r, p.r.IntN(len(sensorMeans)), p.shift)...)
		}
		classes := p.classes
		p.mu.Unlock()
		body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "input", "shape": []int{batch, len(sensorFeatures)}, "datatype": "FP32", "data": x}}})
		resp, err := infer(ctx, a.api+"/v2/models/"+p.model+"/infer", body)
		if during && errors.Is(err, errNoModel) {
			continue
		}
		if err != nil {
			return fmt.Errorf("predict on %s: %w", a.id, err)
		}
		p.mu.Lock()
		p.n++
		p.rows += batch
		p.mu.Unlock()
		if verbose {
			label := "?"
			var probs []float64
			for _, o := range resp.Outputs {
				if o.Name == "label" && len(o.Data) > 0 {
					if i := int(o.Data[0]); i >= 0 && i < len(classes) && float64(i) == o.Data[0] {
						label = classes[i]
					}
				}
				if o.Name == "probabilities" && len(o.Data) >= len(classes) {
					probs = o.Data[:len(classes)]
				}
			}
			var reading []string
			for j, u := range sensorUnits {
				reading = append(reading, fmt.Sprintf("%.*f%s", map[bool]int{true: 2, false: 1}[u == "g"], x[j], u))
			}
			say("  %s (model v%s): [%s] → %-7s p=%s  (+%d more)", a.id, resp.ModelVersion, strings.Join(reading, " "), label, fmtProbs(probs), batch-1)
		}
	}
	return nil
}

func fmtProbs(p []float64) string {
	parts := make([]string, len(p))
	for i, v := range p {
		parts[i] = fmt.Sprintf("%.2f", v)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	Outputs      []struct {
		Name string    `json:"name"`
		Data []float64 `json:"data"`
	} `json:"outputs"`
}

// errNoModel: the agent has no model active yet (503).
var errNoModel = errors.New("no model active yet")

func infer(ctx context.Context, url string, body []byte) (*inferResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		return nil, fmt.Errorf("%w: %s", errNoModel, strings.TrimSpace(string(data)))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	var r inferResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// waitFor polls cond until it holds, printing its status line whenever it
// changes, or fails after timeout.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string), show func(string)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, status := cond()
		if status != last {
			show(status)
			last = status
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %s", timeout, status)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err())
		case <-t.C:
		}
	}
}
