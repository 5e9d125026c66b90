package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const dev = "dev-1"

var scheme = topics.New("")

func runAgent(t *testing.T, cfg Config) (*Agent, func() error) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop(); a.Close() })
	return a, stop
}

func decodeReported(p []byte) (*shoalv1.ReportedState, bool) {
	var rs shoalv1.ReportedState
	return &rs, proto.Unmarshal(p, &rs) == nil
}

func decodeStatus(p []byte) (*shoalv1.DeviceStatus, bool) {
	var st shoalv1.DeviceStatus
	return &st, proto.Unmarshal(p, &st) == nil
}

// TestAgentEndToEnd: enroll, connect, apply the retained desired state,
// serve predictions, send telemetry until acked, stop cleanly (offline
// status), then start again with the network gone and serve at once.
func TestAgentEndToEnd(t *testing.T) {
	broker := startBroker(t)
	cp := startCP(t, "tcp://"+broker.addr, "tok-1")
	model := modelBytes(t)
	if err := broker.Publish(scheme.Device(dev, topics.Desired), cp.desired("m", "1", model, 1, 7), true, 1); err != nil {
		t.Fatal(err)
	}
	status := broker.subscribe(t, scheme.Device(dev, topics.Status))
	reported := broker.subscribe(t, scheme.Device(dev, topics.Reported))
	telemetry := broker.subscribe(t, scheme.Device(dev, topics.Telemetry))

	dir := t.TempDir()
	cfg := Config{
		DataDir: dir, ServerURL: cp.URL, DeviceID: dev, EnrollToken: "tok-1",
		APIAddr: "127.0.0.1:0", TelemetryWindow: 100 * time.Millisecond, Profile: "test-board",
		Labels: map[string]string{"site": "berlin"}, Group: "pumps",
		HealthMinPredictions: 1, HealthMinTime: -1, // healthy after one prediction
		Logger: testLogger(t),
	}
	a, stop := runAgent(t, cfg)

	waitFor(t, status, "online status", func(p []byte) (bool, bool) {
		st, ok := decodeStatus(p)
		return true, ok && st.Online && st.DeviceId == dev
	})
	rs := waitFor(t, reported, "reported ACTIVE for generation 7", func(p []byte) (*shoalv1.ReportedState, bool) {
		rs, ok := decodeReported(p)
		return rs, ok && rs.GetAppliedGeneration() == 7 && rs.GetPhase() == shoalv1.Phase_PHASE_ACTIVE
	})
	if rs.GetProfile() != "test-board" || len(rs.GetModels()) != 1 || rs.GetModels()[0].GetActive().GetVersion() != "1" {
		t.Errorf("reported state = %v", rs)
	}
	if ms := rs.GetModels()[0]; ms.GetHealthy() || ms.GetActiveSinceUnixMs() == 0 {
		t.Errorf("model status before any prediction = %v; want not healthy, with active_since", ms)
	}
	if reqs := cp.enrollments(); len(reqs) != 1 || !strings.Contains(string(reqs[0]), `"labels":{"site":"berlin"}`) || !strings.Contains(string(reqs[0]), `"group":"pumps"`) {
		t.Errorf("enrollment requests = %q; want one with the labels and group", reqs)
	}

	// The identity is stored, private, and holds what enrollment returned.
	fi, err := os.Stat(filepath.Join(dir, identityFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("identity mode = %v; want 0600", fi.Mode().Perm())
	}
	id, ok, err := loadIdentity(dir)
	if err != nil || !ok || id.MQTTPassword != "pw-"+dev || id.ServerURL != cp.URL || id.BrokerURL != "tcp://"+broker.addr {
		t.Errorf("identity = %+v, %v, %v", id, ok, err)
	}

	out, err := predict(a.APIAddr(), "m")
	if err != nil {
		t.Fatalf("predict: %v", err)
	}
	if _, ok := out.Output("output_scalars"); !ok {
		t.Fatalf("predict: no output_scalars in %+v", out.Outputs)
	}
	waitFor(t, reported, "reported healthy after the prediction", func(p []byte) (bool, bool) {
		rs, ok := decodeReported(p)
		return true, ok && len(rs.GetModels()) == 1 && rs.GetModels()[0].GetHealthy()
	})

	// GET /metrics on the local API has the agent's own figures.
	_, metrics, err := get(a.APIAddr(), "/metrics")
	for _, line := range []string{"shoal_agent_mqtt_connected 1", "shoal_agent_models_loaded 1", "shoal_agent_predictions_total 1", "shoal_agent_outbox_records ", "shoal_agent_outbox_bytes ", "go_goroutines "} {
		if err != nil || !strings.Contains(metrics, "\n"+line) {
			t.Errorf("GET /metrics lacks %q (%v):\n%s", line, err, metrics)
		}
	}

	// Telemetry for that prediction arrives; the ack empties the outbox.
	batch := waitFor(t, telemetry, "a telemetry batch with the prediction", func(p []byte) (*shoalv1.TelemetryBatch, bool) {
		var b shoalv1.TelemetryBatch
		if proto.Unmarshal(p, &b) != nil {
			return nil, false
		}
		for _, r := range b.GetRecords() {
			if r.GetModelName() == "m" && r.GetPredictions() > 0 {
				return &b, true
			}
		}
		return nil, false
	})
	ack, _ := proto.Marshal(&shoalv1.Ack{SchemaVersion: 1, DeviceId: dev, Stream: shoalv1.Stream_STREAM_TELEMETRY, FirstSeq: batch.GetFirstSeq(), LastSeq: batch.GetLastSeq()})
	if err := broker.Publish(scheme.Device(dev, topics.Ack), ack, false, 1); err != nil {
		t.Fatal(err)
	}
	shoaltest.Eventually(t, "the acked records leave the outbox", func() error {
		for _, r := range a.outboxPending(t) {
			if r <= batch.GetLastSeq() {
				return fmt.Errorf("record %d is still pending; %d and before were acked", r, batch.GetLastSeq())
			}
		}
		return nil
	})

	// A clean stop leaves a retained offline status.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	p, ok := broker.retained(scheme.Device(dev, topics.Status))
	if st, _ := decodeStatus(p); !ok || st.Online {
		t.Errorf("retained status after Close = %v; want offline", st)
	}

	// Start again with no network at all: the model serves at once, from
	// disk, and telemetry queues in the outbox.
	broker.stop()
	cp.Close()
	cfg.EnrollToken = ""
	b, stop2 := runAgent(t, cfg)
	if _, err := predict(b.APIAddr(), "m"); err != nil {
		t.Fatalf("offline predict: %v", err)
	}
	if err := stop2(); err != nil {
		t.Fatalf("offline Run: %v", err)
	}
	if n := b.outbox.Len(); n == 0 {
		t.Error("the offline prediction left no telemetry in the outbox")
	}
	if err := b.Close(); err != nil {
		t.Errorf("offline Close: %v", err)
	}
}

// outboxPending returns the sequences still queued.
func (a *Agent) outboxPending(t *testing.T) []uint64 {
	t.Helper()
	recs, err := a.outbox.Pending(1000)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.GetSeq())
	}
	return seqs
}

func TestEnrollmentRefused(t *testing.T) {
	broker := startBroker(t)
	cp := startCP(t, "tcp://"+broker.addr, "right-token")
	dir := t.TempDir()
	a, err := New(Config{DataDir: dir, ServerURL: cp.URL, DeviceID: dev, EnrollToken: "wrong-token", APIAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refused the enrollment token") || !strings.Contains(err.Error(), "shoal token create") {
		t.Errorf("Run = %v; want a refused-token error saying what to do", err)
	}
	if strings.Contains(fmt.Sprint(err), "wrong-token") {
		t.Errorf("the error shows the token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, identityFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("identity written after a refused enrollment: %v", err)
	}
}

func TestEnrollErrors(t *testing.T) {
	for _, tc := range []struct {
		status  int
		body    string
		want    string
		refused bool
	}{
		{401, `{"error":{"code":"unauthorized","message":"token expired"}}`, "refused the enrollment token (token expired)", true},
		{409, `{"error":{"code":"conflict","message":"already enrolled"}}`, `device id "dev-1" is already enrolled`, true},
		{400, `{"error":{"code":"invalid","message":"bad id"}}`, "400 Bad Request: bad id", true},
		{503, `down for maintenance`, "503 Service Unavailable: down for maintenance", false},
		{200, `{"device_id":"someone-else"}`, `asked for device "dev-1", the control plane enrolled "someone-else"`, true},
		{200, `{"device_id":"dev-1","broker_url":"tcp://b:1883","trust_public_key_pem":"junk"}`, "the enrollment is unusable: trust_public_key_pem", true},
	} {
		t.Run(fmt.Sprint(tc.status, tc.want), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := enroll(context.Background(), srv.Client(), srv.URL, enrollment{DeviceID: dev, Token: "tok"})
			var refused *enrollError
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &refused) != tc.refused {
				t.Errorf("enroll = %v (refused %v); want %q (refused %v)", err, errors.As(err, &refused), tc.want, tc.refused)
			}
		})
	}
}

// TestEnrollSendsLabelsAndGroup: the enrollment request carries the
// device's labels and group, and leaves them out when there are none.
func TestEnrollSendsLabelsAndGroup(t *testing.T) {
	cp := startCP(t, "tcp://127.0.0.1:1", "")
	for _, tc := range []struct {
		name   string
		e      enrollment
		labels map[string]string // nil: no "labels" key
		group  *string           // nil: no "group" key
	}{
		{"both", enrollment{Labels: map[string]string{"site": "berlin", "tier": "edge", "empty": ""}, Group: "pumps"},
			map[string]string{"site": "berlin", "tier": "edge", "empty": ""}, ptr("pumps")},
		{"neither", enrollment{Labels: map[string]string{}}, nil, nil},
		{"group only", enrollment{Group: "g"}, nil, ptr("g")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp.mu.Lock()
			cp.token, cp.enrolled, cp.requests = "tok", map[string]bool{}, nil
			cp.mu.Unlock()
			tc.e.DeviceID, tc.e.Token, tc.e.Profile = dev, "tok", "board"
			if _, err := enroll(context.Background(), cp.Client(), cp.URL, tc.e); err != nil {
				t.Fatal(err)
			}
			reqs := cp.enrollments()
			if len(reqs) != 1 {
				t.Fatalf("%d enrollment requests", len(reqs))
			}
			var body map[string]json.RawMessage
			if err := json.Unmarshal(reqs[0], &body); err != nil {
				t.Fatal(err)
			}
			for k, want := range map[string]string{"token": `"tok"`, "device_id": `"` + dev + `"`, "profile": `"board"`} {
				if got := string(body[k]); got != want {
					t.Errorf("%s = %s; want %s", k, got, want)
				}
			}
			raw, has := body["labels"]
			var labels map[string]string
			if has {
				if err := json.Unmarshal(raw, &labels); err != nil {
					t.Fatalf("labels = %s: %v", raw, err)
				}
			}
			if has != (tc.labels != nil) || !maps.Equal(labels, tc.labels) {
				t.Errorf("labels = %s (present %v); want %v", raw, has, tc.labels)
			}
			raw, has = body["group"]
			switch {
			case tc.group == nil && has:
				t.Errorf("group = %s; want no group key", raw)
			case tc.group != nil && string(raw) != `"`+*tc.group+`"`:
				t.Errorf("group = %s; want %q", raw, *tc.group)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestNewChecksTheDataDirectory(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, "tcp://127.0.0.1:1", "")
	id := &identity{DeviceID: "pump-1", MQTTUsername: "pump-1", MQTTPassword: "pw", BrokerURL: "tcp://127.0.0.1:1",
		TopicPrefix: "shoal/v1", TrustPublicKeyPEM: string(cp.signer.PublicKeyPEM()), ServerURL: cp.URL}
	if err := storeIdentity(dir, id); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"other device", Config{DataDir: dir, DeviceID: "pump-2"}, `belongs to device "pump-1", but --device-id says "pump-2"`},
		{"no data dir", Config{}, "no data directory: pass --data-dir"},
		{"bad server", Config{DataDir: dir, ServerURL: "ftp://x"}, `server URL "ftp://x": want http(s)://host[:port]`},
		{"bad device id", Config{DataDir: dir, DeviceID: "a b"}, `--device-id: device id "a b" has ' '`},
		{"label without key", Config{DataDir: dir, Labels: map[string]string{"": "x"}}, "a label has an empty key"},
		{"label key with =", Config{DataDir: dir, Labels: map[string]string{"a=b": "x"}}, `label key "a=b" has '='`},
		{"not enrolled, no server", Config{DataDir: t.TempDir(), DeviceID: "d", EnrollToken: "t"}, "pass --server"},
		{"not enrolled, no id", Config{DataDir: t.TempDir(), ServerURL: "http://h", EnrollToken: "t"}, "pass --device-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg)
			if err == nil {
				a.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v; want an error containing %q", err, tc.want)
			}
		})
	}

	// A corrupt identity says what to do.
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "enroll again with a new token") {
		t.Errorf("New with a corrupt identity = %v", err)
	}
}

func TestSecretRedacts(t *testing.T) {
	cfg := Config{DataDir: "/d", EnrollToken: "hunter2"}
	js, _ := json.Marshal(cfg)
	for _, s := range []string{
		fmt.Sprintf("%v %+v %#v %s %q %x", cfg, cfg, cfg, cfg.EnrollToken, cfg.EnrollToken, cfg.EnrollToken),
		string(js),
	} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, fmt.Sprintf("%x", "hunter2")) {
			t.Errorf("secret leaked: %s", s)
		}
	}
	if cfg.EnrollToken.Reveal() != "hunter2" {
		t.Error("Reveal lost the value")
	}
	if Secret("").String() != "" {
		t.Error("an empty secret should print empty, so that a missing token is visible")
	}
}

// TestCorruptModelIsDownloadedAgain: a model file damaged on disk is not
// served at start, and the desired state brings it back.
func TestCorruptModelIsDownloadedAgain(t *testing.T) {
	broker := startBroker(t)
	cp := startCP(t, "tcp://"+broker.addr, "tok")
	if err := broker.Publish(scheme.Device(dev, topics.Desired), cp.desired("m", "1", modelBytes(t), 1, 1), true, 1); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: t.TempDir(), ServerURL: cp.URL, DeviceID: dev, EnrollToken: "tok", APIAddr: "127.0.0.1:0", Logger: testLogger(t)}
	a, stop := runAgent(t, cfg)
	shoaltest.Eventually(t, "the model serves", func() error { _, err := predict(a.APIAddr(), "m"); return err })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, path, ok := a.store.Active("m")
	if err := a.Close(); err != nil || !ok {
		t.Fatalf("Close: %v (active %v)", err, ok)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	cfg.EnrollToken = ""
	a2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if names := a2.models.Names(); len(names) != 0 {
		t.Errorf("serving %v from a corrupt file", names)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a2.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		a2.Close()
	}()
	shoaltest.Eventually(t, "the model is downloaded again and serves", func() error {
		_, err := predict(a2.APIAddr(), "m")
		return err
	})
}
