package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func modelBytes(t *testing.T) []byte {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locate onnxruntime_go: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "test_data", "example_dynamic_axes.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testBroker is an in-process mochi-mqtt broker on a loopback port.
type testBroker struct {
	*mochi.Server
	addr string
	once sync.Once
}

func startBroker(t *testing.T) *testBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &testBroker{Server: srv, addr: addr}
	t.Cleanup(b.stop)
	return b
}

func (b *testBroker) stop() { b.once.Do(func() { b.Close() }) }

func (b *testBroker) subscribe(t *testing.T, filter string) <-chan []byte {
	t.Helper()
	ch := make(chan []byte, 256)
	if err := b.Subscribe(filter, 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		select {
		case ch <- bytes.Clone(pk.Payload):
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	return ch
}

func (b *testBroker) retained(topic string) ([]byte, bool) {
	for _, pk := range b.Topics.Messages(topic) {
		return pk.Payload, true
	}
	return nil, false
}

// fakeCP is the control plane's HTTP side as the agent sees it:
// enrollment and artifacts.
type fakeCP struct {
	*httptest.Server
	t         *testing.T
	signer    *trust.Signer
	brokerURL string
	mu        sync.Mutex
	token     string
	enrolled  map[string]bool
	blobs     map[string][]byte
	requests  [][]byte // the bodies of the enrollment requests
}

func startCP(t *testing.T, brokerURL, token string) *fakeCP {
	t.Helper()
	signer, err := trust.LoadOrCreateSigner(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cp := &fakeCP{t: t, signer: signer, brokerURL: brokerURL, token: token, enrolled: map[string]bool{}, blobs: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", cp.enroll)
	mux.HandleFunc("GET /v1/artifacts/{sha}", func(w http.ResponseWriter, r *http.Request) {
		cp.mu.Lock()
		b, ok := cp.blobs[r.PathValue("sha")]
		cp.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	})
	cp.Server = httptest.NewServer(mux)
	t.Cleanup(cp.Close)
	return cp
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (cp *fakeCP) enroll(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token    string `json:"token"`
		DeviceID string `json:"device_id"`
	}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		apiError(w, 400, "invalid", err.Error())
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.requests = append(cp.requests, body)
	switch {
	case req.Token == "" || req.Token != cp.token:
		apiError(w, 401, "unauthorized", "enrollment token is invalid, used or expired")
		return
	case cp.enrolled[req.DeviceID]:
		apiError(w, 409, "conflict", "device "+req.DeviceID+" is already enrolled")
		return
	}
	cp.enrolled[req.DeviceID] = true
	cp.token = "" // one-time
	json.NewEncoder(w).Encode(map[string]string{
		"device_id": req.DeviceID, "mqtt_username": req.DeviceID, "mqtt_password": "pw-" + req.DeviceID,
		"broker_url": cp.brokerURL, "topic_prefix": topics.DefaultPrefix,
		"trust_public_key_pem": string(cp.signer.PublicKeyPEM()),
	})
}

// enrollments returns the bodies of the enrollment requests so far.
func (cp *fakeCP) enrollments() [][]byte {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([][]byte(nil), cp.requests...)
}

// desired signs a one-model desired state for the model bytes b.
func (cp *fakeCP) desired(name, version string, b []byte, seq, gen uint64) []byte {
	return cp.desiredWith(name, version, b, seq, gen, nil)
}

// desiredWith is desired with the manifest changed by tweak.
func (cp *fakeCP) desiredWith(name, version string, b []byte, seq, gen uint64, tweak func(*shoalv1.DeploymentManifest)) []byte {
	t := cp.t
	t.Helper()
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	cp.mu.Lock()
	cp.blobs[sha] = b
	cp.mu.Unlock()
	sig, err := cp.signer.SignBlob(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	sess, err := onnxrt.Open(b, onnxrt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := onnxrt.MakeSelfTest(sess, 1)
	sess.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := &shoalv1.DeploymentManifest{
		SchemaVersion: 1, ModelName: name, ModelVersion: version,
		Artifact:        &shoalv1.Artifact{Sha256: sha, Size: int64(len(b)), Url: "/v1/artifacts/" + sha, Signature: sig},
		SelfTest:        st,
		ReleaseSequence: seq,
		ExpiresAtUnixMs: time.Now().Add(time.Hour).UnixMilli(),
	}
	if tweak != nil {
		tweak(m)
	}
	payload, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	env, err := cp.signer.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: 1, Generation: gen, Deployments: [][]byte{env}})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// predict runs model name on the agent's local API with one row of the
// example model's input (FP32 [1, 10]).
func predict(addr, name string) (*localclient.InferResponse, error) {
	c, err := localclient.New("http://" + addr)
	if err != nil {
		return nil, err
	}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	return c.Infer(context.Background(), localclient.InferRequest{Model: name, Inputs: []localclient.Tensor{localclient.NewTensor("input_vectors", []int64{1, 10}, x)}})
}

func get(addr, path string) (int, string, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String(), nil
}

func waitFor[T any](t *testing.T, ch <-chan []byte, what string, decode func([]byte) (T, bool)) T {
	t.Helper()
	deadline := time.After(shoaltest.Patience)
	for {
		select {
		case p := <-ch:
			if v, ok := decode(p); ok {
				return v
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, shoaltest.Patience)
			var zero T
			return zero
		}
	}
}
