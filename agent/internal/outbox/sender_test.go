package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/shoaltest"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const (
	dev   = "dev-1"
	topic = "shoal/v1/d/dev-1/telemetry"
	wait  = 10 * time.Second // for things that must happen promptly
)

// fakePub records published batches; it fails the next fails publishes.
type fakePub struct {
	mu      sync.Mutex
	fails   int // publishes still to fail
	failed  int // publishes failed
	batches chan *shoalv1.TelemetryBatch
	t       testing.TB
}

func newPub(t testing.TB) *fakePub {
	return &fakePub{batches: make(chan *shoalv1.TelemetryBatch, 100), t: t}
}

func (p *fakePub) Publish(tp string, payload []byte, retained bool) error {
	p.mu.Lock()
	fail := p.fails > 0
	if fail {
		p.fails--
		p.failed++
	}
	p.mu.Unlock()
	if fail {
		return errors.New("offline")
	}
	if tp != topic || retained {
		p.t.Errorf("Publish(%q, retained=%v)", tp, retained)
	}
	b := &shoalv1.TelemetryBatch{}
	if err := proto.Unmarshal(payload, b); err != nil {
		p.t.Errorf("payload: %v", err)
	}
	p.batches <- b
	return nil
}

// failNext has the next n publishes fail.
func (p *fakePub) failNext(n int) {
	p.mu.Lock()
	p.fails = n
	p.mu.Unlock()
}

// failures returns how many publishes failed.
func (p *fakePub) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *fakePub) next(t *testing.T) *shoalv1.TelemetryBatch {
	t.Helper()
	select {
	case b := <-p.batches:
		return b
	case <-time.After(wait):
		t.Fatal("no batch published")
		return nil
	}
}

var sentAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// start runs a sender over a fresh outbox and returns both; the sender
// stops when the test ends.
func start(t *testing.T, opts Options, cfg SenderConfig) (*Outbox, *Sender, *fakePub) {
	t.Helper()
	o := openAt(t, t.TempDir(), opts)
	pub := newPub(t)
	cfg.DeviceID, cfg.Topic = dev, topic
	cfg.Now = func() time.Time { return sentAt }
	s := NewSender(o, cfg, pub, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		o.Close()
	})
	return o, s, pub
}

func ack(first, last uint64) *shoalv1.Ack {
	return &shoalv1.Ack{SchemaVersion: 1, DeviceId: dev, Stream: shoalv1.Stream_STREAM_TELEMETRY, FirstSeq: first, LastSeq: last}
}

func wantBatch(t *testing.T, b *shoalv1.TelemetryBatch, first, last uint64) {
	t.Helper()
	if b.FirstSeq != first || b.LastSeq != last || len(b.Records) != int(last-first+1) ||
		b.Records[0].Seq != first || b.Records[len(b.Records)-1].Seq != last {
		t.Fatalf("batch %d..%d with %d records; want %d..%d", b.FirstSeq, b.LastSeq, len(b.Records), first, last)
	}
}

func TestSenderSendsBatchesOneAtATime(t *testing.T) {
	o, s, pub := start(t, Options{}, SenderConfig{BatchSize: 100, AckTimeout: time.Hour})
	appendN(t, o, 1, 250)
	s.Notify()
	s.SetConnected(true)

	b := pub.next(t)
	wantBatch(t, b, 1, 100)
	if b.SchemaVersion != 1 || b.DeviceId != dev || b.SentAtUnixMs != sentAt.UnixMilli() || b.Dropped != nil {
		t.Fatalf("batch header = %v", b)
	}
	if r := b.Records[0]; r.ModelName != "mnist" || r.Predictions != 10 {
		t.Fatalf("record = %v", r)
	}
	s.HandleAck(ack(1, 100))
	wantBatch(t, pub.next(t), 101, 200)
	// A duplicate of the last ack must not count as the ack of 101..200:
	// if it did, the next batch would be 101..200 again instead of 201..250.
	s.HandleAck(ack(1, 100))
	s.HandleAck(ack(101, 200))
	wantBatch(t, pub.next(t), 201, 250)

	// A context done before Flush starts: records are unacked, so Flush
	// returns its error, not nil.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Flush(ctx); err == nil {
		t.Fatal("Flush returned with records unacked")
	}
	flushed := make(chan error)
	go func() { flushed <- s.Flush(context.Background()) }()
	if payload, err := proto.Marshal(ack(201, 250)); err != nil {
		t.Fatal(err)
	} else if err := s.HandleAckPayload(payload); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-flushed:
		if err != nil || o.Len() != 0 {
			t.Fatalf("Flush = %v with %d records left", err, o.Len())
		}
	case <-time.After(wait):
		t.Fatal("Flush did not return after the last ack")
	}
	if err := s.HandleAckPayload([]byte{0xff}); err == nil {
		t.Error("garbage ack payload accepted")
	}
}

func TestSenderResendsWhenTheAckIsLost(t *testing.T) {
	o, s, pub := start(t, Options{}, SenderConfig{AckTimeout: 30 * time.Millisecond})
	appendN(t, o, 1, 3)
	s.SetConnected(true)
	wantBatch(t, pub.next(t), 1, 3)
	// No ack: the same batch again after AckTimeout.
	wantBatch(t, pub.next(t), 1, 3)
	s.HandleAck(ack(1, 3))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSenderResendsOnReconnect(t *testing.T) {
	o, s, pub := start(t, Options{}, SenderConfig{AckTimeout: time.Hour})
	appendN(t, o, 1, 2)
	s.SetConnected(true)
	wantBatch(t, pub.next(t), 1, 2)
	s.SetConnected(false)
	s.SetConnected(true)
	wantBatch(t, pub.next(t), 1, 2) // only the reconnect can cause this
}

func TestSenderIgnoresAcksItCannotUse(t *testing.T) {
	o, s, pub := start(t, Options{}, SenderConfig{BatchSize: 2, AckTimeout: time.Hour})
	appendN(t, o, 1, 4)
	s.SetConnected(true)
	wantBatch(t, pub.next(t), 1, 2)
	for _, a := range []*shoalv1.Ack{
		nil,
		{SchemaVersion: 1, DeviceId: "other", Stream: shoalv1.Stream_STREAM_TELEMETRY, FirstSeq: 1, LastSeq: 2},
		{SchemaVersion: 1, DeviceId: dev, Stream: shoalv1.Stream_STREAM_STATS, FirstSeq: 1, LastSeq: 2},
		{SchemaVersion: 2, DeviceId: dev, Stream: shoalv1.Stream_STREAM_TELEMETRY, FirstSeq: 1, LastSeq: 2},
		ack(2, 1),   // reversed
		ack(1, 999), // records never assigned
	} {
		s.HandleAck(a)
	}
	// Acks are applied in order: once this one moves the sender on, the
	// ones above have been looked at.
	s.HandleAck(ack(1, 1))
	s.HandleAck(ack(2, 2))
	wantBatch(t, pub.next(t), 3, 4)
	if o.Len() != 2 {
		t.Fatalf("Len = %d; want 2 (only 1 and 2 acked)", o.Len())
	}
}

func TestSenderRetriesAFailedPublish(t *testing.T) {
	o, s, pub := start(t, Options{}, SenderConfig{AckTimeout: 20 * time.Millisecond})
	pub.failNext(3)
	appendN(t, o, 1, 1)
	s.SetConnected(true)
	// The batch comes out of the fourth attempt.
	wantBatch(t, pub.next(t), 1, 1)
	if n := pub.failures(); n != 3 {
		t.Fatalf("%d failed publishes before the batch; want 3", n)
	}
}

func TestSenderCarriesTheDropReport(t *testing.T) {
	size := int64(proto.Size(record(1))) + 2
	o, s, pub := start(t, Options{MaxBytes: 3 * size}, SenderConfig{BatchSize: 2, AckTimeout: time.Hour})
	appendN(t, o, 1, 5) // drops 1, 2
	s.SetConnected(true)
	b := pub.next(t)
	wantBatch(t, b, 3, 4)
	want := &shoalv1.DropReport{Records: 2, FirstSeq: 1, LastSeq: 2,
		FromUnixMs: record(1).WindowStartUnixMs, ToUnixMs: record(2).WindowEndUnixMs}
	if !proto.Equal(b.Dropped, want) {
		t.Fatalf("dropped = %v; want %v", b.Dropped, want)
	}
	s.HandleAck(ack(3, 4))
	b = pub.next(t)
	wantBatch(t, b, 5, 5)
	if b.Dropped != nil {
		t.Fatalf("acked drop report sent again: %v", b.Dropped)
	}
}

func TestSenderStaysQuietWhileDisconnected(t *testing.T) {
	o, s, pub := start(t, Options{}, SenderConfig{AckTimeout: time.Millisecond})
	appendN(t, o, 1, 3)
	s.Notify()
	// Run applies acks, then sends if it may, in turn: once it has applied
	// the second ack it has been through a whole turn after the Notify,
	// one that would have published if it did while disconnected.
	for _, seq := range []uint64{3, 2} {
		s.HandleAck(ack(seq, seq))
		shoaltest.Eventually(t, fmt.Sprintf("the ack of %d applied", seq), func() error {
			if left, err := o.AnyIn(seq, seq); err != nil || left {
				return fmt.Errorf("record %d still queued (%v)", seq, err)
			}
			return nil
		})
	}
	select {
	case b := <-pub.batches:
		t.Fatalf("published while disconnected: %v", b)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush while disconnected = %v", err)
	}
	s.SetConnected(true)
	wantBatch(t, pub.next(t), 1, 1)
}
