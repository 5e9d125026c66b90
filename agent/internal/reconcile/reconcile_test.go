package reconcile

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

var installPhases = []shoalv1.Phase{
	shoalv1.Phase_PHASE_DOWNLOADING,
	shoalv1.Phase_PHASE_VERIFYING,
	shoalv1.Phase_PHASE_SELF_TEST,
	shoalv1.Phase_PHASE_ACTIVATING,
	shoalv1.Phase_PHASE_ACTIVE,
}

func TestInstallReportsEveryPhaseAndIsIdempotent(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manifestFor("summer", "1", modelBytes(t), 1)
	payload := desired(t, 3, e.seal(m, nil))

	if retry := e.r.pass(context.Background(), payload); retry != 0 {
		t.Fatalf("pass asked for a retry in %s", retry)
	}
	if got := e.phases("summer"); !slices.Equal(got, installPhases) {
		t.Errorf("phases = %v; want %v", got, installPhases)
	}
	rs := e.last()
	if rs.GetPhase() != shoalv1.Phase_PHASE_ACTIVE || rs.GetError() != "" || rs.GetAppliedGeneration() != 3 {
		t.Errorf("report = phase %v, error %q, applied %d; want ACTIVE, no error, 3", rs.GetPhase(), rs.GetError(), rs.GetAppliedGeneration())
	}
	if rs.GetDeviceId() != "dev-1" || rs.GetSchemaVersion() != 1 || rs.GetAgentVersion() != "test" || rs.GetReportedAtUnixMs() == 0 {
		t.Errorf("report header = %v", rs)
	}
	ms := modelStatus(rs, "summer")
	if ms.GetActive().GetVersion() != "1" || ms.GetDesired().GetSha256() != m.GetArtifact().GetSha256() || ms.GetPrevious() != nil {
		t.Errorf("model status = %v", ms)
	}
	if v := e.serving("summer"); v != "1" {
		t.Fatalf("serving %q; want 1", v)
	}
	if err := e.predict("summer"); err != nil {
		t.Errorf("predict: %v", err)
	}
	if ref, _, ok := e.store.Active("summer"); !ok || ref.Version != "1" || e.store.LastSequence("summer") != 1 {
		t.Errorf("store active = %v, %v", ref, ok)
	}
	if _, size := e.store.Partial(m.GetArtifact().GetSha256()); size != 0 {
		t.Errorf("partial download left behind (%d bytes)", size)
	}

	// The same desired state again (a retained redelivery): nothing to do.
	reqs, reports := len(e.srv.requests()), e.reportCount()
	e.r.pass(context.Background(), payload)
	if got := len(e.srv.requests()); got != reqs {
		t.Errorf("a second pass made %d more requests", got-reqs)
	}
	if got := e.reportCount(); got != reports {
		t.Errorf("a second pass reported %d more times", got-reports)
	}
}

func TestUpgradeRollbackAndSequence(t *testing.T) {
	e := newEnv(t, nil)
	v1, v2 := modelBytes(t), variant(t, "2")
	m1 := e.manifestFor("m", "1", v1, 1)
	m2 := e.manifestFor("m", "2", v2, 2)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m1, nil)))
	e.r.pass(context.Background(), desired(t, 2, e.seal(m2, nil)))
	if v := e.serving("m"); v != "2" {
		t.Fatalf("serving %q after the upgrade; want 2", v)
	}
	ms := modelStatus(e.last(), "m")
	if ms.GetPrevious().GetVersion() != "1" || ms.GetActive().GetVersion() != "2" {
		t.Errorf("after upgrade active/previous = %v/%v", ms.GetActive(), ms.GetPrevious())
	}

	// Going back to 1 with its old sequence, not signed as a rollback: refused.
	old := e.seal(m1, nil)
	e.r.pass(context.Background(), desired(t, 3, old))
	ms = modelStatus(e.last(), "m")
	if ms.GetPhase() != shoalv1.Phase_PHASE_FAILED || !strings.Contains(ms.GetError(), "release sequence 1 of m 1 is below the last applied, 2") {
		t.Errorf("replayed old manifest: phase %v, error %q", ms.GetPhase(), ms.GetError())
	}
	if v := e.serving("m"); v != "2" {
		t.Errorf("serving %q after a refused downgrade; want 2", v)
	}

	// Signed as a rollback, it is applied, from the file kept on disk.
	reqs := len(e.srv.requests())
	rb := proto.Clone(m1).(*shoalv1.DeploymentManifest)
	rb.Rollback = true
	e.r.pass(context.Background(), desired(t, 4, e.seal(rb, nil)))
	if v := e.serving("m"); v != "1" {
		t.Fatalf("serving %q after an explicit rollback; want 1", v)
	}
	if got := len(e.srv.requests()); got != reqs {
		t.Errorf("rollback to the previous version downloaded it again (%d requests)", got-reqs)
	}
	ms = modelStatus(e.last(), "m")
	if ms.GetPhase() != shoalv1.Phase_PHASE_ACTIVE || ms.GetPrevious().GetVersion() != "2" {
		t.Errorf("after rollback: %v", ms)
	}
	if got := e.store.LastSequence("m"); got != 2 {
		t.Errorf("LastSequence after rollback = %d; want 2", got)
	}
}

func TestResumesAfterTheConnectionIsCut(t *testing.T) {
	e := newEnv(t, nil)
	b := modelBytes(t)
	m := e.manifestFor("m", "1", b, 1)
	half := int64(len(b) / 2)
	e.srv.mu.Lock()
	e.srv.cutAfter = half
	e.srv.mu.Unlock()
	payload := desired(t, 1, e.seal(m, nil))

	retry := e.r.pass(context.Background(), payload)
	if retry <= 0 {
		t.Fatal("a cut download did not ask for a retry")
	}
	ms := modelStatus(e.last(), "m")
	if ms.GetPhase() != shoalv1.Phase_PHASE_DOWNLOADING || !strings.Contains(ms.GetError(), "retrying in") {
		t.Errorf("after the cut: phase %v, error %q", ms.GetPhase(), ms.GetError())
	}
	if _, size := e.store.Partial(m.GetArtifact().GetSha256()); size != half {
		t.Fatalf("partial file holds %d bytes; want the %d that arrived", size, half)
	}
	// Before the backoff has passed, nothing is tried.
	e.r.pass(context.Background(), payload)
	if n := len(e.srv.requests()); n != 1 {
		t.Fatalf("%d requests before the retry time; want 1", n)
	}
	e.clock.Advance(retry)
	if d := e.r.pass(context.Background(), payload); d != 0 {
		t.Fatalf("second attempt asked for another retry in %s; last error %q", d, modelStatus(e.last(), "m").GetError())
	}
	if v := e.serving("m"); v != "1" {
		t.Fatalf("serving %q; want 1", v)
	}
	reqs := e.srv.requests()
	if want := []string{"", "bytes=" + itoa(half) + "-"}; !slices.Equal(reqs, want) {
		t.Errorf("Range headers = %q; want %q", reqs, want)
	}
}

func TestServerIgnoringRangeStartsOver(t *testing.T) {
	e := newEnv(t, nil)
	b := modelBytes(t)
	m := e.manifestFor("m", "1", b, 1)
	part, _ := e.store.Partial(m.GetArtifact().GetSha256())
	if err := os.WriteFile(part, []byte("stale bytes from an older attempt"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.srv.noRange = true
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if v := e.serving("m"); v != "1" {
		t.Fatalf("serving %q; want 1 (error %q)", v, e.last().GetError())
	}
	if reqs := e.srv.requests(); len(reqs) != 1 || !strings.HasPrefix(reqs[0], "bytes=") {
		t.Errorf("requests = %q; want one ranged request answered with 200", reqs)
	}
}

func TestRangeNotSatisfiableStartsOver(t *testing.T) {
	e := newEnv(t, nil)
	b := modelBytes(t)
	m := e.manifestFor("m", "1", b, 1)
	part, _ := e.store.Partial(m.GetArtifact().GetSha256())
	if err := os.WriteFile(part, b[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	e.srv.failWith = []int{416}
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if v := e.serving("m"); v != "1" {
		t.Fatalf("serving %q; want 1 (error %q)", v, e.last().GetError())
	}
	if reqs := e.srv.requests(); !slices.Equal(reqs, []string{"bytes=100-", ""}) {
		t.Errorf("requests = %q; want a ranged one, then one from the start", reqs)
	}
}

func TestResumedGarbageIsDownloadedAgain(t *testing.T) {
	e := newEnv(t, nil)
	b := modelBytes(t)
	m := e.manifestFor("m", "1", b, 1)
	part, _ := e.store.Partial(m.GetArtifact().GetSha256())
	// What a power cut can leave: the right length, the wrong bytes.
	if err := os.WriteFile(part, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if v := e.serving("m"); v != "1" {
		t.Fatalf("serving %q; want 1 (error %q)", v, e.last().GetError())
	}
	if reqs := e.srv.requests(); !slices.Equal(reqs, []string{"bytes=100-", ""}) {
		t.Errorf("requests = %q; want the resume, then a full download", reqs)
	}
}

func TestTransientErrorsBackOff(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	e.srv.failWith = []int{503, 503}
	payload := desired(t, 1, e.seal(m, nil))

	d1 := e.r.pass(context.Background(), payload)
	e.clock.Advance(d1)
	d2 := e.r.pass(context.Background(), payload)
	if d1 < 500*time.Millisecond || d1 > time.Second || d2 < time.Second || d2 > 2*time.Second {
		t.Errorf("retry delays %s, %s; want within [0.5s,1s] then [1s,2s]", d1, d2)
	}
	ms := modelStatus(e.last(), "m")
	if ms.GetPhase() != shoalv1.Phase_PHASE_DOWNLOADING || !strings.Contains(ms.GetError(), "503") {
		t.Errorf("while retrying: phase %v, error %q", ms.GetPhase(), ms.GetError())
	}
	if e.last().GetAppliedGeneration() != 0 {
		t.Error("applied generation set before the model became active")
	}
	e.clock.Advance(d2)
	if d := e.r.pass(context.Background(), payload); d != 0 {
		t.Fatalf("third attempt: retry %s, error %q", d, modelStatus(e.last(), "m").GetError())
	}
	if v := e.serving("m"); v != "1" || e.last().GetAppliedGeneration() != 1 {
		t.Errorf("serving %q, applied %d; want 1, 1", v, e.last().GetAppliedGeneration())
	}
}

func TestStalledDownloadTimesOut(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StallTimeout = 200 * time.Millisecond })
	b := modelBytes(t)
	m := e.manifestFor("m", "1", b, 1)
	e.srv.hangAt = 10
	retry := e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if retry == 0 {
		t.Fatal("a stalled download was not retried")
	}
	if err := modelStatus(e.last(), "m").GetError(); !strings.Contains(err, "no data for 200ms") {
		t.Errorf("error = %q; want it to say the download stalled", err)
	}
	if _, size := e.store.Partial(m.GetArtifact().GetSha256()); size != 10 {
		t.Errorf("partial holds %d bytes; want the 10 received", size)
	}
}

// TestRejections: each bad manifest is FAILED with a clear reason, the bad
// download is removed, the model that was serving keeps serving, and the
// same desired state is not tried again.
func TestRejections(t *testing.T) {
	other, err := trust.LoadOrCreateSigner(t.TempDir() + "/other.pem")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// make returns the bad envelope; it may also make the server misbehave.
		make      func(e *testEnv, good *shoalv1.DeploymentManifest, b []byte) []byte
		want      string
		overall   bool // the error is not tied to the model (untrusted name)
		downloads bool // whether the attempt reached the server
	}{
		{
			name: "tampered artifact",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, b []byte) []byte {
				bad := []byte(string(b))
				bad[len(bad)/2] ^= 0xff
				e.srv.set(m.GetArtifact().GetSha256(), bad)
				return e.seal(m, nil)
			},
			want: "artifact sha256 mismatch: got ", downloads: true,
		},
		{
			name: "artifact signed by another key",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, b []byte) []byte {
				sig, _ := other.SignBlob(strings.NewReader(string(b)))
				m.Artifact.Signature = sig
				return e.seal(m, nil)
			},
			want: "artifact signature does not verify with the pinned key", downloads: true,
		},
		{
			name: "manifest signed by another key",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte { return e.seal(m, other) },
			want: "manifest signature does not verify with the pinned key", overall: true,
		},
		{
			name: "expired manifest",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.ExpiresAtUnixMs = e.clock.Now().Add(-time.Minute).UnixMilli()
				return e.seal(m, nil)
			},
			want: "manifest of m 2 expired at 2026-05-01T11:59:00Z",
		},
		{
			name: "manifest without expiry",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.ExpiresAtUnixMs = 0
				return e.seal(m, nil)
			},
			want: "has no expiry",
		},
		{
			name: "lower release sequence",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.ReleaseSequence = 4
				return e.seal(m, nil)
			},
			want: "release sequence 4 of m 2 is below the last applied, 5",
		},
		{
			name: "self-test mismatch",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				raw := m.SelfTest.ExpectedOutputs[0].RawData
				binary.LittleEndian.PutUint32(raw, math.Float32bits(1234.5))
				return e.seal(m, nil)
			},
			want: `self-test: output "output_scalars": value 0 is`, downloads: true,
		},
		{
			// A string model whose StringNormalizer asks for a locale the
			// device lacks: refused with Shoal's message, not ORT's text.
			name: "model needs a locale the device lacks",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				b, err := onnxbuild.Lowercaser("xx_NOWHERE.UTF-8")
				if err != nil {
					e.t.Fatal(err)
				}
				sig, err := e.signer.SignBlob(bytes.NewReader(b))
				if err != nil {
					e.t.Fatal(err)
				}
				sha := e.srv.put(b)
				m.Artifact = &shoalv1.Artifact{Sha256: sha, Size: int64(len(b)), Url: "/v1/artifacts/" + sha, Signature: sig, MediaType: "application/vnd.onnx"}
				return e.seal(m, nil)
			},
			want: `needs the locale "xx_NOWHERE.UTF-8", which this machine does not have: install it`, downloads: true,
		},
		{
			name: "I/O schema mismatch",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.Inputs[0].Datatype = "INT64"
				return e.seal(m, nil)
			},
			want: `input "input_vectors" is FP32; the manifest says INT64`, downloads: true,
		},
		{
			name: "size mismatch",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.Artifact.Size++
				return e.seal(m, nil)
			},
			want: "the server's artifact is", downloads: true,
		},
		{
			name: "artifact not found",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.Artifact.Url = "/v1/artifacts/" + strings.Repeat("0", 64)
				return e.seal(m, nil)
			},
			want: "404 Not Found", downloads: true,
		},
		{
			name: "other firmware profile",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.Profile = "jetson-orin"
				return e.seal(m, nil)
			},
			want: `is for firmware profile "jetson-orin"; this device's profile is ""`, overall: true,
		},
		{
			name: "no self-test",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.SelfTest = nil
				return e.seal(m, nil)
			},
			want: "carries no self-test", overall: true,
		},
		{
			name: "newer schema version",
			make: func(e *testEnv, m *shoalv1.DeploymentManifest, _ []byte) []byte {
				m.SchemaVersion = 2
				return e.seal(m, nil)
			},
			want: "schema_version 2; this agent understands 1", overall: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			good := e.manifestFor("m", "1", modelBytes(t), 5)
			e.r.pass(context.Background(), desired(t, 1, e.seal(good, nil)))
			if v := e.serving("m"); v != "1" {
				t.Fatalf("setup: serving %q", v)
			}
			b := variant(t, "2")
			m := e.manifestFor("m", "2", b, 6)
			payload := desired(t, 2, tc.make(e, m, b))
			before := len(e.srv.requests())

			if retry := e.r.pass(context.Background(), payload); retry != 0 {
				t.Errorf("a permanent failure asked for a retry in %s", retry)
			}
			rs := e.last()
			if rs.GetPhase() != shoalv1.Phase_PHASE_FAILED || !strings.Contains(rs.GetError(), tc.want) {
				t.Errorf("report: phase %v, error %q; want FAILED with %q", rs.GetPhase(), rs.GetError(), tc.want)
			}
			if strings.Contains(rs.GetError(), "onnxruntime_src") {
				t.Errorf("report carries ONNX Runtime's internal text: %q", rs.GetError())
			}
			ms := modelStatus(rs, "m")
			if tc.overall {
				if ms.GetPhase() != shoalv1.Phase_PHASE_IDLE || ms.GetDesired() != nil {
					t.Errorf("model status for an untrusted deployment = %v; want IDLE with nothing desired", ms)
				}
			} else if ms.GetPhase() != shoalv1.Phase_PHASE_FAILED || !strings.Contains(ms.GetError(), tc.want) || ms.GetDesired().GetVersion() != "2" {
				t.Errorf("model status = %v", ms)
			}
			if ms.GetActive().GetVersion() != "1" {
				t.Errorf("reported active = %v; want 1", ms.GetActive())
			}
			if v := e.serving("m"); v != "1" {
				t.Errorf("serving %q; want 1 to keep serving", v)
			}
			if err := e.predict("m"); err != nil {
				t.Errorf("predict with the old model: %v", err)
			}
			if rs.GetAppliedGeneration() != 1 {
				t.Errorf("applied generation = %d; want 1", rs.GetAppliedGeneration())
			}
			if _, size := e.store.Partial(m.GetArtifact().GetSha256()); size != 0 {
				t.Errorf("the rejected download is still on disk (%d bytes)", size)
			}
			if _, ok := e.store.File("m", m.GetArtifact().GetSha256()); ok {
				t.Error("the rejected model was committed to the store")
			}
			reached := len(e.srv.requests()) > before
			if reached != tc.downloads {
				t.Errorf("reached the server = %v; want %v", reached, tc.downloads)
			}

			// No hot loop: the same desired state again does nothing.
			n := len(e.srv.requests())
			e.clock.Advance(time.Hour)
			e.r.pass(context.Background(), payload)
			if got := len(e.srv.requests()); got != n {
				t.Errorf("the failed manifest was tried again (%d requests)", got-n)
			}
		})
	}
}

func TestRemovedModelKeepsServing(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	// A download that was under way when the model left the desired state.
	abandoned := e.manifestFor("m", "2", variant(t, "2"), 2)
	part, _ := e.store.Partial(abandoned.GetArtifact().GetSha256())
	if err := os.WriteFile(part, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.r.pass(context.Background(), desired(t, 2))
	if _, size := e.store.Partial(abandoned.GetArtifact().GetSha256()); size != 0 {
		t.Error("an abandoned partial download was kept")
	}
	rs := e.last()
	if rs.GetPhase() != shoalv1.Phase_PHASE_IDLE || rs.GetAppliedGeneration() != 2 {
		t.Errorf("report = phase %v, applied %d; want IDLE, 2", rs.GetPhase(), rs.GetAppliedGeneration())
	}
	ms := modelStatus(rs, "m")
	if ms.GetPhase() != shoalv1.Phase_PHASE_IDLE || ms.GetActive().GetVersion() != "1" || ms.GetDesired() != nil {
		t.Errorf("model status = %v; want IDLE, active 1, nothing desired", ms)
	}
	if v := e.serving("m"); v != "1" {
		t.Errorf("serving %q; want 1", v)
	}
}

func TestDesiredStateErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		phase   shoalv1.Phase
		want    string
	}{
		{"garbage", []byte("\xff\xff\xff"), shoalv1.Phase_PHASE_FAILED, "not a shoal.v1.DesiredState"},
		{"newer schema", func() []byte { b, _ := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: 2}); return b }(), shoalv1.Phase_PHASE_FAILED, "schema_version 2"},
		{"too many deployments", func() []byte {
			b, _ := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: 1, Deployments: make([][]byte, MaxDeployments+1)})
			return b
		}(), shoalv1.Phase_PHASE_FAILED, "the limit is 64"},
		{"not DSSE", func() []byte {
			b, _ := proto.Marshal(&shoalv1.DesiredState{SchemaVersion: 1, Generation: 9, Deployments: [][]byte{[]byte("{")}})
			return b
		}(), shoalv1.Phase_PHASE_FAILED, "deployment 0 of generation 9: manifest envelope: envelope is not DSSE JSON"},
		{"cleared", nil, shoalv1.Phase_PHASE_IDLE, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.r.pass(context.Background(), tc.payload)
			rs := e.r.State()
			if rs.GetPhase() != tc.phase || !strings.Contains(rs.GetError(), tc.want) {
				t.Errorf("state = phase %v, error %q; want %v with %q", rs.GetPhase(), rs.GetError(), tc.phase, tc.want)
			}
		})
	}
}

func TestManifestWithUnknownFieldsIsAccepted(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	js := strings.Replace(string(b), "{", `{"someFutureField": {"x": 1},`, 1)
	e.r.pass(context.Background(), desired(t, 1, e.sealJSON([]byte(js), nil)))
	if v := e.serving("m"); v != "1" {
		t.Fatalf("serving %q; want 1 (error %q)", v, e.last().GetError())
	}
}

func TestDuplicateModelIsRejected(t *testing.T) {
	e := newEnv(t, nil)
	m1 := e.manifestFor("m", "1", modelBytes(t), 1)
	m2 := e.manifestFor("m", "2", variant(t, "2"), 2)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m1, nil), e.seal(m2, nil)))
	rs := e.last()
	if v := e.serving("m"); v != "1" {
		t.Errorf("serving %q; want the first deployment, 1", v)
	}
	if rs.GetPhase() != shoalv1.Phase_PHASE_FAILED || !strings.Contains(rs.GetError(), `model "m" appears more than once`) {
		t.Errorf("report = %v, %q", rs.GetPhase(), rs.GetError())
	}
}

// TestRunFollowsTheLatestDesiredState drives Run: a slow download is
// abandoned when a newer desired state arrives, and transient failures are
// retried on a timer.
func TestRunFollowsTheLatestDesiredState(t *testing.T) {
	reports := make(chan *shoalv1.ReportedState, 256)
	e := newEnv(t, func(c *Config) {
		c.Now = nil // real clock: Run's timers are real
		c.MinRetry, c.MaxRetry = 10*time.Millisecond, 20*time.Millisecond
		c.StallTimeout = time.Hour // only the newer desired state can end the stalled download
		c.Report = func(rs *shoalv1.ReportedState) { reports <- rs }
	})
	m1 := e.manifestFor("m", "1", modelBytes(t), 1)
	m2 := e.manifestFor("m", "2", variant(t, "2"), 2)
	m1.ExpiresAtUnixMs = time.Now().Add(time.Hour).UnixMilli()
	m2.ExpiresAtUnixMs = m1.ExpiresAtUnixMs
	e.srv.hangAt = 10 // the first download stalls

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	e.r.SetDesired(desired(t, 1, e.seal(m1, nil)))
	select {
	case <-e.srv.started:
	case <-time.After(shoaltest.Patience):
		t.Fatalf("the first download did not start within %s", shoaltest.Patience)
	}
	e.srv.mu.Lock()
	e.srv.failWith = []int{500} // the next download fails once, then works
	e.srv.mu.Unlock()
	e.r.SetDesired(desired(t, 2, e.seal(m2, nil)))

	deadline := time.After(shoaltest.Patience)
	for {
		select {
		case rs := <-reports:
			if rs.GetAppliedGeneration() == 2 {
				if ms := modelStatus(rs, "m"); ms.GetPhase() != shoalv1.Phase_PHASE_ACTIVE || ms.GetActive().GetVersion() != "2" {
					t.Errorf("generation 2 applied with model status %v", ms)
				}
				if v := e.serving("m"); v != "2" {
					t.Errorf("serving %q; want 2", v)
				}
				if reqs := e.srv.requests(); len(reqs) != 3 {
					t.Errorf("requests = %q; want the abandoned one, the failed one and the retry", reqs)
				}
				if got := e.r.State(); modelStatus(got, "m").GetActive().GetVersion() != "2" {
					t.Errorf("State() = %v", got)
				}
				return
			}
		case <-deadline:
			t.Fatalf("version 2 not active within %s; last state %v", shoaltest.Patience, e.r.State())
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
