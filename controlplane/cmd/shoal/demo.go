package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/controlplane"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
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
		Short: "Run the whole spine on embedded defaults: control plane, N agents, push, staged rollout, predict, telemetry",
		Long: `shoal demo starts a control plane (embedded MQTT broker, Badger store) and
N agents in this process, makes a small example ONNX model, pushes and signs
it, rolls it out in stages (a canary, half the fleet, then all of it, each
gated on the devices reporting the version active and healthy), sends
predictions through each agent's Open Inference Protocol API and shows the
telemetry arriving. Then it pushes v2 and rolls it out the same way. It stays up until Ctrl-C, or --duration.`,
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

// demoModel makes the example model: a small MLP that classifies four
// sensor readings (temperature, vibration, current, pressure) into
// normal / worn / failing. Versions differ in their weights.
func demoModel(version int) ([]byte, onnxbuild.MLPSpec, error) {
	spec := onnxbuild.MLPSpec{
		Name:       "sensor-classifier",
		Input:      "sensor readings",
		Layers:     onnxbuild.RandomLayers(uint64(version), 4, 16, 3),
		Mean:       []float32{60, 0.5, 8, 101},
		Std:        []float32{15, 0.2, 2, 3},
		Classifier: true,
	}
	data, err := onnxbuild.MLP(spec)
	return data, spec, err
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
	if d.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.duration)
		defer cancel()
	}
	out := o.stdout
	say := func(format string, args ...any) {
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
		DataDir:        filepath.Join(dir, "controlplane"),
		HTTPAddr:       d.httpAddr,
		MQTTAddr:       d.mqttAddr,
		ONNXRuntimeLib: d.ortLib,
		Logger:         log.With("component", "controlplane"),
	})
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	if err := cp.Start(); err != nil {
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
	var pred predictor
	defer func() {
		say("shutting down: agents flush their telemetry to the control plane, then it stops")
		stopAgents()
		agentWG.Wait()
		for _, a := range agents {
			a.a.Close()
		}
		if c, err := client.New(cp.URL()); err == nil {
			if s, err := c.Telemetry(context.Background(), ""); err == nil {
				say("final count: %d predictions made, %d recorded by the control plane", pred.total(), s.Total.Predictions)
			}
		}
		stopCP()
		cpWG.Wait()
		cp.Close()
	}()
	say("control plane up: API %s, MQTT %s (embedded broker), data in %s", cp.URL(), cp.MQTTAddr(), dir)

	c, err := client.New(cp.URL())
	if err != nil {
		return err
	}

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
	if err := waitFor(ctx, 30*time.Second, func() (bool, string) {
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
	}, func(s string) { say("%s", s) }); err != nil {
		return err
	}

	// v1: make, push (the control plane checks it with ONNX Runtime and signs it), deploy.
	for version := 1; version <= 2; version++ {
		if err := ctx.Err(); err != nil {
			return nil
		}
		data, _, err := demoModel(version)
		if err != nil {
			return err
		}
		v := fmt.Sprint(version)
		mv, err := c.PushModel(ctx, "sensor-classifier", v, bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("push model: %w", err)
		}
		say("pushed sensor-classifier %s: %s, sha256 %s…, signed (key %s…)", v, humanBytes(mv.Size), mv.SHA256[:12], mv.KeyID[:12])
		if err := demoRollout(ctx, c, v, agents, &pred, say); err != nil {
			return err
		}
		if err := pred.round(ctx, agents, say, true); err != nil {
			return err
		}
	}

	say("open %s/api/v1/devices, %s/api/v1/telemetry, or run `shoal --server %s devices`", cp.URL(), cp.URL(), cp.URL())
	say("agents' inference APIs: %s/v2/models/sensor-classifier (and the other agents)", agents[0].api)
	if d.duration == 0 {
		say("streaming predictions every %s; Ctrl-C to stop", d.interval)
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
				say("telemetry: %d predictions made, %d received by the control plane in %d records", pred.total(), s.Total.Predictions, s.Total.Records)
			}
		}
	}
}

// demoRollout rolls version v out in stages — a canary of one device,
// half the fleet, then all of it, each soaking a few seconds once its
// devices are healthy — printing the stages as they go, while the agents
// keep predicting (an agent reports a version healthy after 5 predictions
// or 5 seconds).
func demoRollout(ctx context.Context, c *client.Client, v string, agents []*demoAgent, pred *predictor, say func(string, ...any)) error {
	spec := map[string]any{
		"model": "sensor-classifier", "version": v,
		"health":     map[string]any{"predictions": 5, "seconds": 5},
		"on_failure": "rollback",
		"stages": []map[string]any{
			{"name": "canary", "count": 1, "soak": "3s", "timeout": "1m"},
			{"name": "half", "percent": 50, "soak": "3s", "timeout": "1m"},
			{"name": "all", "percent": 100, "timeout": "1m"},
		},
	}
	r, err := c.CreateRollout(ctx, spec)
	if err != nil {
		return fmt.Errorf("roll out sensor-classifier %s: %w", v, err)
	}
	say("rollout %s: sensor-classifier %s to %d devices, canary 1 → 50%% → 100%%, rolled back if a stage fails (release %d, signed manifest over MQTT)",
		r.ID, v, r.Targets, r.ReleaseSequence)
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

// predictor sends one prediction per agent per round and counts them.
type predictor struct {
	mu sync.Mutex
	n  int
	r  *rand.Rand
}

func (p *predictor) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

var classes = []string{"normal", "worn", "failing"}

// round predicts once on each agent. An agent with no model active yet is
// skipped when the fleet is still being rolled out to (during), and an
// error otherwise.
func (p *predictor) round(ctx context.Context, agents []*demoAgent, say func(string, ...any), verbose bool) error {
	return p.roundOf(ctx, agents, say, verbose, false)
}

func (p *predictor) roundOf(ctx context.Context, agents []*demoAgent, say func(string, ...any), verbose, during bool) error {
	p.mu.Lock()
	if p.r == nil {
		p.r = rand.New(rand.NewPCG(7, 11))
	}
	p.mu.Unlock()
	for _, a := range agents {
		p.mu.Lock()
		x := []float64{60 + p.r.NormFloat64()*15, math.Abs(0.5 + p.r.NormFloat64()*0.2), 8 + p.r.NormFloat64()*2, 101 + p.r.NormFloat64()*3}
		p.mu.Unlock()
		body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "sensor readings", "shape": []int{1, 4}, "datatype": "FP32", "data": x}}})
		resp, err := infer(ctx, a.api+"/v2/models/sensor-classifier/infer", body)
		if during && errors.Is(err, errNoModel) {
			continue
		}
		if err != nil {
			return fmt.Errorf("predict on %s: %w", a.id, err)
		}
		p.mu.Lock()
		p.n++
		p.mu.Unlock()
		if verbose {
			label := "?"
			var probs []float64
			for _, o := range resp.Outputs {
				if o.Name == "label" && len(o.Data) == 1 {
					if i := int(o.Data[0]); i >= 0 && i < len(classes) {
						label = classes[i]
					}
				}
				if o.Name == "probabilities" {
					probs = o.Data
				}
			}
			say("  %s (model v%s): [%.1f°C %.2fg %.1fA %.1fkPa] → %-7s p=%s", a.id, resp.ModelVersion, x[0], x[1], x[2], x[3], label, fmtProbs(probs))
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
