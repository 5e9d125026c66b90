package monitor

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

var scheme = topics.New("")

var ctx = context.Background()

var errBoom = errors.New("boom")

// recorder is a Publisher that keeps what was published.
type recorder struct {
	mu     sync.Mutex
	msgs   []pubMsg
	fail   error                              // if set, every Publish fails with it
	before func(topic string, payload []byte) // if set, runs first in Publish
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
		return r.fail
	}
	r.msgs = append(r.msgs, pubMsg{topic, append([]byte(nil), payload...), retained})
	return nil
}

// acks decodes every Ack published.
func (r *recorder) acks(t *testing.T) []*shoalv1.Ack {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*shoalv1.Ack
	for _, m := range r.msgs {
		id, kind, err := scheme.Parse(m.topic)
		if err != nil || kind != topics.Ack {
			t.Fatalf("published on %s; want only acks", m.topic)
		}
		if m.retained {
			t.Errorf("ack on %s is retained", m.topic)
		}
		var a shoalv1.Ack
		if err := proto.Unmarshal(m.payload, &a); err != nil {
			t.Fatal(err)
		}
		if a.GetDeviceId() != id || a.GetSchemaVersion() != 1 || a.GetStream() != shoalv1.Stream_STREAM_TELEMETRY {
			t.Errorf("ack on %s = %v", m.topic, &a)
		}
		out = append(out, &a)
	}
	return out
}

// failingStore is a store whose Update fails while fail is set.
type failingStore struct {
	store.Store
	mu   sync.Mutex
	fail bool
}

func (f *failingStore) setFail(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = v
}

func (f *failingStore) Update(fn func(store.Tx) error) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errBoom
	}
	return f.Store.Update(fn)
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

type env struct {
	dir  string
	st   *failingStore
	pub  *recorder
	logs *capture
	mon  *Monitor
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), pub: &recorder{}, logs: &capture{}}
	e.open(t)
	t.Cleanup(func() { e.st.Close() })
	return e
}

func (e *env) open(t *testing.T) {
	t.Helper()
	st, err := badgerstore.Open(e.dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e.st = &failingStore{Store: st}
	e.mon = New(e.st, e.pub, scheme, slog.New(e.logs), nil)
}

// reopen closes the store and opens it again with a fresh Monitor, as a
// restarted control plane would.
func (e *env) reopen(t *testing.T) {
	t.Helper()
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.open(t)
}

// batch builds a batch of records first..last, each with preds
// predictions and errs errors.
func batch(id string, first, last, preds, errs uint64) *shoalv1.TelemetryBatch {
	b := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: id, FirstSeq: first, LastSeq: last}
	for s := first; s <= last; s++ {
		b.Records = append(b.Records, &shoalv1.TelemetryRecord{
			Seq: s, ModelName: "m1", ModelVersion: "1", Predictions: preds, Errors: errs,
			WindowStartUnixMs: int64(s) * 1000, WindowEndUnixMs: int64(s)*1000 + 999, LatencyP95Us: 1200,
		})
	}
	return b
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) send(t *testing.T, b *shoalv1.TelemetryBatch) {
	t.Helper()
	e.mon.HandleTelemetry(scheme.Device(b.GetDeviceId(), topics.Telemetry), marshal(t, b))
}

func (e *env) summary(t *testing.T, id string) DeviceSummary {
	t.Helper()
	s, err := e.mon.Summary(ctx, id)
	if err != nil {
		t.Fatalf("Summary(%q): %v", id, err)
	}
	if len(s.Devices) != 1 {
		t.Fatalf("Summary(%q) = %+v", id, s)
	}
	return s.Devices[0]
}
