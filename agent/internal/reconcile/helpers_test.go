package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/modelstore"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

var (
	testModelOnce sync.Once
	testModel     []byte
	testModelErr  error
)

// modelBytes returns onnxruntime_go's example_dynamic_axes.onnx
// (input_vectors FP32 [-1,10] → output_scalars FP32 [-1]).
func modelBytes(t *testing.T) []byte {
	t.Helper()
	testModelOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
		if err != nil {
			testModelErr = fmt.Errorf("locate onnxruntime_go: %w", err)
			return
		}
		testModel, testModelErr = os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "test_data", "example_dynamic_axes.onnx"))
	})
	if testModelErr != nil {
		t.Fatal(testModelErr)
	}
	return testModel
}

// variant returns a different, equally valid model file: the same graph
// with another doc_string (ModelProto field 6) appended, which protobuf
// parsers take as the field's value.
func variant(t *testing.T, tag string) []byte {
	t.Helper()
	b := bytes.Clone(modelBytes(t))
	doc := []byte("variant " + tag)
	b = append(b, 0x32, byte(len(doc)))
	return append(b, doc...)
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// artifactServer serves artifacts at /v1/artifacts/{sha256} with Range
// support, and can misbehave on request.
type artifactServer struct {
	*httptest.Server
	mu       sync.Mutex
	blobs    map[string][]byte
	ranges   []string // Range header of every request ("" when none)
	cutAfter int64    // >0: the next request sends this many bytes and drops the connection
	hangAt   int64    // >0: the next request sends this many bytes and then stalls
	failWith []int    // statuses to answer the next requests with, in order
	noRange  bool     // ignore Range (always 200)
	hang     chan struct{}
	started  chan struct{} // receives once per request (buffered)
}

func newArtifactServer(t *testing.T) *artifactServer {
	a := &artifactServer{blobs: map[string][]byte{}, hang: make(chan struct{}), started: make(chan struct{}, 64)}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() {
		close(a.hang)
		a.Server.Close()
	})
	return a
}

func (a *artifactServer) put(b []byte) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	sha := digest(b)
	a.blobs[sha] = b
	return sha
}

// set makes the server answer sha's URL with b (e.g. tampered bytes).
func (a *artifactServer) set(sha string, b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.blobs[sha] = b
}

func (a *artifactServer) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ranges...)
}

func (a *artifactServer) serve(w http.ResponseWriter, r *http.Request) {
	sha, ok := strings.CutPrefix(r.URL.Path, "/v1/artifacts/")
	a.mu.Lock()
	a.ranges = append(a.ranges, r.Header.Get("Range"))
	b, found := a.blobs[sha]
	cut, hangAt := a.cutAfter, a.hangAt
	a.cutAfter, a.hangAt = 0, 0
	var status int
	if len(a.failWith) > 0 {
		status, a.failWith = a.failWith[0], a.failWith[1:]
	}
	noRange := a.noRange
	a.mu.Unlock()
	a.started <- struct{}{}

	switch {
	case status != 0:
		http.Error(w, "injected failure", status)
		return
	case !ok || !found:
		http.NotFound(w, r)
		return
	case cut > 0 || hangAt > 0:
		n := max(cut, hangAt)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b[:n])
		w.(http.Flusher).Flush()
		if hangAt > 0 {
			select {
			case <-a.hang:
			case <-r.Context().Done():
			}
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if noRange {
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// testEnv is a reconciler wired to a real store, model set, trust root and
// artifact server.
type testEnv struct {
	t       *testing.T
	signer  *trust.Signer
	store   *modelstore.Store
	set     *inference.Set
	srv     *artifactServer
	clock   *shoaltest.Clock
	r       *Reconciler
	mu      sync.Mutex
	reports []*shoalv1.ReportedState
}

func newEnv(t *testing.T, tweak func(*Config)) *testEnv {
	t.Helper()
	onnxrt.MustInitForTest(t)
	dir := t.TempDir()
	signer, err := trust.LoadOrCreateSigner(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := trust.NewVerifier(signer.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	store, err := modelstore.Open(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{
		t: t, signer: signer, store: store, set: inference.NewSet(),
		srv:   newArtifactServer(t),
		clock: shoaltest.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)),
	}
	t.Cleanup(e.set.Close)
	cfg := Config{
		DeviceID:     "dev-1",
		AgentVersion: "test",
		ServerURL:    e.srv.URL,
		Verifier:     v,
		Store:        store,
		Models:       e.set,
		Report: func(rs *shoalv1.ReportedState) {
			e.mu.Lock()
			e.reports = append(e.reports, rs)
			e.mu.Unlock()
		},
		StallTimeout: 5 * time.Second,
		MinRetry:     time.Second,
		MaxRetry:     8 * time.Second,
		Now:          e.clock.Now,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.r, err = New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// selfTest makes the self-test for model bytes b.
func selfTest(t *testing.T, b []byte) *shoalv1.SelfTest {
	t.Helper()
	s, err := onnxrt.Open(b, onnxrt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := onnxrt.MakeSelfTest(s, 7)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// manifestFor builds the manifest of model bytes b (served by e.srv).
func (e *testEnv) manifestFor(name, version string, b []byte, seq uint64) *shoalv1.DeploymentManifest {
	e.t.Helper()
	sha := e.srv.put(b)
	sig, err := e.signer.SignBlob(bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	return &shoalv1.DeploymentManifest{
		SchemaVersion: 1,
		ModelName:     name,
		ModelVersion:  version,
		Artifact: &shoalv1.Artifact{
			Sha256: sha, Size: int64(len(b)), Url: "/v1/artifacts/" + sha, Signature: sig,
			MediaType: "application/vnd.onnx",
		},
		Inputs:          []*shoalv1.TensorSpec{{Name: "input_vectors", Datatype: "FP32", Shape: []int64{-1, 10}}},
		Outputs:         []*shoalv1.TensorSpec{{Name: "output_scalars", Datatype: "FP32", Shape: []int64{-1}}},
		SelfTest:        selfTest(e.t, b),
		ReleaseSequence: seq,
		IssuedAtUnixMs:  e.clock.Now().UnixMilli(),
		ExpiresAtUnixMs: e.clock.Now().Add(24 * time.Hour).UnixMilli(),
	}
}

// seal signs a manifest into a DSSE envelope with signer (e.signer if nil).
func (e *testEnv) seal(m *shoalv1.DeploymentManifest, signer *trust.Signer) []byte {
	e.t.Helper()
	payload, err := protojson.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.sealJSON(payload, signer)
}

func (e *testEnv) sealJSON(payload []byte, signer *trust.Signer) []byte {
	e.t.Helper()
	if signer == nil {
		signer = e.signer
	}
	env, err := signer.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		e.t.Fatal(err)
	}
	return env
}

func desired(t *testing.T, gen uint64, envs ...[]byte) []byte {
	t.Helper()
	b, err := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: 1, Generation: gen, Deployments: envs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *testEnv) last() *shoalv1.ReportedState {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.reports) == 0 {
		e.t.Fatal("no report yet")
	}
	return e.reports[len(e.reports)-1]
}

func (e *testEnv) reportCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reports)
}

// phases returns the phases reported for model name, without repeats.
func (e *testEnv) phases(name string) []shoalv1.Phase {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []shoalv1.Phase
	for _, rs := range e.reports {
		for _, m := range rs.GetModels() {
			if m.GetName() == name && (len(out) == 0 || out[len(out)-1] != m.GetPhase()) {
				out = append(out, m.GetPhase())
			}
		}
	}
	return out
}

func modelStatus(rs *shoalv1.ReportedState, name string) *shoalv1.ModelStatus {
	for _, m := range rs.GetModels() {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

// serving returns the version serving under name ("" if none).
func (e *testEnv) serving(name string) string {
	for _, r := range e.set.Refs() {
		if r.Name == name {
			return r.Version
		}
	}
	return ""
}

// predict runs the serving model once, to prove it really serves.
func (e *testEnv) predict(name string) error {
	m, release, ok := e.set.Acquire(name)
	if !ok {
		return fmt.Errorf("no model %q serving", name)
	}
	defer release()
	in := onnxrt.Tensor{Name: "input_vectors", DataType: onnxrt.FP32, Shape: []int64{1, 10}, Data: make([]float32, 10)}
	_, err := m.Run([]onnxrt.Tensor{in})
	return err
}
