package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/controlplane/internal/broker"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func testModel(t testing.TB, name string) []byte {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locate onnxruntime_go module: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "test_data", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// enrollment is the answer of POST /v1/enroll.
type enrollment struct {
	DeviceID          string `json:"device_id"`
	MQTTUsername      string `json:"mqtt_username"`
	MQTTPassword      string `json:"mqtt_password"`
	BrokerURL         string `json:"broker_url"`
	TopicPrefix       string `json:"topic_prefix"`
	TrustPublicKeyPEM string `json:"trust_public_key_pem"`
}

func enroll(t *testing.T, cp *controltest.Server, id string) enrollment {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"token": cp.Token(t), "device_id": id, "agent_version": "test"})
	resp, err := http.Post(cp.URL()+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enroll %s: %d %s", id, resp.StatusCode, data)
	}
	var en enrollment
	if err := json.Unmarshal(data, &en); err != nil {
		t.Fatal(err)
	}
	return en
}

// device is an MQTT client standing in for an agent.
type device struct {
	t      *testing.T
	en     enrollment
	scheme topics.Scheme
	cli    paho.Client
	msgs   chan paho.Message
}

// connect connects as the enrolled device and subscribes to its desired
// and ack topics.
func connect(t *testing.T, en enrollment) *device {
	t.Helper()
	d := &device{t: t, en: en, scheme: topics.New(en.TopicPrefix), msgs: make(chan paho.Message, 64)}
	opts := paho.NewClientOptions().AddBroker(en.BrokerURL).SetClientID(en.MQTTUsername).
		SetUsername(en.MQTTUsername).SetPassword(en.MQTTPassword).SetCleanSession(true).SetAutoReconnect(false)
	d.cli = paho.NewClient(opts)
	if tok := d.cli.Connect(); !tok.WaitTimeout(shoaltest.Patience) || tok.Error() != nil {
		t.Fatalf("device %s: connect to %s: %v", en.DeviceID, en.BrokerURL, tok.Error())
	}
	t.Cleanup(func() { d.cli.Disconnect(0) })
	for _, k := range []topics.Kind{topics.Desired, topics.Ack} {
		tok := d.cli.Subscribe(d.scheme.Device(en.DeviceID, k), 1, func(_ paho.Client, m paho.Message) { d.msgs <- m })
		if !tok.WaitTimeout(shoaltest.Patience) || tok.Error() != nil {
			t.Fatalf("device %s: subscribe: %v", en.DeviceID, tok.Error())
		}
	}
	return d
}

// next waits for the next message on the device's topic of kind k,
// skipping others.
func (d *device) next(k topics.Kind) []byte {
	d.t.Helper()
	want := d.scheme.Device(d.en.DeviceID, k)
	deadline := time.After(shoaltest.Patience)
	for {
		select {
		case m := <-d.msgs:
			if m.Topic() == want {
				return m.Payload()
			}
		case <-deadline:
			d.t.Fatalf("device %s: nothing on %s within %s", d.en.DeviceID, want, shoaltest.Patience)
		}
	}
}

func (d *device) publish(k topics.Kind, m proto.Message, retained bool) {
	d.t.Helper()
	payload, err := proto.Marshal(m)
	if err != nil {
		d.t.Fatal(err)
	}
	tok := d.cli.Publish(d.scheme.Device(d.en.DeviceID, k), 1, retained, payload)
	if !tok.WaitTimeout(shoaltest.Patience) || tok.Error() != nil {
		d.t.Fatalf("device %s: publish %s: %v", d.en.DeviceID, k, tok.Error())
	}
}

// desired waits for a DesiredState and opens its one deployment with the
// key pinned at enrollment.
func (d *device) desired() (*shoalv1.DesiredState, *shoalv1.DeploymentManifest) {
	d.t.Helper()
	var ds shoalv1.DesiredState
	if err := proto.Unmarshal(d.next(topics.Desired), &ds); err != nil {
		d.t.Fatal(err)
	}
	if len(ds.GetDeployments()) != 1 {
		d.t.Fatalf("desired state has %d deployments; want 1", len(ds.GetDeployments()))
	}
	v, err := trust.NewVerifier([]byte(d.en.TrustPublicKeyPEM))
	if err != nil {
		d.t.Fatal(err)
	}
	payload, err := v.OpenEnvelope(ds.GetDeployments()[0], trust.ManifestPayloadType)
	if err != nil {
		d.t.Fatalf("deployment does not verify with the pinned key: %v", err)
	}
	var m shoalv1.DeploymentManifest
	if err := protojson.Unmarshal(payload, &m); err != nil {
		d.t.Fatal(err)
	}
	return &ds, &m
}

func fetch(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, data)
	}
	return data
}

// TestDeviceLoop walks one device through the loop over real HTTP and MQTT:
// enroll, receive a signed desired state, fetch and verify the artifact,
// report, send telemetry and get it acknowledged.
func TestDeviceLoop(t *testing.T) {
	cp := controltest.Start(t)
	ctx := context.Background()

	fi, err := os.Stat(filepath.Join(cp.DataDir, "signing-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key: %v, mode %v; want a 0600 file", err, fi.Mode())
	}
	if pub, err := cp.Client.PublicKey(ctx); err != nil || !bytes.Equal(pub, cp.PublicKeyPEM()) {
		t.Fatalf("GET public key = %q, %v", pub, err)
	}

	en := enroll(t, cp, "dev-1")
	if en.BrokerURL != "tcp://"+cp.MQTTAddr() || en.TopicPrefix != topics.DefaultPrefix || en.TrustPublicKeyPEM != string(cp.PublicKeyPEM()) {
		t.Errorf("enrollment = %+v; want broker tcp://%s", en, cp.MQTTAddr())
	}
	dev := connect(t, en)

	model := testModel(t, "example_dynamic_axes.onnx")
	cp.PushModel(t, "summer", "1", model)
	dr := cp.Deploy(t, "summer", "1")
	if dr.ReleaseSequence != 1 || len(dr.Devices) != 1 || dr.Devices[0].ID != "dev-1" {
		t.Fatalf("deploy = %+v", dr)
	}
	ds, m := dev.desired()
	if ds.GetGeneration() != dr.Devices[0].Generation || m.GetModelName() != "summer" || m.GetReleaseSequence() != 1 {
		t.Fatalf("desired state %v with manifest %v", ds, m)
	}
	blob := fetch(t, cp.URL()+m.GetArtifact().GetUrl())
	sum := sha256.Sum256(blob)
	if hex.EncodeToString(sum[:]) != m.GetArtifact().GetSha256() || !bytes.Equal(blob, model) {
		t.Fatal("artifact digest differs from the manifest")
	}
	v, _ := trust.NewVerifier([]byte(en.TrustPublicKeyPEM))
	if err := v.VerifyBlob(bytes.NewReader(blob), m.GetArtifact().GetSignature()); err != nil {
		t.Fatalf("artifact signature: %v", err)
	}

	dev.publish(topics.Status, &shoalv1.DeviceStatus{SchemaVersion: 1, DeviceId: "dev-1", Online: true, AgentVersion: "test"}, true)
	ref := &shoalv1.ModelRef{Name: "summer", Version: "1", Sha256: m.GetArtifact().GetSha256(), ReleaseSequence: 1}
	dev.publish(topics.Reported, &shoalv1.ReportedState{
		SchemaVersion: 1, DeviceId: "dev-1", AppliedGeneration: ds.GetGeneration(), Phase: shoalv1.Phase_PHASE_ACTIVE,
		Models: []*shoalv1.ModelStatus{{Name: "summer", Active: ref, Desired: ref, Phase: shoalv1.Phase_PHASE_ACTIVE}},
	}, true)
	// The control plane ingests MQTT messages asynchronously and offers
	// no event to wait on: the API is polled.
	shoaltest.Eventually(t, "device reported active", func() error {
		devs, err := cp.Client.Devices(ctx)
		if err != nil || len(devs) != 1 {
			return fmt.Errorf("devices %v, %v", devs, err)
		}
		d := devs[0]
		if !d.Online || d.Phase != "active" || d.AppliedGeneration != ds.GetGeneration() ||
			len(d.Models) != 1 || d.Models[0].ActiveVersion != "1" {
			return fmt.Errorf("device %+v", d)
		}
		return nil
	})

	dev.publish(topics.Telemetry, &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "dev-1", FirstSeq: 1, LastSeq: 2,
		Records: []*shoalv1.TelemetryRecord{
			{Seq: 1, ModelName: "summer", ModelVersion: "1", Predictions: 7},
			{Seq: 2, ModelName: "summer", ModelVersion: "1", Predictions: 3, Errors: 1},
		}}, false)
	var ack shoalv1.Ack
	if err := proto.Unmarshal(dev.next(topics.Ack), &ack); err != nil {
		t.Fatal(err)
	}
	if ack.GetDeviceId() != "dev-1" || ack.GetLastSeq() != 2 {
		t.Errorf("ack = %v; want up to seq 2", &ack)
	}
	// The ack says the records are stored, so the summary has them now.
	s, err := cp.Client.Telemetry(ctx, "dev-1")
	if err != nil || s.Total.Predictions != 10 || s.Total.Errors != 1 {
		t.Errorf("telemetry = %+v, %v; want 10 predictions and 1 error", s, err)
	}
}

// TestRestartKeepsState restarts the control plane on its data: models,
// devices, release sequences and each device's desired state survive, and
// a device that connects after the restart gets its desired state again.
func TestRestartKeepsState(t *testing.T) {
	cp := controltest.Start(t)
	ctx := context.Background()
	en := enroll(t, cp, "dev-1")
	mv := cp.PushModel(t, "summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	first := cp.Deploy(t, "summer", "1")
	key := cp.PublicKeyPEM()

	cp = cp.Restart(t)
	if !bytes.Equal(cp.PublicKeyPEM(), key) {
		t.Error("the signing key changed across the restart")
	}
	got, err := cp.Client.ModelVersion(ctx, "summer", "1")
	if err != nil || got.SHA256 != mv.SHA256 || got.Signature != mv.Signature {
		t.Fatalf("model after restart = %+v, %v", got, err)
	}
	dev := connect(t, en) // the old credentials and broker URL still work
	ds, m := dev.desired()
	if ds.GetGeneration() != first.Devices[0].Generation || m.GetReleaseSequence() != 1 {
		t.Errorf("desired state after restart = generation %d release %d; want %d and 1", ds.GetGeneration(), m.GetReleaseSequence(), first.Devices[0].Generation)
	}
	second := cp.Deploy(t, "summer", "1")
	if second.ReleaseSequence != 2 || second.Devices[0].Generation != first.Devices[0].Generation+1 {
		t.Errorf("deploy after restart = %+v; want release 2, generation %d", second, first.Devices[0].Generation+1)
	}
}

// TestRunShutsDownWhenCancelled: Run serves until its context ends, then
// closes everything, releasing the store.
func TestRunShutsDownWhenCancelled(t *testing.T) {
	dir := t.TempDir()
	var logs lockedBuffer
	cp, err := controlplane.New(controlplane.Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	fetch(t, cp.URL()+"/api/v1/trust/public-key")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v; want nil", err)
		}
	case <-time.After(shoaltest.Patience):
		t.Fatalf("Run did not return within %s of its context ending", shoaltest.Patience)
	}
	if _, err := http.Get(cp.URL() + "/api/v1/trust/public-key"); err == nil {
		t.Error("the API still answers after Run returned")
	}
	if err := cp.Close(); err != nil {
		t.Errorf("Close after Run = %v", err)
	}
	st, err := badgerstore.Open(filepath.Join(dir, "store"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("store still held after shutdown: %v", err)
	}
	st.Close()
	for _, want := range []string{"store opened", "signing key loaded", "registry ready", "MQTT broker listening", "HTTP API listening", "control plane stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestExternalBroker runs the control plane on another MQTT broker (a
// Shoal broker with a service credential) instead of the embedded one.
func TestExternalBroker(t *testing.T) {
	ext, err := broker.NewEmbedded(broker.EmbeddedConfig{
		Addr:    "127.0.0.1:0",
		Scheme:  topics.New(""),
		Auth:    denyAll{},
		Service: &broker.Credential{Username: "-shoal", Password: "s3cret"},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := ext.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ext.Close() })
	desired := make(chan []byte, 4)
	if err := ext.Subscribe(topics.New("").Device("dev-1", topics.Desired), func(_ string, p []byte) { desired <- bytes.Clone(p) }); err != nil {
		t.Fatal(err)
	}

	cp := controltest.Start(t, controltest.WithBrokerURL("tcp://-shoal:s3cret@"+ext.Addr()))
	if cp.MQTTAddr() != "tcp://"+ext.Addr() || strings.Contains(cp.PublicBrokerURL(), "s3cret") {
		t.Errorf("MQTTAddr = %q, PublicBrokerURL = %q; want the broker without credentials", cp.MQTTAddr(), cp.PublicBrokerURL())
	}
	en := enroll(t, cp, "dev-1")
	if en.BrokerURL != "tcp://"+ext.Addr() {
		t.Errorf("agents are told broker %q; want tcp://%s", en.BrokerURL, ext.Addr())
	}
	cp.PushModel(t, "summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	cp.Deploy(t, "summer", "1")
	select {
	case p := <-desired:
		var ds shoalv1.DesiredState
		if err := proto.Unmarshal(p, &ds); err != nil || len(ds.GetDeployments()) != 1 {
			t.Errorf("desired state on the external broker = %v, %v", &ds, err)
		}
	case <-time.After(shoaltest.Patience):
		t.Fatalf("no desired state on the external broker within %s", shoaltest.Patience)
	}

	// A reported state published on the external broker reaches the fleet.
	rs, _ := proto.Marshal(&shoalv1.ReportedState{SchemaVersion: 1, DeviceId: "dev-1", Phase: shoalv1.Phase_PHASE_IDLE})
	if err := ext.Publish(topics.New("").Device("dev-1", topics.Reported), rs, true); err != nil {
		t.Fatal(err)
	}
	shoaltest.Eventually(t, "report through the external broker", func() error {
		devs, err := cp.Client.Devices(context.Background())
		if err != nil || len(devs) != 1 {
			return fmt.Errorf("devices %v, %v", devs, err)
		}
		if devs[0].Phase != "idle" {
			return fmt.Errorf("phase %q", devs[0].Phase)
		}
		return nil
	})
}

type denyAll struct{}

func (denyAll) Authenticate(string, string) bool { return false }

// TestPublicBrokerURLAndPrefix: agents are told the configured public
// broker URL and topic prefix, and the control plane uses that prefix.
func TestPublicBrokerURLAndPrefix(t *testing.T) {
	cp := controltest.Start(t, controltest.WithTopicPrefix("acme/shoal"), controltest.WithPublicBrokerURL("tcp://mqtt.acme.example:1883"))
	en := enroll(t, cp, "dev-1")
	if en.BrokerURL != "tcp://mqtt.acme.example:1883" || en.TopicPrefix != "acme/shoal" {
		t.Fatalf("enrollment = %+v", en)
	}
	en.BrokerURL = "tcp://" + cp.MQTTAddr() // where this test can reach it
	dev := connect(t, en)
	cp.PushModel(t, "summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	cp.Deploy(t, "summer", "1")
	if _, m := dev.desired(); m.GetModelName() != "summer" {
		t.Errorf("manifest = %v", m)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  controlplane.Config
		want string
	}{
		{controlplane.Config{}, "data directory"},
		{controlplane.Config{DataDir: t.TempDir(), PublicBrokerURL: "broker:1883"}, "scheme://host:port"},
		{controlplane.Config{DataDir: t.TempDir(), PublicBrokerURL: "tcp://u:p@broker:1883"}, "credentials"},
		{controlplane.Config{DataDir: t.TempDir(), BrokerURL: "ftp://broker"}, "ftp"},
		{controlplane.Config{DataDir: t.TempDir(), ManifestRefreshInterval: -time.Hour}, "manifest refresh interval -1h0m0s"},
		{controlplane.Config{DataDir: t.TempDir(), ManifestRefreshInterval: 10 * 24 * time.Hour}, "under 240h"},
	} {
		_, err := controlplane.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error mentioning %q", tc.cfg, err, tc.want)
		}
	}
	// The address is taken: Start fails and says which.
	cp := controltest.Start(t)
	other, err := controlplane.New(controlplane.Config{DataDir: t.TempDir(), HTTPAddr: cp.HTTPAddr(), MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Start(context.Background()); err == nil || !strings.Contains(err.Error(), cp.HTTPAddr()) {
		t.Errorf("Start on a taken address = %v; want an error naming %s", err, cp.HTTPAddr())
	}
	if err := other.Start(context.Background()); err == nil {
		t.Error("a second Start succeeded")
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const day = 24 * time.Hour

// TestManifestsReSigned: a deployment outlives its manifest's 30 days. The
// desired state's manifests are re-signed once 10 days or less are left
// (RefreshManifests, and Start after the control plane was down), and a
// device that connects after being away gets a retained desired state
// whose manifest its pinned key accepts and which has not expired.
func TestManifestsReSigned(t *testing.T) {
	clk := shoaltest.NewClock(time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC))
	var logs lockedBuffer
	cp := controltest.Start(t, controltest.WithNow(clk.Now), controltest.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := context.Background()
	en := enroll(t, cp, "dev-1")
	cp.PushModel(t, "summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	dr := cp.Deploy(t, "summer", "1")
	gen := dr.Devices[0].Generation

	// desired connects as the device (as an agent back from being away
	// does), reads the retained desired state and checks its manifest as
	// the agent would: signature with the pinned key, then expiry.
	desired := func() (*shoalv1.DesiredState, *shoalv1.DeploymentManifest) {
		t.Helper()
		dev := connect(t, en)
		defer dev.cli.Disconnect(0)
		ds, m := dev.desired()
		v, err := trust.NewVerifier(cp.PublicKeyPEM())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.OpenEnvelope(ds.GetDeployments()[0], trust.ManifestPayloadType); err != nil {
			t.Fatalf("agent-side verifier refuses the retained manifest: %v", err)
		}
		if exp := time.UnixMilli(m.GetExpiresAtUnixMs()); !clk.Now().Before(exp) {
			t.Fatalf("retained manifest expired at %s; now is %s", exp, clk.Now())
		}
		if m.GetModelName() != "summer" || m.GetModelVersion() != "1" || m.GetReleaseSequence() != dr.ReleaseSequence {
			t.Fatalf("retained manifest = %v; want summer 1 release %d", m, dr.ReleaseSequence)
		}
		return ds, m
	}
	generation := func() uint64 {
		t.Helper()
		devs, err := cp.Client.Devices(ctx)
		if err != nil || len(devs) != 1 {
			t.Fatalf("devices = %v, %v", devs, err)
		}
		return devs[0].DesiredGeneration
	}
	_, m := desired()
	issued := clk.Now()
	if exp := time.UnixMilli(m.GetExpiresAtUnixMs()); !exp.Equal(issued.Add(30 * day)) {
		t.Fatalf("manifest expires at %s; want 30 days after %s", exp, issued)
	}

	// 19 days on, 11 are left: nothing to re-sign.
	clk.Advance(19 * day)
	if err := cp.RefreshManifests(ctx); err != nil {
		t.Fatal(err)
	}
	if g := generation(); g != gen || strings.Contains(logs.String(), "deployment manifests re-signed") {
		t.Fatalf("re-signed with 11 days left (generation %d, was %d)", g, gen)
	}

	// 21 days on, 9 are left: re-signed for another 30 days.
	clk.Advance(2 * day)
	if err := cp.RefreshManifests(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "deployment manifests re-signed") {
		t.Errorf("no log line says manifests were re-signed:\n%s", logs.String())
	}
	ds, m := desired()
	if ds.GetGeneration() != gen+1 || !time.UnixMilli(m.GetExpiresAtUnixMs()).Equal(clk.Now().Add(30*day)) {
		t.Errorf("after the refresh: generation %d, manifest expires %s; want %d, %s",
			ds.GetGeneration(), time.UnixMilli(m.GetExpiresAtUnixMs()), gen+1, clk.Now().Add(30*day))
	}

	// The control plane is down for 35 days, past the new manifest's
	// expiry: Start re-signs it before anything is published.
	clk.Advance(35 * day)
	cp = cp.Restart(t)
	ds, m = desired()
	if ds.GetGeneration() != gen+2 || !time.UnixMilli(m.GetExpiresAtUnixMs()).Equal(clk.Now().Add(30*day)) {
		t.Errorf("after a restart: generation %d, manifest expires %s; want %d, %s",
			ds.GetGeneration(), time.UnixMilli(m.GetExpiresAtUnixMs()), gen+2, clk.Now().Add(30*day))
	}
	if err := cp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cp.RefreshManifests(ctx); err == nil {
		t.Error("RefreshManifests after Close succeeded")
	}
}

// TestManifestRefreshLoop: the control plane re-signs on its own every
// ManifestRefreshInterval, and Close stops it.
func TestManifestRefreshLoop(t *testing.T) {
	clk := shoaltest.NewClock(time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC))
	var logs lockedBuffer
	cp, err := controlplane.New(controlplane.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: clk.Now,
		ManifestRefreshInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if err := cp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := client.New(cp.URL())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"token": tok.Token, "device_id": "dev-1", "agent_version": "test"})
	resp, err := http.Post(cp.URL()+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := c.PushModel(ctx, "summer", "1", bytes.NewReader(testModel(t, "example_dynamic_axes.onnx"))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deploy(ctx, "summer", "1", nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(25 * day)
	shoaltest.Eventually(t, "the loop re-signs the manifest", func() error {
		devs, err := c.Devices(ctx)
		if err != nil || len(devs) != 1 {
			return fmt.Errorf("devices %v, %v", devs, err)
		}
		if devs[0].DesiredGeneration != 2 || !strings.Contains(logs.String(), "deployment manifests re-signed") {
			return fmt.Errorf("generation %d, re-signing logged: %t", devs[0].DesiredGeneration, strings.Contains(logs.String(), "deployment manifests re-signed"))
		}
		return nil
	})
	if err := cp.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "could not re-sign") {
		t.Errorf("a refresh pass failed:\n%s", logs.String())
	}
}

// heldClock is a clock whose next reading, once held, waits until it is
// released: a start-up that reads it stays in the middle of its work.
type heldClock struct {
	mu      sync.Mutex
	hold    chan struct{} // closed to release; nil when not held
	entered chan struct{} // closed when a reading is held
}

func (c *heldClock) Now() time.Time {
	c.mu.Lock()
	hold, entered := c.hold, c.entered
	c.hold = nil
	c.mu.Unlock()
	if hold != nil {
		close(entered)
		<-hold
	}
	return time.Now()
}

// holdNext makes the next reading wait; it returns a channel closed when
// the reading is taken and a function that releases it.
func (c *heldClock) holdNext() (entered <-chan struct{}, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold, c.entered = make(chan struct{}), make(chan struct{})
	hold := c.hold
	return c.entered, func() { close(hold) }
}

// TestStartCanBeInterrupted: while Start is in the middle of its work
// (held in the manifest refresh pass), URL and HTTPAddr answer, and
// cancelling Start's context ends it without serving; Run, stopped the
// same way (SIGTERM at start-up), exits cleanly and releases the store.
func TestStartCanBeInterrupted(t *testing.T) {
	dir := t.TempDir()
	for _, via := range []string{"Start", "Run"} {
		t.Run(via, func(t *testing.T) {
			clk := &heldClock{}
			cp, err := controlplane.New(controlplane.Config{
				DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
				Logger: slog.New(slog.DiscardHandler), Now: clk.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			entered, release := clk.holdNext()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				if via == "Start" {
					done <- cp.Start(ctx)
				} else {
					done <- cp.Run(ctx)
				}
			}()
			<-entered
			// Start holds no lock across its work: these answer now.
			if got := cp.HTTPAddr(); got != "127.0.0.1:0" {
				t.Errorf("HTTPAddr during start-up = %q; want the configured address", got)
			}
			_ = cp.URL()
			cancel()
			release()
			err = <-done
			switch via {
			case "Start":
				if err == nil || !strings.Contains(err.Error(), "start-up interrupted") {
					t.Errorf("Start after its context was cancelled = %v; want start-up interrupted", err)
				}
				if err := cp.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			case "Run":
				if err != nil {
					t.Errorf("Run stopped during start-up = %v; want a clean exit", err)
				}
			}
			if got := cp.HTTPAddr(); got != "127.0.0.1:0" {
				t.Errorf("HTTPAddr = %q after an interrupted start; want nothing listening", got)
			}
		})
	}
	// Both released the store: it opens again.
	cp, err := controlplane.New(controlplane.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New after interrupted starts: %v", err)
	}
	cp.Close()
}

// TestCloseDuringStart: Close during start-up ends the Start and returns.
func TestCloseDuringStart(t *testing.T) {
	clk := &heldClock{}
	cp, err := controlplane.New(controlplane.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := clk.holdNext()
	started := make(chan error, 1)
	go func() { started <- cp.Start(context.Background()) }()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- cp.Close() }()
	// Close has begun once the control plane refuses work as closed.
	shoaltest.Eventually(t, "Close under way", func() error {
		if err := cp.ReconcileRollouts(context.Background()); err == nil || !strings.Contains(err.Error(), "after Close") {
			return fmt.Errorf("ReconcileRollouts = %v", err)
		}
		return nil
	})
	release()
	if err := <-started; err == nil {
		t.Error("Start succeeded although Close was called during it")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if got := cp.HTTPAddr(); got != "127.0.0.1:0" {
		t.Errorf("HTTPAddr = %q; want nothing listening after Close", got)
	}
}
