package rollout

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// These tests run the engine over the real fleet, registry and monitor on
// a Badger store, with an injected clock. Devices are simulated at the
// message level: they publish ReportedState, DeviceStatus and telemetry
// into the fleet's and monitor's MQTT handlers, as agents do. The
// end-to-end scenarios with real agents are in e2e/rollout_test.go.

var ctx = context.Background()

var scheme = topics.New("")

// publisher counts the desired states published per device.
type publisher struct {
	mu      sync.Mutex
	desired map[string]int
}

func (p *publisher) Publish(topic string, payload []byte, retained bool) error {
	id, kind, err := scheme.Parse(topic)
	if err != nil {
		return err
	}
	if kind == topics.Desired {
		p.mu.Lock()
		p.desired[id]++
		p.mu.Unlock()
	}
	return nil
}

func (p *publisher) count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.desired[id]
}

// env is an engine with its real neighbours.
type env struct {
	t     *testing.T
	dir   string
	clock *shoaltest.Clock
	st    store.Store
	pub   *publisher
	fleet *fleet.Service
	reg   *registry.Registry
	mon   *monitor.Monitor
	eng   *Engine
	devs  map[string]*sim
	order []string
}

// sim is a simulated device.
type sim struct {
	id      string
	online  bool
	active  string
	prev    string
	target  string
	phase   shoalv1.Phase
	err     string
	healthy bool
	seq     uint64
	// behave decides what the device does with a desired version it
	// does not run: "" installs it and reports healthy, "fail" refuses it
	// in its self-test, "stuck" never gets past downloading, "active"
	// activates it but never reports healthy.
	behave string
}

func newEnv(t *testing.T, devices int) *env {
	t.Helper()
	onnxrt.MustInitForTest(t)
	e := &env{t: t, dir: t.TempDir(), clock: shoaltest.NewClock(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)),
		pub: &publisher{desired: map[string]int{}}, devs: map[string]*sim{}}
	e.open()
	for i := range devices {
		id := fmt.Sprintf("dev-%02d", i)
		tok, err := e.fleet.CreateToken(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.fleet.Enroll(ctx, fleet.EnrollRequest{Token: tok.Token, DeviceID: id, Labels: map[string]string{"parity": []string{"even", "odd"}[i%2]}}); err != nil {
			t.Fatal(err)
		}
		d := &sim{id: id, online: true}
		e.devs[id] = d
		e.order = append(e.order, id)
		e.status(d)
	}
	for v := 1; v <= 3; v++ {
		e.push(fmt.Sprint(v))
	}
	return e
}

func (e *env) open() {
	e.t.Helper()
	log := slog.New(slog.DiscardHandler)
	st, err := badgerstore.Open(filepath.Join(e.dir, "store"), log)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	e.t.Cleanup(func() { st.Close() })
	signer, err := trust.LoadOrCreateSigner(filepath.Join(e.dir, "key.pem"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg, err = registry.New(st, filepath.Join(e.dir, "blobs"), signer, log, e.clock.Now)
	if err != nil {
		e.t.Fatal(err)
	}
	e.fleet = fleet.New(st, e.pub, scheme, log, e.clock.Now)
	e.mon = monitor.New(st, e.pub, scheme, log, e.clock.Now)
	e.eng = New(st, e.fleet, e.reg, e.mon, log, e.clock.Now)
}

// restart closes the store and builds everything again over it, as a
// control-plane restart does.
func (e *env) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) push(version string) {
	e.t.Helper()
	data, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "m", Layers: onnxbuild.RandomLayers(uint64(len(version)+int(version[0])), 3, 4, 2)})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := e.reg.Push(ctx, "m", version, bytes.NewReader(data)); err != nil {
		e.t.Fatal(err)
	}
}

// deploy makes every device run version first, directly.
func (e *env) deploy(version string) {
	e.t.Helper()
	env, _, err := e.reg.Manifest(ctx, "m", version, registry.ManifestOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.fleet.SetDesired(ctx, "m", env, nil); err != nil {
		e.t.Fatal(err)
	}
	e.converge()
}

func (e *env) status(d *sim) {
	e.t.Helper()
	b, err := proto.Marshal(&shoalv1.DeviceStatus{SchemaVersion: 1, DeviceId: d.id, Online: d.online, AtUnixMs: e.clock.Now().UnixMilli()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.fleet.HandleStatus(scheme.Device(d.id, topics.Status), b)
}

func (e *env) report(d *sim) {
	e.t.Helper()
	ms := &shoalv1.ModelStatus{Name: "m", Phase: d.phase, Error: d.err, Healthy: d.healthy}
	if d.active != "" {
		ms.Active = &shoalv1.ModelRef{Name: "m", Version: d.active}
	}
	if d.prev != "" {
		ms.Previous = &shoalv1.ModelRef{Name: "m", Version: d.prev}
	}
	if d.target != "" {
		ms.Desired = &shoalv1.ModelRef{Name: "m", Version: d.target}
	}
	b, err := proto.Marshal(&shoalv1.ReportedState{SchemaVersion: 1, DeviceId: d.id, Models: []*shoalv1.ModelStatus{ms},
		Phase: d.phase, ReportedAtUnixMs: e.clock.Now().UnixMilli()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.fleet.HandleReported(scheme.Device(d.id, topics.Reported), b)
}

// setOnline changes a device's connection, as its status and last will
// do.
func (e *env) setOnline(id string, online bool) {
	d := e.devs[id]
	d.online = online
	e.status(d)
}

// converge makes every online device act on its desired state once.
func (e *env) converge() {
	e.t.Helper()
	view, err := e.fleet.Devices(ctx, e.order)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, id := range e.order {
		d := e.devs[id]
		want := modelState(view[id], "m").DesiredVersion
		if !d.online || want == "" || (want == d.target && d.phase == shoalv1.Phase_PHASE_FAILED) {
			continue
		}
		if want == d.active {
			// Already serving it (a rollback to the version a refused
			// update left running): the agent just reports it active.
			if d.phase != shoalv1.Phase_PHASE_ACTIVE {
				d.target, d.phase, d.err = want, shoalv1.Phase_PHASE_ACTIVE, ""
				e.report(d)
			}
			continue
		}
		d.target = want
		switch d.behave {
		case "fail":
			d.phase, d.err = shoalv1.Phase_PHASE_FAILED, "self-test: output \"y\" differs from the expected"
		case "stuck":
			d.phase = shoalv1.Phase_PHASE_DOWNLOADING
		default:
			if d.active != "" {
				d.prev = d.active
			}
			d.active, d.phase, d.err = want, shoalv1.Phase_PHASE_ACTIVE, ""
			d.healthy = d.behave != "active"
		}
		e.report(d)
	}
}

// telemetry sends one window of a device's telemetry on version.
func (e *env) telemetry(id, version string, predictions, errors, p95us uint64) {
	e.t.Helper()
	d := e.devs[id]
	d.seq++
	now := e.clock.Now().UnixMilli()
	b, err := proto.Marshal(&shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: id, FirstSeq: d.seq, LastSeq: d.seq,
		Records: []*shoalv1.TelemetryRecord{{Seq: d.seq, ModelName: "m", ModelVersion: version, WindowStartUnixMs: now - 1000, WindowEndUnixMs: now,
			Predictions: predictions, Errors: errors, LatencySumUs: predictions * p95us / 2, LatencyMaxUs: p95us * 2,
			LatencyP50Us: p95us / 2, LatencyP95Us: p95us, LatencyP99Us: p95us}}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mon.HandleTelemetry(scheme.Device(id, topics.Telemetry), b)
}

// step runs a pass, lets devices act on it, and runs another, so that a
// step sees the devices' answers to what the engine sent.
func (e *env) step() {
	e.t.Helper()
	if err := e.eng.Reconcile(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.converge()
	if err := e.eng.Reconcile(ctx); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(id string) Rollout {
	e.t.Helper()
	r, err := e.eng.Get(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) create(spec Spec) Rollout {
	e.t.Helper()
	r, err := e.eng.Create(ctx, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// phases maps device to phase.
func phases(r Rollout) map[string]string {
	out := map[string]string{}
	for _, d := range r.Devices {
		out[d.ID] = d.Phase
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func dump(t *testing.T, r Rollout) {
	t.Helper()
	if !testing.Verbose() {
		return
	}
	fmt.Fprintf(os.Stderr, "rollout %s %s stage %s reason %q phases %v\n", r.ID, r.State, r.Stage, r.Reason, r.Phases)
	for _, ev := range r.Events {
		fmt.Fprintf(os.Stderr, "  %d %s %s %s %s\n", ev.Seq, ev.Type, ev.Stage, ev.Device, ev.Message)
	}
}
