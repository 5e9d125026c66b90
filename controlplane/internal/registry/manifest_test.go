package registry

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func TestManifestIsSignedAndComplete(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data := testModel(t, "example_dynamic_axes.onnx")
	mv, _ := e.push("summer", "1", data)
	e.clock.Advance(time.Hour)

	env, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{Profile: "rpi4"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := trust.NewVerifier(e.signer.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	payload, err := v.OpenEnvelope(env, trust.ManifestPayloadType)
	if err != nil {
		t.Fatalf("manifest envelope does not verify: %v", err)
	}
	var got shoalv1.DeploymentManifest
	if err := protojson.Unmarshal(payload, &got); err != nil {
		t.Fatalf("payload is not a protobuf-JSON DeploymentManifest: %v", err)
	}
	if !proto.Equal(&got, m) {
		t.Errorf("signed payload differs from the returned manifest:\n%v\n%v", &got, m)
	}

	issued := e.clock.Now()
	a := got.GetArtifact()
	switch {
	case got.GetSchemaVersion() != 1, got.GetModelName() != "summer", got.GetModelVersion() != "1", got.GetProfile() != "rpi4":
		t.Errorf("header fields = %v", &got)
	case a.GetSha256() != mv.SHA256, a.GetSize() != mv.Size, a.GetUrl() != "/v1/artifacts/"+mv.SHA256,
		a.GetSignature() != mv.Signature, a.GetMediaType() != "application/vnd.onnx":
		t.Errorf("artifact = %v", a)
	case got.GetReleaseSequence() != 1, got.GetRollback():
		t.Errorf("release = %d rollback = %v", got.GetReleaseSequence(), got.GetRollback())
	case got.GetIssuedAtUnixMs() != issued.UnixMilli(), got.GetExpiresAtUnixMs() != issued.Add(30*24*time.Hour).UnixMilli():
		t.Errorf("issued/expires = %d/%d; want %d/%d", got.GetIssuedAtUnixMs(), got.GetExpiresAtUnixMs(), issued.UnixMilli(), issued.Add(30*24*time.Hour).UnixMilli())
	case len(got.GetInputs()) != 1 || got.GetInputs()[0].GetName() != "input_vectors" || got.GetInputs()[0].GetDatatype() != "FP32",
		len(got.GetOutputs()) != 1 || got.GetOutputs()[0].GetName() != "output_scalars":
		t.Errorf("I/O = %v / %v", got.GetInputs(), got.GetOutputs())
	}

	// What an agent does: fetch the artifact, check digest and signature,
	// then run the self-test the manifest carries.
	f, err := e.reg.OpenArtifact(a.GetSha256())
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := io.ReadAll(f)
	f.Close()
	if digest(blob) != a.GetSha256() {
		t.Fatal("artifact digest differs from the manifest")
	}
	if err := v.VerifyBlob(bytes.NewReader(blob), a.GetSignature()); err != nil {
		t.Fatalf("artifact signature in the manifest does not verify: %v", err)
	}
	s, err := onnxrt.Open(blob, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := onnxrt.RunSelfTest(s, got.GetSelfTest()); err != nil {
		t.Fatalf("manifest self-test fails: %v", err)
	}
	// A self-test that expects other outputs must fail, or it checks nothing.
	bad := proto.Clone(got.GetSelfTest()).(*shoalv1.SelfTest)
	bad.ExpectedOutputs[0].RawData[3] ^= 0x40 // the first value's exponent
	if err := onnxrt.RunSelfTest(s, bad); err == nil {
		t.Error("a corrupted self-test passes; the self-test checks nothing")
	}

	// Another key does not verify the envelope.
	other, err := trust.LoadOrCreateSigner(t.TempDir() + "/other.pem")
	if err != nil {
		t.Fatal(err)
	}
	ov, _ := trust.NewVerifier(other.PublicKeyPEM())
	if _, err := ov.OpenEnvelope(env, trust.ManifestPayloadType); err == nil {
		t.Error("manifest verifies with an unrelated key")
	}
}

func TestManifestReleaseSequence(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	e.push("summer", "2", testModel(t, "example_multitype.onnx"))
	e.push("winter", "1", testModel(t, "example_dynamic_axes.onnx"))

	seq := func(name, version string, opts ManifestOptions) *shoalv1.DeploymentManifest {
		t.Helper()
		_, m, err := e.reg.Manifest(ctx, name, version, opts)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if got := seq("summer", "1", ManifestOptions{}).GetReleaseSequence(); got != 1 {
		t.Errorf("first summer release = %d; want 1", got)
	}
	if got := seq("summer", "2", ManifestOptions{}).GetReleaseSequence(); got != 2 {
		t.Errorf("second summer release = %d; want 2", got)
	}
	// Per model: winter has its own sequence.
	if got := seq("winter", "1", ManifestOptions{}).GetReleaseSequence(); got != 1 {
		t.Errorf("first winter release = %d; want 1", got)
	}
	// Going back is a new, higher release marked as a rollback.
	m := seq("summer", "1", ManifestOptions{Rollback: true, TTL: time.Hour})
	if m.GetReleaseSequence() != 3 || !m.GetRollback() {
		t.Errorf("rollback release = %d rollback = %v; want 3, true", m.GetReleaseSequence(), m.GetRollback())
	}
	if m.GetExpiresAtUnixMs()-m.GetIssuedAtUnixMs() != time.Hour.Milliseconds() {
		t.Errorf("TTL 1h gave lifetime %dms", m.GetExpiresAtUnixMs()-m.GetIssuedAtUnixMs())
	}

	// Concurrent deployments get distinct sequences.
	const n = 8
	got := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, m, err := e.reg.Manifest(ctx, "summer", "2", ManifestOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = m.GetReleaseSequence()
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, s := range got {
		if s < 4 || s > 3+n || seen[s] {
			t.Errorf("concurrent releases = %v; want each of 4..%d once", got, 3+n)
			break
		}
		seen[s] = true
	}
}

func TestManifestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	_, _, err := e.reg.Manifest(ctx, "summer", "9", ManifestOptions{})
	wantCode(t, err, shoalerr.NotFound, "summer", "9")
	_, _, err = e.reg.Manifest(ctx, "summer", "1", ManifestOptions{TTL: -time.Second})
	wantCode(t, err, shoalerr.Invalid, "negative")
	_, _, err = e.reg.Manifest(ctx, "sum mer", "1", ManifestOptions{})
	wantCode(t, err, shoalerr.Invalid, "model name")
	// Failed attempts allocate nothing.
	_, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{})
	if err != nil || m.GetReleaseSequence() != 1 {
		t.Errorf("release after failed attempts = %d, %v; want 1", m.GetReleaseSequence(), err)
	}
}
