package reconcile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/modelstore"
	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// fuzzNow is the reconciler's clock in FuzzDesired: the seed manifests
// expire long after it.
var fuzzNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

const fuzzProfile = "rpi4"

// fuzzManifest is a manifest validateManifest accepts, for model name.
func fuzzManifest(name, version string, seq uint64) *shoalv1.DeploymentManifest {
	sum := sha256.Sum256([]byte(name + "/" + version))
	return &shoalv1.DeploymentManifest{
		SchemaVersion: 1, ModelName: name, ModelVersion: version,
		Artifact: &shoalv1.Artifact{
			Sha256: hex.EncodeToString(sum[:]), Size: 1234, Url: "/v1/artifacts/" + hex.EncodeToString(sum[:]),
			Signature: "MEUCIQDx", MediaType: "application/vnd.onnx",
		},
		Inputs:  []*shoalv1.TensorSpec{{Name: "input_vectors", Datatype: "FP32", Shape: []int64{-1, 10}}},
		Outputs: []*shoalv1.TensorSpec{{Name: "output_scalars", Datatype: "FP32", Shape: []int64{-1}}},
		SelfTest: &shoalv1.SelfTest{
			Inputs:          []*shoalv1.Tensor{{Name: "input_vectors", Datatype: "FP32", Shape: []int64{1, 1}, RawData: []byte{0, 0, 0x80, 0x3f}}},
			ExpectedOutputs: []*shoalv1.Tensor{{Name: "output_scalars", Datatype: "FP32", Shape: []int64{1}, RawData: []byte{0, 0, 0, 0x40}}},
			Tolerance:       1e-4,
		},
		ReleaseSequence: seq,
		IssuedAtUnixMs:  fuzzNow.Add(-time.Hour).UnixMilli(),
		ExpiresAtUnixMs: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
	}
}

// manifestJSON is the protobuf JSON of m, compacted: protojson varies its
// whitespace from run to run, and FuzzDesired needs the exact bytes signed.
func manifestJSON(tb testing.TB, m *shoalv1.DeploymentManifest, extra string) []byte {
	tb.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	if extra != "" {
		b = append(append(bytes.TrimSuffix(bytes.TrimSpace(b), []byte("}")), ","+extra...), '}')
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// fuzzSigned returns the manifest payloads the seeds sign with
// fuzzcorpus.SigningKey(0), by seed name. Nothing else is signed with it.
func fuzzSigned(tb testing.TB) map[string][]byte {
	tb.Helper()
	m2 := fuzzManifest("summer", "2", 7)
	m2.SchemaVersion = 2
	jetson := fuzzManifest("winter", "1", 1)
	jetson.Profile = "jetson"
	noTest := fuzzManifest("winter", "1", 1)
	noTest.SelfTest = nil
	return map[string][]byte{
		"summer-1":    manifestJSON(tb, fuzzManifest("summer", "1", 1), ""),
		"summer-2":    manifestJSON(tb, fuzzManifest("summer", "2", 2), ""),
		"winter-1":    manifestJSON(tb, fuzzManifest("winter", "1", 1), ""),
		"future":      manifestJSON(tb, fuzzManifest("autumn", "3", 4), `"canaryPercent":10`),
		"schema-2":    manifestJSON(tb, m2, ""),
		"jetson":      manifestJSON(tb, jetson, ""),
		"no-selftest": manifestJSON(tb, noTest, ""),
		"bad-version": manifestJSON(tb, fuzzManifest("summer", "1/../../x", 1), ""),
	}
}

// fuzzDoer answers every artifact request 404 and remembers the paths.
type fuzzDoer struct {
	mu    sync.Mutex
	paths []string
}

func (d *fuzzDoer) Do(req *http.Request) (*http.Response, error) {
	d.mu.Lock()
	d.paths = append(d.paths, req.URL.Path)
	d.mu.Unlock()
	return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Body: io.NopCloser(strings.NewReader("no such artifact")), Request: req}, nil
}

func (d *fuzzDoer) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.paths
	d.paths = nil
	return p
}

// FuzzDesired feeds desired-state payloads, as they arrive on
// d/{id}/desired, through SetDesired and one reconcile pass, with the
// control plane's key pinned (fuzzcorpus.SigningKey(0)). Decoding
// allocates in proportion to the payload. A payload is either refused as a
// whole (reported FAILED with the reason, nothing else touched) or decoded
// into a DesiredState that re-encodes to the same message; each deployment is either refused or yields a manifest whose
// payload the key signed and which validates; the reconciler then keeps
// slots only for accepted manifests, downloads only their artifacts, and
// reports a state consistent with what it did. Seeds:
// testdata/fuzz/FuzzDesired, from TestFuzzDesiredCorpus.
func FuzzDesired(f *testing.F) {
	signer, err := trust.NewSigner(fuzzcorpus.SigningKey(0))
	if err != nil {
		f.Fatal(err)
	}
	v, err := trust.NewVerifier(signer.PublicKeyPEM())
	if err != nil {
		f.Fatal(err)
	}
	signed := map[string]bool{}
	for _, p := range fuzzSigned(f) {
		signed[string(p)] = true
	}
	store, err := modelstore.Open(filepath.Join(f.TempDir(), "store"), nil)
	if err != nil {
		f.Fatal(err)
	}
	set := inference.NewSet()
	f.Cleanup(set.Close)
	doer := &fuzzDoer{}
	var mu sync.Mutex
	var reports []*shoalv1.ReportedState
	r, err := New(Config{
		DeviceID: "dev-1", AgentVersion: "fuzz", Profile: fuzzProfile, ServerURL: "http://cp.invalid:8080",
		Verifier: v, Store: store, Models: set, HTTP: doer,
		Load: func(string, inference.Ref, onnxrt.Options) (*inference.Model, error) {
			return nil, errors.New("FuzzDesired: nothing can be downloaded, so nothing may be loaded")
		},
		Report: func(rs *shoalv1.ReportedState) {
			mu.Lock()
			reports = append(reports, rs)
			mu.Unlock()
		},
		Now: func() time.Time { return fuzzNow },
	}, nil)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, payload []byte) {
		in := bytes.Clone(payload)
		r.SetDesired(in)
		clear(in) // the reconciler must have kept its own copy
		r.mu.Lock()
		pending, has := r.pending, r.hasPending
		r.pending, r.hasPending = nil, false
		r.mu.Unlock()
		if !has || !bytes.Equal(pending, payload) {
			t.Fatalf("SetDesired kept %q; want %q", pending, payload)
		}
		slotsBefore := map[string]bool{}
		for name := range r.slots {
			slotsBefore[name] = true
		}
		appliedBefore := r.applied

		var ds *shoalv1.DesiredState
		var decErr error
		if n := fuzzcorpus.Allocated(func() { ds, decErr = decodeDesired(payload) }); n > fuzzcorpus.AllocBudget(len(payload)) {
			t.Fatalf("decoding a %d-byte desired state allocated %d bytes", len(payload), n)
		}
		accepted := map[string]*manifest{}
		artifacts := map[string]bool{}
		if decErr == nil {
			if ds.GetSchemaVersion() != SchemaVersion || len(ds.GetDeployments()) > MaxDeployments {
				t.Fatalf("decodeDesired accepted %v", ds)
			}
			b, err := proto.Marshal(ds)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			var again shoalv1.DesiredState
			if err := proto.Unmarshal(b, &again); err != nil || !proto.Equal(&again, ds) {
				t.Fatalf("re-encoded desired state decodes to %v (%v); want %v", &again, err, ds)
			}
			for _, env := range ds.GetDeployments() {
				var m *manifest
				var err error
				if n := fuzzcorpus.Allocated(func() { m, err = openManifest(v, env, fuzzProfile) }); n > fuzzcorpus.AllocBudget(len(env)) {
					t.Fatalf("opening a %d-byte envelope allocated %d bytes", len(env), n)
				}
				if err != nil {
					if err.Error() == "" {
						t.Fatal("a deployment refused without a reason")
					}
					continue
				}
				checkOpened(t, v, env, m, signed)
				if accepted[m.GetModelName()] == nil {
					accepted[m.GetModelName()] = m
					artifacts["/v1/artifacts/"+m.GetArtifact().GetSha256()] = true
				}
			}
		} else if len(payload) == 0 {
			t.Fatal("an empty payload (cleared retained message) must mean nothing is desired")
		}

		r.pass(context.Background(), payload)

		rs := r.State()
		if rs.GetSchemaVersion() != SchemaVersion || rs.GetDeviceId() != "dev-1" || rs.GetProfile() != fuzzProfile {
			t.Fatalf("report header = %v", rs)
		}
		if len(r.overall) > 0 && (rs.GetPhase() != shoalv1.Phase_PHASE_FAILED || rs.GetError() != r.overall[0]) {
			t.Fatalf("errors %q reported as phase %v, error %q", r.overall, rs.GetPhase(), rs.GetError())
		}
		mu.Lock()
		last := reports[len(reports)-1]
		mu.Unlock()
		lastNoTime, rsNoTime := proto.Clone(last).(*shoalv1.ReportedState), proto.Clone(rs).(*shoalv1.ReportedState)
		lastNoTime.ReportedAtUnixMs, rsNoTime.ReportedAtUnixMs = 0, 0
		if !proto.Equal(lastNoTime, rsNoTime) {
			t.Fatalf("last report %v differs from State %v", lastNoTime, rsNoTime)
		}
		for _, p := range doer.take() {
			if !artifacts[p] {
				t.Fatalf("requested %s, which no accepted manifest names", p)
			}
		}
		if decErr != nil {
			if len(r.overall) != 1 || r.overall[0] != decErr.Error() {
				t.Fatalf("refused payload reported as %q; want %q", r.overall, decErr)
			}
			if len(r.slots) != len(slotsBefore) || r.applied != appliedBefore {
				t.Fatalf("a refused payload changed the slots (%d → %d) or applied generation", len(slotsBefore), len(r.slots))
			}
			return
		}
		for name, s := range r.slots {
			m := accepted[name]
			if m == nil {
				t.Fatalf("slot %q kept; no accepted manifest names it", name)
			}
			if s.envelope != m.digest || s.desired != m.ref() {
				t.Fatalf("slot %q holds envelope %s %v; the manifest is %s %v", name, s.envelope, s.desired, m.digest, m.ref())
			}
			if err := modelstore.ValidateName(name); err != nil {
				t.Fatalf("slot for an invalid model name: %v", err)
			}
		}
		if r.applied != appliedBefore && (r.applied != ds.GetGeneration() || len(r.overall) > 0) {
			t.Fatalf("applied generation moved to %d (desired %d, errors %q)", r.applied, ds.GetGeneration(), r.overall)
		}
	})
}

// checkOpened checks a manifest openManifest accepted.
func checkOpened(t *testing.T, v *trust.Verifier, env []byte, m *manifest, signed map[string]bool) {
	t.Helper()
	payload, err := v.OpenEnvelope(env, trust.ManifestPayloadType)
	if err != nil {
		t.Fatalf("openManifest accepted an envelope OpenEnvelope refuses: %v", err)
	}
	if !signed[string(payload)] {
		t.Fatalf("accepted a manifest the key never signed: %s", payload)
	}
	var want shoalv1.DeploymentManifest
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(payload, &want); err != nil || !proto.Equal(&want, m.DeploymentManifest) {
		t.Fatalf("manifest %v is not the signed payload %s (%v)", m.DeploymentManifest, payload, err)
	}
	if err := validateManifest(m.DeploymentManifest, fuzzProfile); err != nil {
		t.Fatalf("accepted an invalid manifest: %v", err)
	}
	if sum := sha256.Sum256(env); m.digest != hex.EncodeToString(sum[:]) {
		t.Fatalf("digest %s is not the envelope's", m.digest)
	}
}

func fuzzDesiredSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	signer, err := trust.NewSigner(fuzzcorpus.SigningKey(0))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := trust.NewSigner(fuzzcorpus.SigningKey(1))
	if err != nil {
		t.Fatal(err)
	}
	signedJSON := fuzzSigned(t)
	seal := func(s *trust.Signer, name string) []byte {
		env, err := s.SignEnvelope(trust.ManifestPayloadType, signedJSON[name])
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	desired := func(schema uint32, gen uint64, envs ...[]byte) []byte {
		b, err := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: schema, Generation: gen, Deployments: envs, IssuedAtUnixMs: fuzzNow.UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seed := func(name string, valid bool, payload []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{payload}}
	}
	one := desired(1, 3, seal(signer, "summer-1"))
	many := make([][]byte, MaxDeployments+1)
	for i := range many {
		many[i] = []byte("{}")
	}
	return []fuzzcorpus.Seed{
		seed("one-model", true, one),
		seed("two-models", true, desired(1, 4, seal(signer, "summer-2"), seal(signer, "winter-1"))),
		seed("unknown-manifest-field", true, desired(1, 5, seal(signer, "future"))),
		seed("nothing-desired", true, desired(1, 6)),
		seed("cleared", true, nil),
		seed("same-model-twice", false, desired(1, 7, seal(signer, "summer-1"), seal(signer, "summer-2"))),
		seed("foreign-key", false, desired(1, 8, seal(foreign, "summer-1"))),
		seed("manifest-schema-2", false, desired(1, 9, seal(signer, "schema-2"))),
		seed("other-profile", false, desired(1, 10, seal(signer, "jetson"))),
		seed("no-self-test", false, desired(1, 11, seal(signer, "no-selftest"))),
		seed("bad-version", false, desired(1, 12, seal(signer, "bad-version"))),
		seed("desired-schema-2", false, desired(2, 13, seal(signer, "summer-1"))),
		seed("too-many", false, desired(1, 14, many...)),
		seed("truncated", false, one[:len(one)/2]),
		seed("not-protobuf", false, []byte("\xff\xff\xff\xff")),
	}
}

// TestFuzzDesiredCorpus keeps testdata/fuzz/FuzzDesired in step with the
// seeds above (-update-fuzz-corpus rewrites it). A seed is valid when the
// desired state decodes and every deployment in it opens, once per model.
func TestFuzzDesiredCorpus(t *testing.T) {
	signer, err := trust.NewSigner(fuzzcorpus.SigningKey(0))
	if err != nil {
		t.Fatal(err)
	}
	v, err := trust.NewVerifier(signer.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	fuzzcorpus.Sync(t, "FuzzDesired", fuzzDesiredSeeds(t), func(vals []any) error {
		ds, err := decodeDesired(vals[0].([]byte))
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, env := range ds.GetDeployments() {
			m, err := openManifest(v, env, fuzzProfile)
			if err != nil {
				return err
			}
			if seen[m.GetModelName()] {
				return errors.New("model " + m.GetModelName() + " twice")
			}
			seen[m.GetModelName()] = true
		}
		return nil
	})
}
