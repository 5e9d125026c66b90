package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
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
	if m.GetHealthCheck() != nil {
		t.Errorf("health check %v without one asked for", m.GetHealthCheck())
	}
	hc := seq("summer", "2", ManifestOptions{HealthCheck: &shoalv1.HealthCheck{MinPredictions: 7, MinSeconds: 9}}).GetHealthCheck()
	if hc.GetMinPredictions() != 7 || hc.GetMinSeconds() != 9 {
		t.Errorf("health check = %v; want 7 predictions or 9 s", hc)
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
		if s < 5 || s > 4+n || seen[s] {
			t.Errorf("concurrent releases = %v; want each of 5..%d once", got, 4+n)
			break
		}
		seen[s] = true
	}
	if cs := seq("summer", "2", ManifestOptions{CaptureShare: 0.25}).GetCaptureShare(); cs != 0.25 {
		t.Errorf("capture share = %g; want 0.25", cs)
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
	for _, share := range []float64{-0.1, 1.5, math.NaN()} {
		_, _, err = e.reg.Manifest(ctx, "summer", "1", ManifestOptions{CaptureShare: share})
		wantCode(t, err, shoalerr.Invalid, "capture share")
	}
	_, _, err = e.reg.Manifest(ctx, "sum mer", "1", ManifestOptions{})
	wantCode(t, err, shoalerr.Invalid, "model name")
	// Failed attempts allocate nothing.
	_, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{})
	if err != nil || m.GetReleaseSequence() != 1 {
		t.Errorf("release after failed attempts = %d, %v; want 1", m.GetReleaseSequence(), err)
	}
}

func TestReissue(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	v, err := trust.NewVerifier(e.signer.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	open := func(env []byte) *shoalv1.DeploymentManifest {
		t.Helper()
		payload, err := v.OpenEnvelope(env, trust.ManifestPayloadType)
		if err != nil {
			t.Fatalf("re-issued envelope does not verify with the public key: %v", err)
		}
		var m shoalv1.DeploymentManifest
		if err := protojson.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		return &m
	}
	// sameBut checks that got is want with only the issue and expiry times
	// changed, to these.
	sameBut := func(got, want *shoalv1.DeploymentManifest, issued time.Time, lifetime time.Duration) {
		t.Helper()
		if got.GetIssuedAtUnixMs() != issued.UnixMilli() || got.GetExpiresAtUnixMs() != issued.Add(lifetime).UnixMilli() {
			t.Errorf("issued/expires = %d/%d; want %d/%d", got.GetIssuedAtUnixMs(), got.GetExpiresAtUnixMs(), issued.UnixMilli(), issued.Add(lifetime).UnixMilli())
		}
		g := proto.Clone(got).(*shoalv1.DeploymentManifest)
		g.IssuedAtUnixMs, g.ExpiresAtUnixMs = want.GetIssuedAtUnixMs(), want.GetExpiresAtUnixMs()
		if !proto.Equal(g, want) {
			t.Errorf("re-issued manifest changed more than its times:\n got %v\nwant %v", g, want)
		}
	}

	env, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{Profile: "rpi4"})
	if err != nil {
		t.Fatal(err)
	}
	// 25 of 30 days later, and again after the manifest has expired.
	for _, age := range []time.Duration{25 * 24 * time.Hour, 40 * 24 * time.Hour} {
		e.clock.Advance(age)
		renv, rm, err := e.reg.Reissue(ctx, env, 0)
		if err != nil {
			t.Fatalf("Reissue at %s: %v", age, err)
		}
		if got := open(renv); !proto.Equal(got, rm) {
			t.Errorf("signed payload differs from the returned manifest:\n%v\n%v", got, rm)
		}
		sameBut(rm, m, e.clock.Now(), DefaultManifestTTL) // ttl 0 keeps the manifest's lifetime
		if rm.GetReleaseSequence() != 1 {
			t.Errorf("release sequence = %d; want 1, the same release", rm.GetReleaseSequence())
		}
		env, m = renv, rm
	}

	// An explicit lifetime; a rollback's own short lifetime is kept.
	renv, rm, err := e.reg.Reissue(ctx, env, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sameBut(open(renv), m, e.clock.Now(), time.Hour)
	benv, bm, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{Rollback: true, TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	_, rm, err = e.reg.Reissue(ctx, benv, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameBut(rm, bm, e.clock.Now(), 2*time.Hour)
	if !rm.GetRollback() || rm.GetReleaseSequence() != 2 {
		t.Errorf("re-issued rollback = %v, release %d; want a rollback, release 2", rm.GetRollback(), rm.GetReleaseSequence())
	}

	// Re-issuing takes no release sequence.
	if _, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{}); err != nil || m.GetReleaseSequence() != 3 {
		t.Errorf("next release = %d, %v; want 3", m.GetReleaseSequence(), err)
	}

	// The key is the registry's own across a restart.
	e.reopen()
	if _, _, err := e.reg.Reissue(ctx, env, 0); err != nil {
		t.Errorf("Reissue after a restart: %v", err)
	}
}

func TestReissueRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("summer", "1", testModel(t, "example_dynamic_axes.onnx"))
	env, m, err := e.reg.Manifest(ctx, "summer", "1", ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	other, err := trust.LoadOrCreateSigner(t.TempDir() + "/other.pem")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	wrongType, err := e.signer.SignEnvelope("application/json", payload)
	if err != nil {
		t.Fatal(err)
	}
	unknownField, err := e.signer.SignEnvelope(trust.ManifestPayloadType, append(bytes.TrimSuffix(payload, []byte("}")), []byte(`,"futureField":1}`)...))
	if err != nil {
		t.Fatal(err)
	}
	// The same envelope with another manifest in it: the signature no
	// longer covers the payload.
	var tampered map[string]any
	if err := json.Unmarshal(env, &tampered); err != nil {
		t.Fatal(err)
	}
	tampered["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte(`"releaseSequence":"1"`), []byte(`"releaseSequence":"9"`), 1))
	tamperedEnv, _ := json.Marshal(tampered)

	for _, tc := range []struct {
		name string
		env  []byte
		ttl  time.Duration
		text string
	}{
		{"another key", foreign, 0, "key " + e.signer.KeyID()},
		{"tampered payload", tamperedEnv, 0, "not a deployment manifest signed"},
		{"another payload type", wrongType, 0, "payload type"},
		{"not an envelope", []byte("nope"), 0, "not DSSE"},
		{"unknown field", unknownField, 0, "keep whole"},
		{"negative lifetime", env, -time.Second, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, gm, err := e.reg.Reissue(ctx, tc.env, tc.ttl)
			wantCode(t, err, shoalerr.Invalid, tc.text)
			if got != nil || gm != nil {
				t.Error("a refused Reissue returned an envelope")
			}
		})
	}
}
