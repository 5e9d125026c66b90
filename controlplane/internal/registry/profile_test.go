package registry

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// classifier returns an MLP classifier over features inputs ("input")
// with outputs "probabilities" and "label".
func classifier(t *testing.T, features, classes int) []byte {
	t.Helper()
	b, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "clf", Layers: onnxbuild.RandomLayers(1, features, classes), Classifier: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// profileOf profiles rows random rows of features features as the input
// "input", and their labels (classes classes) as the output "label".
func profileOf(t *testing.T, rows, features, classes int) *shoalv1.ReferenceProfile {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	in := datastats.Table{Name: "input"}
	out := datastats.Table{Name: "label", Columns: []datastats.Column{{Name: "label", Classes: classes}}}
	for j := range features {
		in.Columns = append(in.Columns, datastats.Column{Name: "f" + strconv.Itoa(j)})
	}
	for range rows {
		row := make([]float64, features)
		for j := range row {
			row[j] = r.NormFloat64()
		}
		in.Rows = append(in.Rows, row)
		out.Rows = append(out.Rows, []float64{float64(r.IntN(classes))})
	}
	p, err := datastats.NewProfile(in, out, datastats.ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReferenceProfileRoundTripAndManifest(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("clf", "1", classifier(t, 4, 3))
	e.push("clf", "2", classifier(t, 4, 3))

	if p, ok, err := e.reg.ReferenceProfile(ctx, "clf", "1"); err != nil || ok || p != nil {
		t.Fatalf("profile before one is set = %v, %v, %v; want none", p, ok, err)
	}
	want := profileOf(t, 200, 4, 3)
	if err := e.reg.SetReferenceProfile(ctx, "clf", "1", want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := e.reg.ReferenceProfile(ctx, "clf", "1")
	if err != nil || !ok || !proto.Equal(got, want) {
		t.Fatalf("profile read back = %v, %v, %v; want %v", got, ok, err, want)
	}

	// The manifest carries it, and it survives the signed payload.
	env, m, err := e.reg.Manifest(ctx, "clf", "1", ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := trust.NewVerifier(e.signer.PublicKeyPEM())
	payload, err := v.OpenEnvelope(env, trust.ManifestPayloadType)
	if err != nil {
		t.Fatal(err)
	}
	var signed shoalv1.DeploymentManifest
	if err := protojson.Unmarshal(payload, &signed); err != nil {
		t.Fatal(err)
	}
	for _, raw := range [][]byte{m.GetReferenceProfile(), signed.GetReferenceProfile()} {
		p, err := datastats.DecodeProfile(raw)
		if err != nil || !proto.Equal(p, want) {
			t.Fatalf("manifest's profile = %v, %v; want %v", p, err, want)
		}
	}
	// A version without one ships none.
	if _, m2, err := e.reg.Manifest(ctx, "clf", "2", ManifestOptions{}); err != nil || len(m2.GetReferenceProfile()) != 0 {
		t.Fatalf("manifest of a version without a profile carries %d bytes (%v)", len(m2.GetReferenceProfile()), err)
	}

	// It survives a restart, and a new one replaces it.
	e.reopen()
	other := profileOf(t, 50, 4, 3)
	if err := e.reg.SetReferenceProfile(ctx, "clf", "1", other); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := e.reg.ReferenceProfile(ctx, "clf", "1"); !proto.Equal(got, other) {
		t.Fatalf("replaced profile = %v", got)
	}
}

func TestSetReferenceProfileRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("clf", "1", classifier(t, 4, 3))
	good := profileOf(t, 50, 4, 3)

	wrongInput := proto.Clone(good).(*shoalv1.ReferenceProfile)
	wrongInput.InputName = "pixels"
	wrongOutput := proto.Clone(good).(*shoalv1.ReferenceProfile)
	wrongOutput.OutputName = "scores"
	invalid := proto.Clone(good).(*shoalv1.ReferenceProfile)
	invalid.Inputs[0].Edges = []float64{2, 1}

	for _, c := range []struct {
		name, model, version string
		p                    *shoalv1.ReferenceProfile
		code                 shoalerr.Code
		contains             string
	}{
		{"no such version", "clf", "9", good, shoalerr.NotFound, `model "clf" has no version "9"`},
		{"no such model", "nope", "1", good, shoalerr.NotFound, `model "nope" has no version "1"`},
		{"bad name", "a/b", "1", good, shoalerr.Invalid, "model name"},
		{"nil", "clf", "1", nil, shoalerr.Invalid, "missing"},
		{"invalid", "clf", "1", invalid, shoalerr.Invalid, "reference profile of clf 1 refused"},
		{"wrong feature count", "clf", "1", profileOf(t, 50, 5, 3), shoalerr.Invalid, `profiles 5 input features but input "input" has 4`},
		{"wrong input tensor", "clf", "1", wrongInput, shoalerr.Invalid, `input tensor "pixels" is not an input of the model ("input")`},
		{"wrong output tensor", "clf", "1", wrongOutput, shoalerr.Invalid, `output tensor "scores" is not an output of the model ("probabilities", "label")`},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantCode(t, e.reg.SetReferenceProfile(ctx, c.model, c.version, c.p), c.code, c.contains)
		})
	}
	if _, ok, err := e.reg.ReferenceProfile(ctx, "clf", "1"); ok || err != nil {
		t.Errorf("a refused profile was stored (%v)", err)
	}
	if _, _, err := e.reg.ReferenceProfile(ctx, "clf", "9"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("ReferenceProfile of a missing version: %v", err)
	}
}

// TestManifestWithMNISTSizedProfileFits checks the size bound the brief
// worries about: a 784-feature profile (MNIST) fits the manifest envelope
// with plenty to spare.
func TestManifestWithMNISTSizedProfileFits(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.push("digits", "1", classifier(t, 784, 10))
	p := profileOf(t, 2000, 784, 10)
	b, err := datastats.EncodeProfile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.SetReferenceProfile(ctx, "digits", "1", p); err != nil {
		t.Fatal(err)
	}
	env, _, err := e.reg.Manifest(ctx, "digits", "1", ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("784-feature profile: %d bytes encoded; envelope %d bytes of %d", len(b), len(env), trust.MaxEnvelopeBytes)
	if len(env) > trust.MaxEnvelopeBytes/4 {
		t.Errorf("envelope with a 784-feature profile is %d bytes; want well under %d", len(env), trust.MaxEnvelopeBytes)
	}
	// The bound itself fits: a profile of MaxProfileBytes, twice
	// base64-encoded, leaves room in the envelope.
	if grown := MaxProfileBytes * 16 / 9; grown > trust.MaxEnvelopeBytes-256<<10 {
		t.Errorf("MaxProfileBytes grows to %d bytes in the envelope; the limit is %d", grown, trust.MaxEnvelopeBytes)
	}
}
