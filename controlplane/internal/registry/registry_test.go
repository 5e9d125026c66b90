package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/trust"
)

// testModel returns a model from the onnxruntime_go module's test data
// (models exported by PyTorch, scikit-learn and onnx.helper).
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

// env is a registry on a real Badger store in a temp dir.
type env struct {
	t       *testing.T
	dir     string
	st      store.Store
	signer  *trust.Signer
	clock   *shoaltest.Clock
	reg     *Registry
	log     *slog.Logger
	options []Option
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	onnxrt.MustInitForTest(t)
	e := &env{t: t, dir: t.TempDir(), clock: shoaltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), log: slog.New(slog.DiscardHandler), options: opts}
	e.open()
	t.Cleanup(func() { e.st.Close() })
	return e
}

// open (re)opens the store, the key and the registry from e.dir.
func (e *env) open() {
	e.t.Helper()
	st, err := badgerstore.Open(filepath.Join(e.dir, "store"), e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	e.signer, err = trust.LoadOrCreateSigner(filepath.Join(e.dir, "signing-key.pem"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg, err = New(st, e.blobDir(), e.signer, e.log, e.clock.Now, e.options...)
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) blobDir() string { return filepath.Join(e.dir, "artifacts") }

func (e *env) push(name, version string, data []byte) (ModelVersion, bool) {
	e.t.Helper()
	mv, created, err := e.reg.Push(context.Background(), name, version, bytes.NewReader(data))
	if err != nil {
		e.t.Fatalf("Push(%s, %s): %v", name, version, err)
	}
	return mv, created
}

// files lists every file under the blob directory, relative to it.
func (e *env) files() []string {
	e.t.Helper()
	var out []string
	filepath.WalkDir(e.blobDir(), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			e.t.Fatal(err)
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(e.blobDir(), p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// keys lists every store key under "registry/".
func (e *env) keys() []string {
	e.t.Helper()
	var out []string
	e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte("registry/"), func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out
}

func wantCode(t *testing.T, err error, code shoalerr.Code, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want %s", code)
	}
	if got := shoalerr.CodeOf(err); got != code {
		t.Fatalf("err = %v (code %s); want code %s", err, got, code)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err = %q; want it to mention %q", err, s)
		}
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPushStoresInspectsAndSigns(t *testing.T) {
	e := newEnv(t)
	data := testModel(t, "example_dynamic_axes.onnx")
	mv, created := e.push("summer", "1", data)
	if !created {
		t.Error("created = false for a first push")
	}
	sha := digest(data)
	if mv.Name != "summer" || mv.Version != "1" || mv.SHA256 != sha || mv.Size != int64(len(data)) ||
		mv.ArtifactURL != "/v1/artifacts/"+sha || mv.KeyID != e.signer.KeyID() || !mv.CreatedAt.Equal(e.clock.Now()) {
		t.Errorf("ModelVersion = %+v", mv)
	}
	if len(mv.Inputs) != 1 || mv.Inputs[0].Name != "input_vectors" || mv.Inputs[0].DataType != onnxrt.FP32 ||
		len(mv.Inputs[0].Shape) != 2 || mv.Inputs[0].Shape[0] != -1 || mv.Inputs[0].Shape[1] != 10 {
		t.Errorf("Inputs = %+v", mv.Inputs)
	}
	if len(mv.Outputs) != 1 || mv.Outputs[0].Name != "output_scalars" {
		t.Errorf("Outputs = %+v", mv.Outputs)
	}

	// The blob is stored under its digest with the uploaded bytes.
	f, err := e.reg.OpenArtifact(sha)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Error("stored artifact differs from the upload")
	}
	if files := e.files(); len(files) != 1 || files[0] != filepath.Join("sha256", sha) {
		t.Errorf("blob dir holds %v; want only sha256/%s", files, sha)
	}

	// The signature is a cosign blob signature by the registry's key.
	v, err := trust.NewVerifier(e.signer.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyBlob(bytes.NewReader(data), mv.Signature); err != nil {
		t.Errorf("artifact signature does not verify: %v", err)
	}
	tampered := bytes.Clone(data)
	tampered[len(tampered)/2] ^= 1
	if err := v.VerifyBlob(bytes.NewReader(tampered), mv.Signature); !errors.Is(err, trust.ErrBadSignature) {
		t.Errorf("signature verifies tampered bytes: err = %v", err)
	}
	sig, err := e.reg.Signature(context.Background(), "summer", "1")
	if err != nil || sig != mv.Signature {
		t.Errorf("Signature = %q, %v; want %q", sig, err, mv.Signature)
	}
	if got, err := e.reg.Get(context.Background(), "summer", "1"); err != nil || got.SHA256 != sha || !got.CreatedAt.Equal(mv.CreatedAt) {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

// TestPushTestModels pushes models of several shapes and types and checks
// that the recorded self-test passes on the stored artifact, as an agent
// would run it.
func TestPushTestModels(t *testing.T) {
	e := newEnv(t)
	for _, file := range []string{
		"example_dynamic_axes.onnx",
		"example_multitype.onnx",
		"example_strings.onnx",
		"example ż 大 김.onnx",
		"sklearn_randomforest.onnx",
	} {
		t.Run(file, func(t *testing.T) {
			if file == "example_strings.onnx" {
				onnxrt.RequireLocaleForTest(t, "en_US.UTF-8")
			}
			data := testModel(t, file)
			if _, _, err := e.reg.Push(context.Background(), "m", digest(data)[:12], bytes.NewReader(data)); err != nil {
				t.Fatalf("Push: %v", err)
			}
			_, m, err := e.reg.Manifest(context.Background(), "m", digest(data)[:12], ManifestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.GetSelfTest().GetInputs()) == 0 || len(m.GetSelfTest().GetExpectedOutputs()) == 0 {
				t.Fatalf("self-test = %v; want inputs and expected outputs", m.GetSelfTest())
			}
			s, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := onnxrt.RunSelfTest(s, m.GetSelfTest()); err != nil {
				t.Errorf("self-test fails on the model it was made from: %v", err)
			}
		})
	}
}

func lowercaser(t *testing.T, locale string) []byte {
	t.Helper()
	data, err := onnxbuild.Lowercaser(locale)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPushRefusesWhatIsNotAModel(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		body io.Reader
		want []string
	}{
		{"junk", strings.NewReader("this is not an ONNX model, just text"), []string{"not a loadable ONNX model", "junk"}},
		{"truncated", bytes.NewReader(testModel(t, "example_multitype.onnx")[:500]), []string{"not a loadable ONNX model"}},
		{"empty", strings.NewReader(""), []string{"empty"}},
		{"read-error", io.MultiReader(strings.NewReader("abc"), errReader{}), []string{"reading the upload", "connection reset"}},
		// Loads, but has FP16 inputs Shoal cannot feed: no self-test can be made.
		{"float16", bytes.NewReader(testModel(t, "example_float16.onnx")), []string{"self-test", "FP16"}},
		{"bfloat16", bytes.NewReader(testModel(t, "example_several_inputs_and_outputs.onnx")), []string{"self-test", "BF16"}},
		// A StringNormalizer under a locale no machine has: Shoal's own
		// message, naming the locale and how to get or avoid it.
		{"nolocale", bytes.NewReader(lowercaser(t, "xx_NOWHERE.UTF-8")), []string{"nolocale version 1", `locale "xx_NOWHERE.UTF-8"`, "locale-gen", "locale -a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.reg.Push(context.Background(), tc.name, "1", tc.body)
			wantCode(t, err, shoalerr.Invalid, tc.want...)
			if err != nil && strings.Contains(err.Error(), "onnxruntime_src") {
				t.Errorf("the error carries ONNX Runtime's internal text: %v", err)
			}
			if _, err := e.reg.Get(context.Background(), tc.name, "1"); !shoalerr.Is(err, shoalerr.NotFound) {
				t.Errorf("Get after refused push: err = %v; want not found", err)
			}
		})
	}
	if files := e.files(); len(files) != 0 {
		t.Errorf("refused uploads left files behind: %v", files)
	}
	if keys := e.keys(); len(keys) != 0 {
		t.Errorf("refused uploads left store keys: %v", keys)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func TestPushTooLarge(t *testing.T) {
	data := testModel(t, "example_multitype.onnx")
	e := newEnv(t, WithMaxBytes(int64(len(data)-1)))
	_, _, err := e.reg.Push(context.Background(), "big", "1", bytes.NewReader(data))
	wantCode(t, err, shoalerr.TooLarge, "big", "limit")
	if files := e.files(); len(files) != 0 {
		t.Errorf("refused upload left files behind: %v", files)
	}
	// At the limit exactly it is accepted.
	small := testModel(t, "example_dynamic_axes.onnx")
	if len(small) > len(data)-1 {
		t.Fatal("test models changed size")
	}
	e.push("small", "1", small)
}

func TestPushIdempotentAndConflict(t *testing.T) {
	e := newEnv(t)
	a := testModel(t, "example_dynamic_axes.onnx")
	b := testModel(t, "example_multitype.onnx")
	first, _ := e.push("summer", "1", a)

	e.clock.Advance(time.Hour)
	again, created := e.push("summer", "1", a)
	if created {
		t.Error("re-pushing identical bytes reported created = true")
	}
	if !again.CreatedAt.Equal(first.CreatedAt) || again.SHA256 != first.SHA256 || again.Signature != first.Signature {
		t.Errorf("re-push returned %+v; want the stored %+v", again, first)
	}

	_, _, err := e.reg.Push(context.Background(), "summer", "1", bytes.NewReader(b))
	wantCode(t, err, shoalerr.Conflict, "summer", "new version", digest(a), digest(b))

	e.push("summer", "2", b)
	// The same bytes under another model are stored once.
	e.push("winter", "1", a)
	if files := e.files(); len(files) != 2 {
		t.Errorf("blob dir holds %v; want the two distinct artifacts", files)
	}
}

// TestPushRace pushes different bytes as the same version at once: exactly
// one wins and the other gets a Conflict.
func TestPushRace(t *testing.T) {
	e := newEnv(t)
	models := [][]byte{testModel(t, "example_dynamic_axes.onnx"), testModel(t, "example_multitype.onnx")}
	errs := make([]error, len(models))
	var wg sync.WaitGroup
	for i, m := range models {
		wg.Go(func() {
			_, _, errs[i] = e.reg.Push(context.Background(), "race", "1", bytes.NewReader(m))
		})
	}
	wg.Wait()
	ok, conflicts := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case shoalerr.Is(err, shoalerr.Conflict):
			conflicts++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || conflicts != 1 {
		t.Errorf("%d pushes succeeded and %d conflicted; want 1 and 1", ok, conflicts)
	}
}

func TestNamesValidated(t *testing.T) {
	e := newEnv(t)
	data := testModel(t, "example_dynamic_axes.onnx")
	for _, tc := range []struct{ name, version, field string }{
		{"", "1", "model name"},
		{"a/b", "1", "model name"},
		{"a b", "1", "model name"},
		{"..", "1", "model name"},
		{strings.Repeat("x", 129), "1", "model name"},
		{"ok", "", "version"},
		{"ok", "1?", "version"},
		{"ok", "é", "version"},
	} {
		_, _, err := e.reg.Push(context.Background(), tc.name, tc.version, bytes.NewReader(data))
		wantCode(t, err, shoalerr.Invalid, tc.field)
		_, err = e.reg.Get(context.Background(), tc.name, tc.version)
		wantCode(t, err, shoalerr.Invalid, tc.field)
	}
	e.push(strings.Repeat("x", 128), "v1.0_rc-2", data)
	if files := e.files(); len(files) != 1 {
		t.Errorf("blob dir holds %v; want one artifact", files)
	}
}

func TestListAndVersions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if models, err := e.reg.List(ctx); err != nil || len(models) != 0 {
		t.Fatalf("List on an empty registry = %v, %v", models, err)
	}
	a := testModel(t, "example_dynamic_axes.onnx")
	b := testModel(t, "example_multitype.onnx")
	// Pushed in an order that sorts differently as strings.
	e.push("summer", "2", a)
	e.clock.Advance(time.Minute)
	e.push("summer", "10", b)
	e.clock.Advance(time.Minute)
	e.push("autumn", "1", a)

	vs, err := e.reg.Versions(ctx, "summer")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Version != "2" || vs[1].Version != "10" {
		t.Errorf("Versions = %+v; want 2 then 10", vs)
	}
	models, err := e.reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 2 || models[0].Name != "autumn" || models[1].Name != "summer" {
		t.Fatalf("List = %+v", models)
	}
	s := models[1]
	if strings.Join(s.Versions, ",") != "2,10" || s.Latest != "10" || !s.UpdatedAt.Equal(vs[1].CreatedAt) {
		t.Errorf("summer = %+v", s)
	}
	_, err = e.reg.Versions(ctx, "spring")
	wantCode(t, err, shoalerr.NotFound, "spring")
	_, err = e.reg.Get(ctx, "summer", "3")
	wantCode(t, err, shoalerr.NotFound, "summer", `"3"`)
}

func TestOpenArtifactValidates(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []string{"", "abc", strings.Repeat("A", 64), strings.Repeat("g", 64), "../" + strings.Repeat("a", 61)} {
		_, err := e.reg.OpenArtifact(bad)
		wantCode(t, err, shoalerr.Invalid, "SHA-256")
	}
	_, err := e.reg.OpenArtifact(strings.Repeat("a", 64))
	wantCode(t, err, shoalerr.NotFound)
}

func TestInterruptedUploadsCleared(t *testing.T) {
	e := newEnv(t)
	left := filepath.Join(e.blobDir(), "tmp", "upload-123")
	if err := os.WriteFile(left, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover upload still there after restart: %v", err)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data := testModel(t, "example_dynamic_axes.onnx")
	mv, _ := e.push("summer", "1", data)
	if _, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{}); err != nil || m.GetReleaseSequence() != 1 {
		t.Fatalf("Manifest = %v, %v", m, err)
	}

	e.reopen()
	got, err := e.reg.Get(ctx, "summer", "1")
	if err != nil {
		t.Fatal(err)
	}
	if got.SHA256 != mv.SHA256 || got.Signature != mv.Signature || !got.CreatedAt.Equal(mv.CreatedAt) || len(got.Inputs) != 1 {
		t.Errorf("after restart Get = %+v; want %+v", got, mv)
	}
	f, err := e.reg.OpenArtifact(mv.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, created := e.push("summer", "1", data); created {
		t.Error("re-push after restart created a new version")
	}
	_, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetReleaseSequence() != 2 {
		t.Errorf("release sequence after restart = %d; want 2", m.GetReleaseSequence())
	}
	if models, err := e.reg.List(ctx); err != nil || len(models) != 1 || models[0].Latest != "1" {
		t.Errorf("List after restart = %+v, %v", models, err)
	}
}
