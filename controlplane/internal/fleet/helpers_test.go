package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

var scheme = topics.New("")

var ctx = context.Background()

// recorder is a Publisher that keeps what was published; fail, if set,
// decides which publishes fail.
type recorder struct {
	mu   sync.Mutex
	msgs []pubMsg
	fail func(topic string) error
	// before, if set, runs at the start of every Publish.
	before func(topic string, payload []byte)
}

type pubMsg struct {
	topic    string
	payload  []byte
	retained bool
}

func (r *recorder) Publish(topic string, payload []byte, retained bool) error {
	if r.before != nil {
		r.before(topic, payload)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(topic); err != nil {
			return err
		}
	}
	r.msgs = append(r.msgs, pubMsg{topic, append([]byte(nil), payload...), retained})
	return nil
}

func (r *recorder) all() []pubMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pubMsg(nil), r.msgs...)
}

// last returns the last message published on topic.
func (r *recorder) last(t *testing.T, topic string) pubMsg {
	t.Helper()
	msgs := r.all()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].topic == topic {
			return msgs[i]
		}
	}
	t.Fatalf("nothing published on %s", topic)
	return pubMsg{}
}

// capture is a slog.Handler that keeps records.
type capture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func (c *capture) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.recs {
		if strings.Contains(r.Message, msg) {
			n++
		}
	}
	return n
}

func openStore(t *testing.T, dir string) store.Store {
	t.Helper()
	st, err := badgerstore.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// env bundles a Service with its store, publisher, clock and logs.
type env struct {
	dir  string
	st   store.Store
	pub  *recorder
	clk  *shoaltest.Clock
	logs *capture
	svc  *Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), pub: &recorder{}, clk: new(shoaltest.Clock), logs: &capture{}}
	e.st = openStore(t, e.dir)
	t.Cleanup(func() { e.st.Close() })
	e.svc = New(e.st, e.pub, scheme, slog.New(e.logs), e.clk.Now)
	return e
}

// reopen closes the store and opens it again with a fresh Service, as a
// restarted control plane would.
func (e *env) reopen(t *testing.T) {
	t.Helper()
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = openStore(t, e.dir)
	e.pub = &recorder{}
	e.svc = New(e.st, e.pub, scheme, slog.New(e.logs), e.clk.Now)
}

// enroll enrolls a device and returns its password.
func (e *env) enroll(t *testing.T, id string) string {
	t.Helper()
	tok, err := e.svc.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: id, AgentVersion: "0.1.0", Profile: "rpi4"})
	if err != nil {
		t.Fatalf("enroll %s: %v", id, err)
	}
	return cred.Password
}

var testSigner = func() *trust.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	s, err := trust.NewSigner(k)
	if err != nil {
		panic(err)
	}
	return s
}()

// envelope signs a manifest for model/version, as the registry would.
func envelope(t *testing.T, model, version string) []byte {
	t.Helper()
	m := &shoalv1.DeploymentManifest{
		SchemaVersion: 1, ModelName: model, ModelVersion: version,
		Artifact:        &shoalv1.Artifact{Sha256: strings.Repeat("ab", 32), Size: 10, Url: "/v1/artifacts/x"},
		ReleaseSequence: 1, ExpiresAtUnixMs: 1 << 50,
	}
	payload, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	env, err := testSigner.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func wantCode(t *testing.T, err error, code shoalerr.Code, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want %s", code)
	}
	if c := shoalerr.CodeOf(err); c != code {
		t.Fatalf("err = %v (code %s); want code %s", err, c, code)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("err = %q; want it to say %q", err, text)
	}
}

var errBoom = errors.New("broker down")
