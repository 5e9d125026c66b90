package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/gin-gonic/gin"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/broker"
	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// ginOutput catches anything gin itself prints; the API must print nothing
// (its logs go through slog).
var ginOutput lockedBuffer

func TestMain(m *testing.M) {
	gin.DefaultWriter = &ginOutput
	gin.DefaultErrorWriter = &ginOutput
	code := m.Run()
	if code == 0 && ginOutput.String() != "" {
		fmt.Fprintf(os.Stderr, "gin printed to its default writers:\n%s\n", ginOutput.String())
		code = 1
	}
	os.Exit(code)
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

// testModel returns a model from the onnxruntime_go module's test data.
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

const (
	testBrokerURL = "tcp://broker.example:1883"
	testPrefix    = "test/v1"
	testMaxUpload = 1 << 20
)

// env is the API over real parts: Badger in a temp dir, the registry with
// ONNX Runtime, the fleet and monitor, the rollout engine (its passes run
// only when a request calls for them: no background loop), and the
// embedded MQTT broker.
type env struct {
	t        *testing.T
	srv      *httptest.Server
	reg      *registry.Registry
	fleet    *fleet.Service
	mon      *monitor.Monitor
	rollouts *rollout.Engine
	bus      *broker.Embedded
	signer   *trust.Signer
	scheme   topics.Scheme
	logs     *lockedBuffer
}

// newEnv starts the API; wrap, if given, replaces the registry the API
// sees (to inject failures).
func newEnv(t *testing.T, wrap ...func(Registry) Registry) *env {
	t.Helper()
	onnxrt.MustInitForTest(t)
	dir := t.TempDir()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := badgerstore.Open(filepath.Join(dir, "store"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	signer, err := trust.LoadOrCreateSigner(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(st, filepath.Join(dir, "artifacts"), signer, log, time.Now, registry.WithMaxBytes(testMaxUpload))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, reg: reg, signer: signer, scheme: topics.New(testPrefix), logs: logs}
	auth := &lateAuth{}
	e.bus, err = broker.NewEmbedded(broker.EmbeddedConfig{Addr: "127.0.0.1:0", Scheme: e.scheme, Auth: auth}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.bus.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.bus.Close() })
	e.fleet = fleet.New(st, e.bus, e.scheme, log, time.Now)
	auth.set(e.fleet)
	e.mon = monitor.New(st, e.bus, e.scheme, log, time.Now)
	e.rollouts = rollout.New(st, e.fleet, reg, e.mon, log, time.Now)

	var r Registry = reg
	for _, w := range wrap {
		r = w(r)
	}
	e.srv = httptest.NewServer(mustNew(t, Deps{
		Registry:     r,
		Fleet:        e.fleet,
		Monitor:      e.mon,
		Rollouts:     e.rollouts,
		PublicKeyPEM: signer.PublicKeyPEM(),
		TopicPrefix:  testPrefix,
		BrokerURL:    func() string { return testBrokerURL },
	}, log))
	t.Cleanup(e.srv.Close)
	return e
}

type lateAuth struct {
	mu sync.Mutex
	a  broker.Authenticator
}

func (l *lateAuth) set(a broker.Authenticator) { l.mu.Lock(); l.a = a; l.mu.Unlock() }

func (l *lateAuth) Authenticate(u, p string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a != nil && l.a.Authenticate(u, p)
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q is not the expected JSON: %v", r.body, err)
	}
}

// wantError checks an error answer: status, code and the words its
// message must hold.
func (r response) wantError(t *testing.T, status int, code shoalerr.Code, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d; want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q; want JSON", ct)
	}
	var e apiv1.ErrorBody
	r.json(t, &e)
	if shoalerr.Code(e.Error.Code) != code {
		t.Errorf("error code = %q; want %q (message %q)", e.Error.Code, code, e.Error.Message)
	}
	for _, s := range contains {
		if !strings.Contains(e.Error.Message, s) {
			t.Errorf("error message %q does not mention %q", e.Error.Message, s)
		}
	}
}

func (e *env) do(method, path string, body io.Reader, header ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

func (e *env) get(path string, header ...string) response {
	e.t.Helper()
	return e.do(http.MethodGet, path, nil, header...)
}

func (e *env) postJSON(path, body string) response {
	e.t.Helper()
	return e.do(http.MethodPost, path, strings.NewReader(body), "Content-Type", "application/json")
}

func (e *env) push(name, version string, data []byte) response {
	e.t.Helper()
	return e.do(http.MethodPut, "/api/v1/models/"+name+"/versions/"+version, bytes.NewReader(data), "Content-Type", "application/octet-stream")
}

// enroll creates a token and enrolls id with it.
func (e *env) enroll(id string) apiv1.Enrollment {
	e.t.Helper()
	r := e.postJSON("/api/v1/tokens", "")
	if r.status != http.StatusCreated {
		e.t.Fatalf("create token: %d %s", r.status, r.body)
	}
	var tok apiv1.Token
	r.json(e.t, &tok)
	r = e.postJSON("/v1/enroll", fmt.Sprintf(`{"token":%q,"device_id":%q,"agent_version":"test","profile":"generic"}`, tok.Token, id))
	if r.status != http.StatusOK {
		e.t.Fatalf("enroll %s: %d %s", id, r.status, r.body)
	}
	var en apiv1.Enrollment
	r.json(e.t, &en)
	return en
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPublicKey(t *testing.T) {
	e := newEnv(t)
	r := e.get("/api/v1/trust/public-key")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/x-pem-file" {
		t.Fatalf("GET public key = %d %q", r.status, r.header.Get("Content-Type"))
	}
	if !bytes.Equal(r.body, e.signer.PublicKeyPEM()) {
		t.Errorf("public key = %q; want the signer's", r.body)
	}
	if _, err := trust.NewVerifier(r.body); err != nil {
		t.Errorf("served key does not parse: %v", err)
	}
}

func TestModels(t *testing.T) {
	e := newEnv(t)
	a := testModel(t, "example_dynamic_axes.onnx")
	b := testModel(t, "example_multitype.onnx")

	r := e.get("/api/v1/models")
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"models":[]}` {
		t.Errorf("empty model list = %d %s", r.status, r.body)
	}

	r = e.push("summer", "1", a)
	if r.status != http.StatusCreated {
		t.Fatalf("PUT = %d %s; want 201", r.status, r.body)
	}
	if loc := r.header.Get("Location"); loc != "/api/v1/models/summer/versions/1" {
		t.Errorf("Location = %q", loc)
	}
	var mv registry.ModelVersion
	r.json(t, &mv)
	var raw map[string]any
	r.json(t, &raw)
	for _, k := range []string{"name", "version", "sha256", "size", "created_at", "artifact_url", "signature", "key_id", "inputs", "outputs"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("ModelVersion JSON lacks %q: %s", k, r.body)
		}
	}
	if mv.SHA256 != digest(a) || mv.Size != int64(len(a)) || mv.ArtifactURL != "/v1/artifacts/"+digest(a) ||
		len(mv.Inputs) != 1 || mv.Inputs[0].Name != "input_vectors" || mv.Inputs[0].DataType != "FP32" {
		t.Errorf("ModelVersion = %+v", mv)
	}

	// Identical bytes again: 200 and the same version.
	r = e.push("summer", "1", a)
	if r.status != http.StatusOK {
		t.Fatalf("re-PUT of identical bytes = %d %s; want 200", r.status, r.body)
	}
	var again registry.ModelVersion
	r.json(t, &again)
	if again.SHA256 != mv.SHA256 || !again.CreatedAt.Equal(mv.CreatedAt) {
		t.Errorf("re-PUT returned %+v; want %+v", again, mv)
	}
	// Other bytes under the same version: 409.
	e.push("summer", "1", b).wantError(t, http.StatusConflict, shoalerr.Conflict, "new version")
	if r := e.push("summer", "2", b); r.status != http.StatusCreated {
		t.Fatalf("PUT summer 2 = %d %s", r.status, r.body)
	}

	r = e.get("/api/v1/models/summer/versions/1")
	var got registry.ModelVersion
	r.json(t, &got)
	if r.status != http.StatusOK || got.SHA256 != mv.SHA256 {
		t.Errorf("GET version = %d %+v", r.status, got)
	}
	r = e.get("/api/v1/models/summer")
	var model struct {
		Name     string                  `json:"name"`
		Versions []registry.ModelVersion `json:"versions"`
	}
	r.json(t, &model)
	if r.status != http.StatusOK || model.Name != "summer" || len(model.Versions) != 2 || model.Versions[1].Version != "2" {
		t.Errorf("GET model = %d %s", r.status, r.body)
	}
	r = e.get("/api/v1/models")
	var list struct {
		Models []registry.Model `json:"models"`
	}
	r.json(t, &list)
	if len(list.Models) != 1 || list.Models[0].Latest != "2" || strings.Join(list.Models[0].Versions, ",") != "1,2" {
		t.Errorf("GET models = %s", r.body)
	}

	r = e.get("/api/v1/models/summer/versions/1/signature")
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET signature = %d %q", r.status, r.header.Get("Content-Type"))
	}
	v, _ := trust.NewVerifier(e.signer.PublicKeyPEM())
	if err := v.VerifyBlob(bytes.NewReader(a), string(r.body)); err != nil {
		t.Errorf("served signature does not verify the model: %v", err)
	}
	if err := v.VerifyBlob(bytes.NewReader(b), string(r.body)); err == nil {
		t.Error("served signature verifies another model")
	}

	r = e.get("/api/v1/models/summer/versions/2/artifact")
	if r.status != http.StatusOK || !bytes.Equal(r.body, b) {
		t.Errorf("GET artifact = %d, %d bytes; want the %d bytes of version 2", r.status, len(r.body), len(b))
	}
	if cd := r.header.Get("Content-Disposition"); !strings.Contains(cd, `filename="summer-2.onnx"`) {
		t.Errorf("Content-Disposition = %q", cd)
	}
}

func TestModelErrors(t *testing.T) {
	e := newEnv(t)
	e.push("junk", "1", []byte("this is not an ONNX model")).
		wantError(t, http.StatusBadRequest, shoalerr.Invalid, "not a loadable ONNX model", "junk")
	e.get("/api/v1/models/junk/versions/1").wantError(t, http.StatusNotFound, shoalerr.NotFound, "junk")
	e.get("/api/v1/models/junk").wantError(t, http.StatusNotFound, shoalerr.NotFound, "junk")
	e.push("bad%20name", "1", testModel(t, "example_dynamic_axes.onnx")).
		wantError(t, http.StatusBadRequest, shoalerr.Invalid, "model name", "bad name")
	e.push("ok", "1%3F", testModel(t, "example_dynamic_axes.onnx")).
		wantError(t, http.StatusBadRequest, shoalerr.Invalid, "version")
	e.get("/api/v1/models/nope/versions/1/signature").wantError(t, http.StatusNotFound, shoalerr.NotFound)
	e.get("/api/v1/models/nope/versions/1/artifact").wantError(t, http.StatusNotFound, shoalerr.NotFound)
	e.push("big", "1", bytes.Repeat([]byte{1}, testMaxUpload+1)).
		wantError(t, http.StatusRequestEntityTooLarge, shoalerr.TooLarge, "limit")
	e.get("/api/v1/nowhere").wantError(t, http.StatusNotFound, shoalerr.NotFound, "/api/v1/nowhere")
	e.do(http.MethodDelete, "/api/v1/models", nil).wantError(t, http.StatusMethodNotAllowed, shoalerr.Invalid, "DELETE")
}

// TestUploadIsStreamed sends an endless body: the registry must see it as
// it arrives and refuse it at the size limit. A handler that buffered the
// body first would read all of it.
func TestUploadIsStreamed(t *testing.T) {
	e := newEnv(t)
	const offered = 256 << 20
	body := &countingReader{r: io.LimitReader(zeros{}, offered)}
	req, err := http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/models/endless/versions/1", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // chunked: the server cannot know the size up front
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d %s; want 413", resp.StatusCode, data)
	}
	if n := body.n(); n >= offered {
		t.Errorf("the client sent all %d bytes; the server should have stopped near %d", n, testMaxUpload)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	mu    sync.Mutex
	r     io.Reader
	total int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.total += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) n() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func TestArtifactRange(t *testing.T) {
	e := newEnv(t)
	data := testModel(t, "example_multitype.onnx")
	if r := e.push("m", "1", data); r.status != http.StatusCreated {
		t.Fatalf("push: %d %s", r.status, r.body)
	}
	sha := digest(data)
	path := "/v1/artifacts/" + sha

	r := e.get(path)
	if r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("GET = %d, %d bytes", r.status, len(r.body))
	}
	if r.header.Get("ETag") != `"`+sha+`"` || r.header.Get("Accept-Ranges") != "bytes" || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("headers = %v", r.header)
	}

	r = e.get(path, "Range", "bytes=10-99")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[10:100]) {
		t.Errorf("Range 10-99 = %d, %d bytes", r.status, len(r.body))
	}
	if cr := r.header.Get("Content-Range"); cr != fmt.Sprintf("bytes 10-99/%d", len(data)) {
		t.Errorf("Content-Range = %q", cr)
	}
	// Resuming a download cut after 500 bytes.
	r = e.get(path, "Range", "bytes=500-", "If-Range", `"`+sha+`"`)
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[500:]) {
		t.Errorf("resume from 500 = %d, %d bytes; want %d", r.status, len(r.body), len(data)-500)
	}
	// A stale If-Range gets the whole file.
	r = e.get(path, "Range", "bytes=500-", "If-Range", `"other"`)
	if r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Errorf("stale If-Range = %d, %d bytes; want 200 and the whole file", r.status, len(r.body))
	}
	r = e.get(path, "Range", fmt.Sprintf("bytes=%d-", len(data)+10))
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end = %d; want 416", r.status)
	}
	r = e.get(path, "If-None-Match", `"`+sha+`"`)
	if r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("If-None-Match = %d, %d bytes; want 304", r.status, len(r.body))
	}
	r = e.do(http.MethodHead, path, nil)
	if r.status != http.StatusOK || r.header.Get("Content-Length") != fmt.Sprint(len(data)) || len(r.body) != 0 {
		t.Errorf("HEAD = %d, length %q", r.status, r.header.Get("Content-Length"))
	}

	e.get("/v1/artifacts/"+strings.Repeat("0", 64)).wantError(t, http.StatusNotFound, shoalerr.NotFound)
	e.get("/v1/artifacts/not-a-digest").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "SHA-256")
	e.get("/v1/artifacts/"+strings.ToUpper(sha)).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "lower-case")
}

func TestTokensAndEnrollment(t *testing.T) {
	e := newEnv(t)
	before := time.Now()
	r := e.postJSON("/api/v1/tokens", "")
	if r.status != http.StatusCreated {
		t.Fatalf("POST tokens = %d %s", r.status, r.body)
	}
	var tok apiv1.Token
	r.json(t, &tok)
	if tok.Token == "" || tok.ExpiresAt.Before(before.Add(24*time.Hour-time.Minute)) || tok.ExpiresAt.After(time.Now().Add(24*time.Hour)) {
		t.Errorf("default token = %+v; want it to expire in 24h", tok)
	}
	r = e.postJSON("/api/v1/tokens", `{"ttl":"1h"}`)
	var short apiv1.Token
	r.json(t, &short)
	if r.status != http.StatusCreated || short.ExpiresAt.After(time.Now().Add(time.Hour)) || short.Token == tok.Token {
		t.Errorf("1h token = %d %+v", r.status, short)
	}
	e.postJSON("/api/v1/tokens", `{"ttl":"soon"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "soon")
	e.postJSON("/api/v1/tokens", `{"ttl":"-1h"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "-1h")
	e.postJSON("/api/v1/tokens", `{"tll":"1h"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "tll")

	enroll := func(token, id string) response {
		return e.postJSON("/v1/enroll", fmt.Sprintf(`{"token":%q,"device_id":%q,"agent_version":"1.0","profile":"rpi4"}`, token, id))
	}
	r = enroll(tok.Token, "dev-1")
	if r.status != http.StatusOK {
		t.Fatalf("enroll = %d %s", r.status, r.body)
	}
	var en apiv1.Enrollment
	r.json(t, &en)
	if en.DeviceID != "dev-1" || en.MQTTUsername == "" || en.MQTTPassword == "" || en.BrokerURL != testBrokerURL ||
		en.TopicPrefix != testPrefix || en.TrustPublicKeyPEM != string(e.signer.PublicKeyPEM()) {
		t.Errorf("enrollment = %+v", en)
	}
	if !e.fleet.Authenticate(en.MQTTUsername, en.MQTTPassword) {
		t.Error("the enrolled credentials do not authenticate")
	}
	if e.fleet.Authenticate(en.MQTTUsername, en.MQTTPassword+"x") {
		t.Error("a wrong password authenticates")
	}

	enroll(tok.Token, "dev-2").wantError(t, http.StatusUnauthorized, shoalerr.Unauthorized)
	enroll("no-such-token", "dev-2").wantError(t, http.StatusUnauthorized, shoalerr.Unauthorized)
	enroll(short.Token, "dev-1").wantError(t, http.StatusConflict, shoalerr.Conflict, "dev-1")
	enroll(short.Token, "bad/id").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "bad/id")
	e.postJSON("/v1/enroll", `{"token":`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "JSON")
	e.postJSON("/v1/enroll", ``).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "JSON body")
	e.postJSON("/v1/enroll", `{"token":"a"} {"token":"b"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid)
}

func TestDevices(t *testing.T) {
	e := newEnv(t)
	r := e.get("/api/v1/devices")
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"devices":[]}` {
		t.Errorf("empty device list = %d %s", r.status, r.body)
	}
	e.enroll("dev-a")
	e.enroll("dev-b")
	r = e.get("/api/v1/devices")
	var list struct {
		Devices []map[string]any `json:"devices"`
	}
	r.json(t, &list)
	if len(list.Devices) != 2 {
		t.Fatalf("devices = %s", r.body)
	}
	for _, k := range []string{"id", "online", "last_seen", "enrolled_at", "agent_version", "profile", "labels", "group", "phase", "error", "desired_generation", "applied_generation", "models"} {
		if _, ok := list.Devices[0][k]; !ok {
			t.Errorf("Device JSON lacks %q: %s", k, r.body)
		}
	}
	r = e.get("/api/v1/devices/dev-b")
	var d fleet.Device
	r.json(t, &d)
	if r.status != http.StatusOK || d.ID != "dev-b" {
		t.Errorf("GET device = %d %s", r.status, r.body)
	}
	e.get("/api/v1/devices/dev-z").wantError(t, http.StatusNotFound, shoalerr.NotFound, "dev-z")
}

func (e *env) patchJSON(path, body string) response {
	e.t.Helper()
	return e.do(http.MethodPatch, path, strings.NewReader(body), "Content-Type", "application/json")
}

// TestDeviceLabels: labels and group given at enrollment, changed with
// PATCH (a JSON merge patch), and used to filter the device list.
func TestDeviceLabels(t *testing.T) {
	e := newEnv(t)
	enroll := func(id, extra string) response {
		t.Helper()
		r := e.postJSON("/api/v1/tokens", "")
		var tok apiv1.Token
		r.json(t, &tok)
		return e.postJSON("/v1/enroll", fmt.Sprintf(`{"token":%q,"device_id":%q%s}`, tok.Token, id, extra))
	}
	device := func(r response) fleet.Device {
		t.Helper()
		if r.status != http.StatusOK {
			t.Fatalf("status = %d %s; want 200", r.status, r.body)
		}
		var d fleet.Device
		r.json(t, &d)
		return d
	}

	// Enrollment: labels and group are optional, and checked.
	enroll("dev-x", `,"labels":{"env":"pr od"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, `value "pr od" of label "env"`)
	enroll("dev-x", `,"labels":{"env":1}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "labels")
	enroll("dev-x", `,"group":"a/b"`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, `group "a/b"`)
	for id, extra := range map[string]string{
		"dev-a": `,"labels":{"env":"prod","site":"north"},"group":"canary"`,
		"dev-b": `,"labels":{"env":"prod","site":"south"}`,
		"dev-c": `,"labels":{"env":"dev"},"group":"canary"`,
		"dev-d": ``,
	} {
		if r := enroll(id, extra); r.status != http.StatusOK {
			t.Fatalf("enroll %s: %d %s", id, r.status, r.body)
		}
	}
	d := device(e.get("/api/v1/devices/dev-a"))
	if fmt.Sprint(d.Labels) != "map[env:prod site:north]" || d.Group != "canary" {
		t.Errorf("dev-a enrolled with labels %v, group %q", d.Labels, d.Group)
	}
	if r := e.get("/api/v1/devices/dev-d"); !strings.Contains(string(r.body), `"labels":{},"group":""`) {
		t.Errorf("a device without labels = %s; want labels {} and group \"\"", r.body)
	}

	// Filters: every label of the selector, and the group, must match.
	ids := func(query string) string {
		t.Helper()
		r := e.get("/api/v1/devices" + query)
		var list struct {
			Devices []fleet.Device `json:"devices"`
		}
		r.json(t, &list)
		if r.status != http.StatusOK || list.Devices == nil {
			t.Fatalf("GET devices%s = %d %s", query, r.status, r.body)
		}
		var out []string
		for _, d := range list.Devices {
			out = append(out, d.ID)
		}
		return strings.Join(out, ",")
	}
	for query, want := range map[string]string{
		"":                                    "dev-a,dev-b,dev-c,dev-d",
		"?selector=env=prod":                  "dev-a,dev-b",
		"?selector=env%3Dprod%2Csite%3Dsouth": "dev-b",
		"?selector=env=prod,site=south":       "dev-b",
		"?group=canary":                       "dev-a,dev-c",
		"?selector=env=prod&group=canary":     "dev-a",
		"?selector=env=staging":               "",
		"?group=":                             "dev-a,dev-b,dev-c,dev-d",
	} {
		if got := ids(query); got != want {
			t.Errorf("GET devices%s = %s; want %s", query, got, want)
		}
	}
	e.get("/api/v1/devices?selector=env").wantError(t, http.StatusBadRequest, shoalerr.Invalid, `"env" is not key=value`)
	e.get("/api/v1/devices?selector=env=a/b").wantError(t, http.StatusBadRequest, shoalerr.Invalid, `value "a/b" of label "env"`)
	e.get("/api/v1/devices?group=a/b").wantError(t, http.StatusBadRequest, shoalerr.Invalid, `group "a/b"`)

	// PATCH: set, remove (null) and keep; the group kept when absent.
	d = device(e.patchJSON("/api/v1/devices/dev-a", `{"labels":{"env":"staging","site":null,"rack":"r7","gone":null}}`))
	if d.ID != "dev-a" || fmt.Sprint(d.Labels) != "map[env:staging rack:r7]" || d.Group != "canary" {
		t.Errorf("after PATCH labels: %v, group %q", d.Labels, d.Group)
	}
	d = device(e.patchJSON("/api/v1/devices/dev-a", `{"group":"wave-2"}`))
	if fmt.Sprint(d.Labels) != "map[env:staging rack:r7]" || d.Group != "wave-2" {
		t.Errorf("after PATCH group: %v, group %q", d.Labels, d.Group)
	}
	if got := ids("?group=wave-2&selector=rack=r7"); got != "dev-a" {
		t.Errorf("the list does not follow the PATCH: %s", got)
	}
	if d = device(e.patchJSON("/api/v1/devices/dev-a", `{"group":null}`)); d.Group != "" {
		t.Errorf(`group after {"group":null} = %q; want none`, d.Group)
	}
	device(e.patchJSON("/api/v1/devices/dev-a", `{"group":"g"}`))
	if d = device(e.patchJSON("/api/v1/devices/dev-a", `{"group":""}`)); d.Group != "" {
		t.Errorf(`group after {"group":""} = %q; want none`, d.Group)
	}
	if d = device(e.patchJSON("/api/v1/devices/dev-a", `{}`)); fmt.Sprint(d.Labels) != "map[env:staging rack:r7]" {
		t.Errorf("an empty patch changed the labels to %v", d.Labels)
	}

	// Refusals name what was wrong and change nothing.
	for _, tc := range []struct {
		path, body string
		status     int
		code       shoalerr.Code
		text       string
	}{
		{"/api/v1/devices/dev-a", `{"labels":{"env":"a b"}}`, http.StatusBadRequest, shoalerr.Invalid, `value "a b" of label "env"`},
		{"/api/v1/devices/dev-a", `{"labels":{"-env":"a"}}`, http.StatusBadRequest, shoalerr.Invalid, `label key "-env"`},
		{"/api/v1/devices/dev-a", `{"group":"a b"}`, http.StatusBadRequest, shoalerr.Invalid, `group "a b"`},
		{"/api/v1/devices/dev-a", `{"group":7}`, http.StatusBadRequest, shoalerr.Invalid, `"group" is 7`},
		{"/api/v1/devices/dev-a", `{"labels":{"env":7}}`, http.StatusBadRequest, shoalerr.Invalid, "labels"},
		{"/api/v1/devices/dev-a", `{"label":{"env":"x"}}`, http.StatusBadRequest, shoalerr.Invalid, "label"},
		{"/api/v1/devices/dev-a", ``, http.StatusBadRequest, shoalerr.Invalid, "JSON body"},
		{"/api/v1/devices/dev-z", `{"labels":{"env":"x"}}`, http.StatusNotFound, shoalerr.NotFound, "dev-z"},
	} {
		e.patchJSON(tc.path, tc.body).wantError(t, tc.status, tc.code, tc.text)
	}
	if d = device(e.get("/api/v1/devices/dev-a")); fmt.Sprint(d.Labels) != "map[env:staging rack:r7]" || d.Group != "" {
		t.Errorf("after refused patches: %v, group %q", d.Labels, d.Group)
	}
}

// desiredWatch collects the DesiredState messages published for a device.
type desiredWatch struct {
	mu   sync.Mutex
	msgs []*shoalv1.DesiredState
	got  chan struct{}
}

func (e *env) watchDesired(id string) *desiredWatch {
	e.t.Helper()
	w := &desiredWatch{got: make(chan struct{}, 64)}
	err := e.bus.Subscribe(e.scheme.Device(id, topics.Desired), func(_ string, payload []byte) {
		var ds shoalv1.DesiredState
		if err := proto.Unmarshal(payload, &ds); err != nil {
			e.t.Errorf("desired state does not decode: %v", err)
			return
		}
		w.mu.Lock()
		w.msgs = append(w.msgs, &ds)
		w.mu.Unlock()
		w.got <- struct{}{}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// next waits for the next message (the broker delivers it on its own
// goroutine).
func (w *desiredWatch) next(t *testing.T) *shoalv1.DesiredState {
	t.Helper()
	select {
	case <-w.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no desired state published within 10s")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgs[len(w.msgs)-1]
}

func (w *desiredWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.msgs)
}

func openManifest(t *testing.T, pub []byte, env []byte) *shoalv1.DeploymentManifest {
	t.Helper()
	v, err := trust.NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := v.OpenEnvelope(env, trust.ManifestPayloadType)
	if err != nil {
		t.Fatalf("deployment envelope does not verify: %v", err)
	}
	var m shoalv1.DeploymentManifest
	if err := protojson.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func TestDeploy(t *testing.T) {
	e := newEnv(t)
	a := testModel(t, "example_dynamic_axes.onnx")
	if r := e.push("summer", "1", a); r.status != http.StatusCreated {
		t.Fatalf("push: %d %s", r.status, r.body)
	}
	e.enroll("dev-a")
	e.enroll("dev-b")
	wa, wb := e.watchDesired("dev-a"), e.watchDesired("dev-b")

	r := e.postJSON("/api/v1/deployments", `{"model":"summer","version":"1","devices":["dev-a","dev-a"]}`)
	if r.status != http.StatusOK {
		t.Fatalf("deploy = %d %s", r.status, r.body)
	}
	var dr apiv1.Deployment
	r.json(t, &dr)
	if dr.Model != "summer" || dr.Version != "1" || dr.ReleaseSequence != 1 || len(dr.Devices) != 1 || dr.Devices[0].ID != "dev-a" || dr.Devices[0].Generation == 0 {
		t.Fatalf("deploy response = %s", r.body)
	}
	if d := time.Until(dr.ExpiresAt); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("expires_at = %v; want about 30 days from now", dr.ExpiresAt)
	}
	ds := wa.next(t)
	if ds.GetGeneration() != dr.Devices[0].Generation || len(ds.GetDeployments()) != 1 {
		t.Fatalf("dev-a desired state = %v; want generation %d with one deployment", ds, dr.Devices[0].Generation)
	}
	m := openManifest(t, e.signer.PublicKeyPEM(), ds.GetDeployments()[0])
	if m.GetModelName() != "summer" || m.GetModelVersion() != "1" || m.GetReleaseSequence() != 1 || m.GetArtifact().GetSha256() != digest(a) {
		t.Errorf("manifest = %v", m)
	}
	if wb.count() != 0 {
		t.Error("dev-b got a desired state for a deployment to dev-a only")
	}

	// A typo in a device id: 404, and no release sequence is used up.
	e.postJSON("/api/v1/deployments", `{"model":"summer","version":"1","devices":["dev-a","dev-q"]}`).
		wantError(t, http.StatusNotFound, shoalerr.NotFound, "dev-q")

	// No devices: every enrolled one, as an explicit rollback.
	r = e.postJSON("/api/v1/deployments", `{"model":"summer","version":"1","rollback":true,"ttl":"2h"}`)
	r.json(t, &dr)
	if r.status != http.StatusOK || dr.ReleaseSequence != 2 || len(dr.Devices) != 2 {
		t.Fatalf("deploy to all = %d %s", r.status, r.body)
	}
	m = openManifest(t, e.signer.PublicKeyPEM(), wb.next(t).GetDeployments()[0])
	if !m.GetRollback() || m.GetReleaseSequence() != 2 || m.GetExpiresAtUnixMs()-m.GetIssuedAtUnixMs() != (2*time.Hour).Milliseconds() {
		t.Errorf("manifest of the rollback = %v", m)
	}

	e.postJSON("/api/v1/deployments", `{"model":"winter","version":"1"}`).wantError(t, http.StatusNotFound, shoalerr.NotFound, "winter")
	e.postJSON("/api/v1/deployments", `{"model":"summer","version":"7"}`).wantError(t, http.StatusNotFound, shoalerr.NotFound, `"7"`)
	e.postJSON("/api/v1/deployments", `{"model":"summer"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "version")
	e.postJSON("/api/v1/deployments", `{"model":"summer","version":"1","ttl":"forever"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "forever")
	e.postJSON("/api/v1/deployments", `{"model":"summer","version":1}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "JSON")
	e.postJSON("/api/v1/deployments", `not json`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "JSON")
	e.postJSON("/api/v1/deployments", `{"model":"summer","version":"1","device":["dev-a"]}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "device")
	e.postJSON("/api/v1/deployments", `{"model":"summer","version":"1","devices":[`+strings.Repeat(`"dev-a",`, maxJSONBody/8)+`"dev-a"]}`).
		wantError(t, http.StatusRequestEntityTooLarge, shoalerr.TooLarge)
}

func TestTelemetry(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-a")
	r := e.get("/api/v1/telemetry")
	var sum struct {
		Devices []map[string]any `json:"devices"`
		Total   map[string]any   `json:"total"`
	}
	r.json(t, &sum)
	if r.status != http.StatusOK || sum.Total == nil {
		t.Fatalf("GET telemetry = %d %s", r.status, r.body)
	}
	for _, k := range []string{"records", "predictions", "errors", "dropped_records"} {
		if _, ok := sum.Total[k]; !ok {
			t.Errorf("total lacks %q: %s", k, r.body)
		}
	}

	batch := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "dev-a", FirstSeq: 1, LastSeq: 2, Records: []*shoalv1.TelemetryRecord{
		{Seq: 1, ModelName: "summer", ModelVersion: "1", Predictions: 10, Errors: 1},
		{Seq: 2, ModelName: "summer", ModelVersion: "1", Predictions: 5},
	}}
	payload, err := proto.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	e.mon.HandleTelemetry(e.scheme.Device("dev-a", topics.Telemetry), payload)

	r = e.get("/api/v1/telemetry?device=dev-a")
	var one struct {
		Devices []struct {
			DeviceID    string `json:"device_id"`
			Records     uint64 `json:"records"`
			Predictions uint64 `json:"predictions"`
			Errors      uint64 `json:"errors"`
			HighestSeq  uint64 `json:"highest_seq"`
		} `json:"devices"`
		Total struct {
			Predictions uint64 `json:"predictions"`
		} `json:"total"`
	}
	r.json(t, &one)
	if r.status != http.StatusOK || len(one.Devices) != 1 || one.Devices[0].DeviceID != "dev-a" || one.Devices[0].Records != 2 ||
		one.Devices[0].Predictions != 15 || one.Devices[0].Errors != 1 || one.Devices[0].HighestSeq != 2 || one.Total.Predictions != 15 {
		t.Errorf("telemetry of dev-a = %d %s", r.status, r.body)
	}
}

// failingRegistry makes List fail: with a plain error, or by panicking.
type failingRegistry struct {
	Registry
	panics bool
}

func (f failingRegistry) List(context.Context) ([]registry.Model, error) {
	if f.panics {
		panic("registry exploded")
	}
	return nil, errors.New("read /var/lib/secret/store: input/output error")
}

func TestInternalErrors(t *testing.T) {
	e := newEnv(t, func(r Registry) Registry { return failingRegistry{Registry: r} })
	e.get("/api/v1/models").wantError(t, http.StatusInternalServerError, shoalerr.Internal, "log")
	if r := e.get("/api/v1/models"); strings.Contains(string(r.body), "secret") {
		t.Errorf("an internal error leaks its details to the client: %s", r.body)
	}
	if !strings.Contains(e.logs.String(), "/var/lib/secret/store") {
		t.Error("the internal error is not in the log")
	}

	p := newEnv(t, func(r Registry) Registry { return failingRegistry{Registry: r, panics: true} })
	p.get("/api/v1/models").wantError(t, http.StatusInternalServerError, shoalerr.Internal)
	if logs := p.logs.String(); !strings.Contains(logs, "registry exploded") || !strings.Contains(logs, "panic") {
		t.Errorf("the panic is not logged: %s", logs)
	}
	// The server survives.
	if r := p.get("/api/v1/trust/public-key"); r.status != http.StatusOK {
		t.Errorf("after a panic GET public key = %d", r.status)
	}
}

func TestRequestsLoggedAtDebug(t *testing.T) {
	e := newEnv(t)
	e.get("/api/v1/devices/nobody")
	logs := e.logs.String()
	if !strings.Contains(logs, "level=DEBUG msg=\"http request\" method=GET path=/api/v1/devices/nobody status=404") {
		t.Errorf("request log line missing; logs:\n%s", logs)
	}
}

func TestStatusOf(t *testing.T) {
	for code, want := range map[shoalerr.Code]int{
		shoalerr.Invalid: 400, shoalerr.NotFound: 404, shoalerr.Conflict: 409, shoalerr.Unauthorized: 401,
		shoalerr.Forbidden: 403, shoalerr.TooLarge: 413, shoalerr.Unavailable: 503, shoalerr.Internal: 500,
		shoalerr.Code("made-up"): 500,
	} {
		if got := statusOf(code); got != want {
			t.Errorf("statusOf(%s) = %d; want %d", code, got, want)
		}
	}
}

// mustNew is New for tests.
func mustNew(t testing.TB, d Deps, log *slog.Logger) http.Handler {
	t.Helper()
	h, err := New(d, log)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestClientAddressIgnoresForwardingHeaders: a client cannot name its own
// address with X-Forwarded-For unless it is a trusted proxy; the request
// log shows the address it connected from.
func TestClientAddressIgnoresForwardingHeaders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		want    string
	}{
		{"no trusted proxy", nil, "remote=127.0.0.1"},
		{"loopback trusted", []string{"127.0.0.1"}, "remote=203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &lockedBuffer{}
			srv := httptest.NewServer(mustNew(t, Deps{PublicKeyPEM: []byte("k"), TrustedProxies: tc.trusted},
				slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+"/api/v1/trust/public-key", nil)
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			srv.Close() // the request is logged once answered
			if got := logs.String(); !strings.Contains(got, tc.want) {
				t.Errorf("request log %q; want %s", got, tc.want)
			}
		})
	}
	if _, err := New(Deps{TrustedProxies: []string{"not-an-address"}}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("New took a trusted proxy that is not an address")
	}
}
