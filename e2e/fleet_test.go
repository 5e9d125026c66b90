package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
)

func testLogger(_ testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// fleetAgent is an agent running in this process.
type fleetAgent struct {
	id      string
	dir     string
	a       *agent.Agent
	api     string
	stop    context.CancelFunc
	done    chan error
	mu      sync.Mutex
	made    int // predictions made through its API
	stopped bool
}

// startAgent runs an agent in this process, enrolled on cp, and returns
// once the control plane knows it.
func startAgent(t *testing.T, cp *controltest.Server, id string, mutate ...func(*agent.Config)) *fleetAgent {
	t.Helper()
	dir := t.TempDir()
	cfg := agent.Config{
		DataDir:         dir,
		ServerURL:       cp.URL(),
		DeviceID:        id,
		EnrollToken:     agent.Secret(cp.Token(t)),
		APIAddr:         "127.0.0.1:0",
		TelemetryWindow: 50 * time.Millisecond,
		IntraOpThreads:  1,
		Logger:          testLogger(t),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	fa := runAgentCfg(t, id, cfg)
	// The agent enrolls as it starts running: a deploy to "every device"
	// right after startAgent must find it enrolled.
	shoaltest.Eventually(t, id+" enrolled", func() error {
		_, err := cp.Client.Device(context.Background(), id)
		return err
	})
	return fa
}

func runAgentCfg(t *testing.T, id string, cfg agent.Config) *fleetAgent {
	t.Helper()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent %s: %v", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fa := &fleetAgent{id: id, dir: cfg.DataDir, a: a, api: "http://" + a.APIAddr(), stop: cancel, done: make(chan error, 1)}
	go func() { fa.done <- a.Run(ctx) }()
	t.Cleanup(func() { fa.shutdown(t) })
	return fa
}

func (fa *fleetAgent) shutdown(t *testing.T) {
	fa.mu.Lock()
	if fa.stopped {
		fa.mu.Unlock()
		return
	}
	fa.stopped = true
	fa.mu.Unlock()
	fa.stop()
	select {
	case err := <-fa.done:
		if err != nil && err != context.Canceled {
			t.Errorf("agent %s: Run: %v", fa.id, err)
		}
	case <-time.After(shoaltest.Patience):
		t.Errorf("agent %s did not stop", fa.id)
	}
	fa.a.Close()
}

// localAPI returns a client of fa's local API.
func (fa *fleetAgent) localAPI() (*localclient.Client, error) {
	return localclient.New(fa.api)
}

// infer runs model on fa with one FP32 input. Only a success counts as
// made.
func (fa *fleetAgent) infer(model, input string, shape []int64, x []float32) (*localclient.InferResponse, error) {
	c, err := fa.localAPI()
	if err != nil {
		return nil, err
	}
	out, err := c.Infer(context.Background(), localclient.InferRequest{Model: model, Inputs: []localclient.Tensor{localclient.NewTensor(input, shape, x)}})
	if err != nil {
		return nil, err
	}
	fa.mu.Lock()
	fa.made++
	fa.mu.Unlock()
	return out, nil
}

func waitDevices(t *testing.T, c *client.Client, what string, cond func([]client.Device) error) {
	t.Helper()
	shoaltest.Eventually(t, what, func() error {
		devs, err := c.Devices(context.Background())
		if err != nil {
			return err
		}
		return cond(devs)
	})
}

func allActive(n int, model, version string) func([]client.Device) error {
	return func(devs []client.Device) error {
		active := 0
		var states []string
		for _, d := range devs {
			for _, m := range d.Models {
				if m.Name == model && m.ActiveVersion == version && m.Phase == "active" {
					active++
				}
				states = append(states, fmt.Sprintf("%s:%s/%s/%s %s", d.ID, m.ActiveVersion, m.DesiredVersion, m.Phase, m.Error))
			}
		}
		if active != n {
			return fmt.Errorf("%d/%d active on %s %s: %v", active, n, model, version, states)
		}
		return nil
	}
}

func classifier(t *testing.T, seed uint64) []byte {
	t.Helper()
	data, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "clf", Input: "sensor values", Layers: onnxbuild.RandomLayers(seed, 4, 8, 3), Classifier: true})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkPredictions makes n predictions on fa and checks each against a
// direct ONNX Runtime run of the same model bytes on the same input.
func checkPredictions(t *testing.T, fa *fleetAgent, ref *onnxrt.Session, version string, n int, r *rand.Rand) {
	t.Helper()
	for i := 0; i < n; i++ {
		x := []float32{float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.NormFloat64())}
		out, err := fa.infer("clf", "sensor values", []int64{1, 4}, x)
		if err != nil {
			t.Fatalf("%s infer: %v", fa.id, err)
		}
		if out.ModelVersion != version {
			t.Fatalf("%s served version %q; want %q", fa.id, out.ModelVersion, version)
		}
		want, err := ref.Run([]onnxrt.Tensor{{Name: "sensor values", DataType: onnxrt.FP32, Shape: []int64{1, 4}, Data: x}})
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
				switch wd := w.Data.(type) {
				case []float32:
					got, err := o.Float32s()
					if err != nil || len(got) != len(wd) {
						t.Fatalf("%s output %s = %v (%v); want %v", fa.id, o.Name, got, err, wd)
					}
					for j := range wd {
						if got[j] != wd[j] {
							t.Fatalf("%s output %s[%d] = %v; ORT gives %v", fa.id, o.Name, j, got[j], wd[j])
						}
					}
				case []int64:
					got, err := o.Int64s()
					if err != nil || fmt.Sprint(got) != fmt.Sprint(wd) {
						t.Fatalf("%s output %s = %v (%v); ORT gives %v", fa.id, o.Name, got, err, wd)
					}
				}
			}
			if !found {
				t.Fatalf("%s: output %q missing from %+v", fa.id, w.Name, out.Outputs)
			}
		}
	}
}

func waitTelemetry(t *testing.T, c *client.Client, agents []*fleetAgent) {
	t.Helper()
	made := 0
	for _, fa := range agents {
		fa.mu.Lock()
		made += fa.made
		fa.mu.Unlock()
	}
	shoaltest.Eventually(t, "telemetry count equals predictions", func() error {
		s, err := c.Telemetry(context.Background(), "")
		if err != nil {
			return err
		}
		if s.Total.Predictions > uint64(made) {
			t.Fatalf("control plane counts %d predictions; only %d were made", s.Total.Predictions, made)
		}
		if s.Total.Predictions != uint64(made) {
			return fmt.Errorf("control plane has %d of %d predictions", s.Total.Predictions, made)
		}
		return nil
	})
}

// TestFleetSpine: push → all active → predictions equal a direct ONNX
// Runtime run → telemetry count equals predictions made; then v2: all
// switch, v1 stays on disk.
func TestFleetSpine(t *testing.T) {
	onnxrt.MustInitForTest(t)
	cp := controltest.Start(t, controltest.WithLogger(testLogger(t).With("component", "controlplane")))
	var agents []*fleetAgent
	for i := 1; i <= 3; i++ {
		agents = append(agents, startAgent(t, cp, fmt.Sprintf("dev-%d", i)))
	}
	r := rand.New(rand.NewPCG(1, 2))

	v1 := classifier(t, 1)
	mv1 := cp.PushModel(t, "clf", "1", v1)
	cp.Deploy(t, "clf", "1")
	waitDevices(t, cp.Client, "v1 active everywhere", allActive(3, "clf", "1"))
	ref1, err := onnxrt.Open(v1, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ref1.Close()
	for _, fa := range agents {
		checkPredictions(t, fa, ref1, "1", 25, r)
	}
	waitTelemetry(t, cp.Client, agents)

	v2 := classifier(t, 2)
	cp.PushModel(t, "clf", "2", v2)
	cp.Deploy(t, "clf", "2")
	waitDevices(t, cp.Client, "v2 active everywhere, v1 previous", func(devs []client.Device) error {
		if err := allActive(3, "clf", "2")(devs); err != nil {
			return err
		}
		for _, d := range devs {
			if d.Models[0].PreviousVersion != "1" {
				return fmt.Errorf("%s previous = %q", d.ID, d.Models[0].PreviousVersion)
			}
		}
		return nil
	})
	ref2, err := onnxrt.Open(v2, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ref2.Close()
	for _, fa := range agents {
		checkPredictions(t, fa, ref2, "2", 25, r)
		if !fileWithDigest(fa.dir, mv1.SHA256) {
			t.Errorf("%s: v1 (%s) is no longer on disk after switching to v2", fa.id, mv1.SHA256[:12])
		}
	}
	waitTelemetry(t, cp.Client, agents)
}

// fileWithDigest reports whether a file under dir is named for digest.
func fileWithDigest(dir, digest string) bool {
	found := false
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), digest) {
			found = true
		}
		return nil
	})
	return found
}

var _ = math.Abs

func newBenchAgent(dir, server, tok string) (*agent.Agent, error) {
	return agent.New(agent.Config{
		DataDir:         dir,
		ServerURL:       server,
		DeviceID:        "bench",
		EnrollToken:     agent.Secret(tok),
		APIAddr:         "127.0.0.1:0",
		TelemetryWindow: time.Second,
		IntraOpThreads:  1,
		Logger:          slog.New(slog.DiscardHandler),
	})
}
