package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// deviceModel returns the state of model on device id.
func deviceModel(devs []client.Device, id, model string) (client.DeviceModel, bool) {
	for _, d := range devs {
		if d.ID != id {
			continue
		}
		for _, m := range d.Models {
			if m.Name == model {
				return m, true
			}
		}
	}
	return client.DeviceModel{}, false
}

// waitFailed waits until device id reports model failed with an error
// containing want, still running activeVersion.
func waitFailed(t *testing.T, c *client.Client, id, model, activeVersion, want string) {
	t.Helper()
	waitDevices(t, c, id+" rejects the update: "+want, func(devs []client.Device) error {
		m, ok := deviceModel(devs, id, model)
		if !ok || m.Phase != "failed" || !strings.Contains(m.Error, want) {
			return fmt.Errorf("%s %s = %+v", id, model, m)
		}
		if m.ActiveVersion != activeVersion {
			t.Fatalf("%s: active version %q after a rejected update; want %q", id, m.ActiveVersion, activeVersion)
		}
		return nil
	})
}

func mustServe(t *testing.T, fa *fleetAgent, version string) {
	t.Helper()
	out, err := fa.infer("clf", "sensor values", []int64{1, 4}, []float32{1, 2, 3, 4})
	if err != nil {
		t.Fatalf("%s no longer serves: %v", fa.id, err)
	}
	if out.ModelVersion != version {
		t.Fatalf("%s serves %q; want %q", fa.id, out.ModelVersion, version)
	}
}

// deviceClient connects to the broker with a device's stored credential.
func deviceClient(t *testing.T, fa *fleetAgent, lost chan<- error) mqtt.Client {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fa.dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id struct {
		DeviceID     string `json:"device_id"`
		MQTTUsername string `json:"mqtt_username"`
		MQTTPassword string `json:"mqtt_password"`
		BrokerURL    string `json:"broker_url"`
	}
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatal(err)
	}
	opts := mqtt.NewClientOptions().AddBroker(id.BrokerURL).SetClientID(id.DeviceID).
		SetUsername(id.MQTTUsername).SetPassword(id.MQTTPassword).SetAutoReconnect(false).
		SetCleanSession(true).SetProtocolVersion(4)
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		if lost != nil {
			lost <- err
		}
	})
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(shoaltest.Patience) || tok.Error() != nil {
		t.Fatalf("connect as %s: %v", id.DeviceID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func telemetryBatch(device string, seq, predictions uint64) []byte {
	b, _ := proto.Marshal(&shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: device, FirstSeq: seq, LastSeq: seq,
		Records: []*shoalv1.TelemetryRecord{{Seq: seq, ModelName: "clf", ModelVersion: "1", Predictions: predictions}}})
	return b
}

// TestBadInput: each bad input gets a clear error, nothing crashes, and the
// old model keeps serving.
func TestBadInput(t *testing.T) {
	onnxrt.MustInitForTest(t)
	cp := controltest.Start(t, controltest.WithLogger(testLogger(t)))
	a := startAgent(t, cp, "dev-a")
	b := startAgent(t, cp, "dev-b")
	ctx := context.Background()
	cp.PushModel(t, "clf", "1", classifier(t, 1))
	cp.Deploy(t, "clf", "1")
	waitDevices(t, cp.Client, "v1 active", allActive(2, "clf", "1"))

	t.Run("non-ONNX upload", func(t *testing.T) {
		_, err := cp.Client.PushModel(ctx, "clf", "junk", strings.NewReader("this is not a model"))
		if client.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "ONNX") {
			t.Fatalf("push junk: %v; want 400 saying it is not an ONNX model", err)
		}
		if _, err := cp.Client.ModelVersion(ctx, "clf", "junk"); client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("junk version was stored: %v", err)
		}
		mustServe(t, a, "1")
	})

	t.Run("tampered artifact", func(t *testing.T) {
		mv := cp.PushModel(t, "clf", "3", classifier(t, 3))
		blob := filepath.Join(cp.DataDir, "artifacts", "sha256", mv.SHA256)
		data, err := os.ReadFile(blob)
		if err != nil {
			t.Fatalf("artifact not where expected: %v", err)
		}
		data[len(data)/2] ^= 0xff // same size, different bytes
		if err := os.WriteFile(blob, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cp.Deploy(t, "clf", "3", "dev-a")
		waitFailed(t, cp.Client, "dev-a", "clf", "1", "sha256")
		mustServe(t, a, "1")
	})

	t.Run("malformed inference requests", func(t *testing.T) {
		cases := []struct{ body, want string }{
			{`{`, "JSON"},
			{`{"inputs":[]}`, "sensor values"},
			{`{"inputs":[{"name":"sensor values","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}`, "sensor values"},
			{`{"inputs":[{"name":"sensor values","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}`, "sensor values"},
			{`{"inputs":[{"name":"sensor values","shape":[1,4],"datatype":"FP32","data":[1,"x",3,4]}]}`, "sensor values"},
			{`{"inputs":[{"name":"nope","shape":[1],"datatype":"FP32","data":[1]},{"name":"sensor values","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, "nope"},
		}
		for _, c := range cases {
			resp, err := http.Post(b.api+"/v2/models/clf/infer", "application/json", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Error string }
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(e.Error, c.want) {
				t.Errorf("%s → %d %q; want 400 naming %q", c.body, resp.StatusCode, e.Error, c.want)
			}
		}
		api, err := b.localAPI()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.Infer(ctx, localclient.InferRequest{Model: "unknown"}); localclient.StatusOf(err) != http.StatusNotFound {
			t.Errorf("unknown model: %v; want a 404", err)
		}
		mustServe(t, b, "1")
	})

	// The remaining cases use dev-a's own MQTT credential; stop the agent
	// so that its client id is free.
	a.shutdown(t)

	t.Run("publish on another device's topic", func(t *testing.T) {
		before, err := cp.Client.Telemetry(ctx, "dev-b")
		if err != nil && client.StatusOf(err) != http.StatusNotFound { // 404: nothing stored yet
			t.Fatal(err)
		}
		lost := make(chan error, 1)
		c := deviceClient(t, a, lost)
		scheme := topics.New("")
		// QoS 1 on a forbidden topic: the broker refuses it (and drops
		// the connection), so it never reaches the control plane.
		c.Publish(scheme.Device("dev-b", topics.Telemetry), 1, false, telemetryBatch("dev-b", 1<<40, 1_000_000))
		select {
		case <-lost:
		case <-time.After(shoaltest.Patience):
			t.Fatal("the broker kept a device that published on another device's topic")
		}
		after, err := cp.Client.Telemetry(ctx, "dev-b")
		if err != nil && client.StatusOf(err) != http.StatusNotFound {
			t.Fatal(err)
		}
		if after.Total.Predictions >= before.Total.Predictions+1_000_000 {
			t.Fatalf("forged telemetry for dev-b was stored: %+v", after.Total)
		}
	})

	t.Run("malformed protobuf on a device topic", func(t *testing.T) {
		c := deviceClient(t, a, nil)
		scheme := topics.New("")
		acks := make(chan *shoalv1.Ack, 4)
		c.Subscribe(scheme.Device("dev-a", topics.Ack), 1, func(_ mqtt.Client, m mqtt.Message) {
			var ack shoalv1.Ack
			if proto.Unmarshal(m.Payload(), &ack) == nil {
				acks <- &ack
			}
		}).Wait()
		for _, kind := range []topics.Kind{topics.Telemetry, topics.Reported, topics.Status} {
			for _, junk := range [][]byte{[]byte("\xff\xff\xff garbage"), {0x0a, 0xff}, bytes.Repeat([]byte{0x08}, 100)} {
				if tok := c.Publish(scheme.Device("dev-a", kind), 1, false, junk); !tok.WaitTimeout(shoaltest.Patience) || tok.Error() != nil {
					t.Fatalf("publish junk on %s: %v", kind, tok.Error())
				}
			}
		}
		// A valid batch after the junk is still stored and acked: ingest
		// survived and processes the topic in order.
		c.Publish(scheme.Device("dev-a", topics.Telemetry), 1, false, telemetryBatch("dev-a", 1<<40, 7))
		select {
		case ack := <-acks:
			if ack.FirstSeq != 1<<40 {
				t.Fatalf("ack = %v", ack)
			}
		case <-time.After(shoaltest.Patience):
			t.Fatal("no ack for a valid batch sent after malformed ones")
		}
		if _, err := cp.Client.Devices(ctx); err != nil {
			t.Fatalf("control plane unhealthy after malformed input: %v", err)
		}
		mustServe(t, b, "1")
	})
}

// TestForeignManifestRejected: with a broker Shoal does not control (an
// external broker, here one that lets anyone publish anywhere), a desired
// state carrying a manifest signed by another key is rejected by the agent,
// which keeps serving its model.
func TestForeignManifestRejected(t *testing.T) {
	onnxrt.MustInitForTest(t)
	addr := freeAddr(t)
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: testLogger(t)})
	srv.AddHook(new(auth.AllowHook), nil)
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })

	cp := controltest.Start(t, controltest.WithBrokerURL("tcp://"+addr), controltest.WithLogger(testLogger(t)))
	a := startAgent(t, cp, "dev-x")
	v1 := cp.PushModel(t, "clf", "1", classifier(t, 1))
	cp.Deploy(t, "clf", "1")
	waitDevices(t, cp.Client, "v1 active", allActive(1, "clf", "1"))

	// Sign a manifest for a "v9" with a key the agent never pinned.
	other, err := trust.LoadOrCreateSigner(filepath.Join(t.TempDir(), "other.pem"))
	if err != nil {
		t.Fatal(err)
	}
	m := &shoalv1.DeploymentManifest{SchemaVersion: 1, ModelName: "clf", ModelVersion: "9",
		Artifact:        &shoalv1.Artifact{Sha256: v1.SHA256, Size: v1.Size, Url: v1.ArtifactURL, Signature: v1.Signature},
		ReleaseSequence: 100, IssuedAtUnixMs: time.Now().UnixMilli(), ExpiresAtUnixMs: time.Now().Add(time.Hour).UnixMilli()}
	payload, _ := protojson.Marshal(m)
	env, err := other.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	ds, _ := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: 1, Generation: 1000, Deployments: [][]byte{env}})
	if err := srv.Publish(topics.New("").Device("dev-x", topics.Desired), ds, true, 1); err != nil {
		t.Fatal(err)
	}
	// The manifest's model name cannot be trusted, so the rejection is the
	// device's error, not a model's.
	waitDevices(t, cp.Client, "dev-x rejects the foreign manifest", func(devs []client.Device) error {
		for _, d := range devs {
			if d.ID == "dev-x" && strings.Contains(d.Error, "signature") {
				if m, _ := deviceModel(devs, "dev-x", "clf"); m.ActiveVersion != "1" {
					t.Fatalf("active version %q after a foreign manifest", m.ActiveVersion)
				}
				return nil
			}
		}
		return fmt.Errorf("devices = %+v", devs)
	})
	mustServe(t, a, "1")
}
