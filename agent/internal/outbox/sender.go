package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/failpoint"
	"github.com/shoalfleet/shoal/internal/lograte"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

const (
	// DefaultBatchSize is SenderConfig.BatchSize when 0.
	DefaultBatchSize = 100
	// DefaultAckTimeout is SenderConfig.AckTimeout when 0.
	DefaultAckTimeout = 10 * time.Second
	// SchemaVersion is the TelemetryBatch and Ack schema this agent speaks.
	SchemaVersion = 1
	// maxQueuedAcks bounds acks waiting for Run; more are dropped (the
	// batch is resent and acked again, so a lost ack costs bandwidth only).
	maxQueuedAcks = 64
	// MaxAckBytes bounds an ack payload HandleAckPayload decodes.
	MaxAckBytes = 1 << 10
)

// Publisher sends a payload on an MQTT topic (QoS 1). The link satisfies it.
type Publisher interface {
	Publish(topic string, payload []byte, retained bool) error
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	DeviceID string
	Topic    string // the device's telemetry topic
	// BatchSize is the most records per batch; 0 means DefaultBatchSize.
	BatchSize int
	// AckTimeout is how long to wait for the Ack of a batch before sending
	// it again, and how long to wait after a failed publish; 0 means
	// DefaultAckTimeout.
	AckTimeout time.Duration
	// Now stamps sent_at; nil means time.Now.
	Now func() time.Time
}

// Sender publishes the records of an Outbox as TelemetryBatches, one batch
// at a time: it waits for the control plane's Ack of a batch (which deletes
// its records) before sending the next, and sends it again if no Ack comes
// within AckTimeout or the link reconnects. Keeping one batch in flight
// keeps the broker's in-flight window small. The control plane
// de-duplicates resent records by sequence.
type Sender struct {
	o    *Outbox
	cfg  SenderConfig
	pub  Publisher
	log  *slog.Logger
	logs *lograte.Limiter // keyed by message: see logLimited

	wake chan struct{} // capacity 1: something for Run to look at

	mu        sync.Mutex
	connected bool
	connGen   uint64 // counts changes of connected, so a reconnect is seen
	acks      []*shoalv1.Ack
	acked     chan struct{} // closed (and replaced) when an ack was applied
}

// NewSender returns a Sender of o's records. It starts disconnected: call
// SetConnected(true) when the link is up. A nil log discards.
func NewSender(o *Outbox, cfg SenderConfig, pub Publisher, log *slog.Logger) *Sender {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{o: o, cfg: cfg, pub: pub, log: log, logs: lograte.New(logEvery, 16, cfg.Now), wake: make(chan struct{}, 1), acked: make(chan struct{})}
}

// logLimited logs msg at level at most once per logEvery.
func (s *Sender) logLimited(level slog.Level, msg string, args ...any) {
	s.logs.Log(s.log, level, msg, msg, args...)
}

func (s *Sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Notify tells the sender that records were appended.
func (s *Sender) Notify() { s.signal() }

// SetConnected tells the sender whether the link is up. On every change to
// up, the batch in flight (if any) is sent again at once: its ack may have
// been lost with the old session.
func (s *Sender) SetConnected(up bool) {
	s.mu.Lock()
	if s.connected != up {
		s.connected = up
		s.connGen++
	}
	s.mu.Unlock()
	s.signal()
}

// HandleAck queues an Ack from the control plane for Run. Acks for another
// device or stream, or of a newer schema, are ignored. It never blocks.
func (s *Sender) HandleAck(a *shoalv1.Ack) {
	switch {
	case a == nil:
		return
	case a.GetDeviceId() != s.cfg.DeviceID:
		s.logLimited(slog.LevelWarn, "ignored an ack for another device", "device_id", a.GetDeviceId())
		return
	case a.GetStream() != shoalv1.Stream_STREAM_TELEMETRY:
		s.logLimited(slog.LevelDebug, "ignored an ack for another stream", "stream", a.GetStream().String())
		return
	case a.GetSchemaVersion() > SchemaVersion:
		s.logLimited(slog.LevelWarn, "ignored an ack of a newer schema", "schema_version", a.GetSchemaVersion())
		return
	}
	s.mu.Lock()
	if len(s.acks) >= maxQueuedAcks {
		s.mu.Unlock()
		s.logLimited(slog.LevelWarn, "too many acks waiting; dropped one", "queued", maxQueuedAcks)
		return
	}
	s.acks = append(s.acks, a)
	s.mu.Unlock()
	s.signal()
}

// HandleAckPayload decodes an Ack payload and passes it to HandleAck.
func (s *Sender) HandleAckPayload(p []byte) error {
	if len(p) > MaxAckBytes {
		return fmt.Errorf("ack payload is %d bytes; the limit is %d", len(p), MaxAckBytes)
	}
	a := &shoalv1.Ack{}
	if err := proto.Unmarshal(p, a); err != nil {
		return fmt.Errorf("decode ack: %w", err)
	}
	s.HandleAck(a)
	return nil
}

// Flush asks for a send now and waits until every queued record is acked
// (so Run must be running and the link up for it to succeed), or until ctx
// is done.
func (s *Sender) Flush(ctx context.Context) error {
	s.signal()
	for {
		s.mu.Lock()
		acked := s.acked
		s.mu.Unlock()
		if s.o.Len() == 0 {
			return nil
		}
		select {
		case <-acked:
		case <-ctx.Done():
			return fmt.Errorf("flush telemetry: %d records still unacked: %w", s.o.Len(), ctx.Err())
		}
	}
}

// flight is the batch awaiting its ack.
type flight struct{ first, last uint64 }

// Run sends batches until ctx is done, then returns nil. Run it once.
func (s *Sender) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		inflight *flight // nil when no batch awaits an ack
		backoff  bool    // a publish failed; wait for the timer
		seenGen  uint64
	)
	for {
		s.mu.Lock()
		up, gen, acks := s.connected, s.connGen, s.acks
		s.acks = nil
		s.mu.Unlock()

		if len(acks) > 0 {
			for _, a := range acks {
				s.apply(a)
			}
			// The batch is done once none of it is queued, whether one
			// ack covered it or several did in parts.
			if inflight != nil {
				if left, err := s.o.AnyIn(inflight.first, inflight.last); err == nil && !left {
					inflight = nil
					timer.Stop()
				}
			}
		}
		if gen != seenGen {
			// Down, or up again: nothing is in flight on this session.
			seenGen, inflight, backoff = gen, nil, false
			timer.Stop()
		}
		if up && inflight == nil && !backoff {
			f, err := s.send()
			switch {
			case err != nil:
				s.logLimited(slog.LevelWarn, "telemetry not sent; will retry", "retry_in", s.cfg.AckTimeout.String(), "err", err)
				backoff = true
				timer.Reset(s.cfg.AckTimeout)
			case f != nil:
				inflight = f
				timer.Reset(s.cfg.AckTimeout)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
			if inflight != nil {
				s.log.Debug("no ack for telemetry batch; sending again", "first_seq", inflight.first, "last_seq", inflight.last, "after", s.cfg.AckTimeout.String())
			}
			inflight, backoff = nil, false
		}
	}
}

// send publishes the oldest pending records; it returns nil, nil when there
// are none.
func (s *Sender) send() (*flight, error) {
	recs, err := s.o.Pending(s.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, nil
	}
	b := &shoalv1.TelemetryBatch{
		SchemaVersion: SchemaVersion,
		DeviceId:      s.cfg.DeviceID,
		FirstSeq:      recs[0].Seq,
		LastSeq:       recs[len(recs)-1].Seq,
		Records:       recs,
		Dropped:       s.o.TakeDropReport(),
		SentAtUnixMs:  s.cfg.Now().UnixMilli(),
	}
	payload, err := proto.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode telemetry batch: %w", err)
	}
	if err := s.pub.Publish(s.cfg.Topic, payload, false); err != nil {
		return nil, fmt.Errorf("publish telemetry batch %d..%d: %w", b.FirstSeq, b.LastSeq, err)
	}
	failpoint.Hit(failpoint.UploadAfterPublish)
	return &flight{b.FirstSeq, b.LastSeq}, nil
}

// apply deletes the records an ack names.
func (s *Sender) apply(a *shoalv1.Ack) {
	first, last := a.GetFirstSeq(), a.GetLastSeq()
	if first > last || last > s.o.LastSeq() {
		s.logLimited(slog.LevelWarn, "ignored an ack for records never sent", "first_seq", first, "last_seq", last, "last_assigned", s.o.LastSeq())
		return
	}
	failpoint.Hit(failpoint.UploadAfterAck)
	if err := s.o.Ack(first, last); err != nil {
		if !errors.Is(err, ErrClosed) {
			s.logLimited(slog.LevelError, "cannot delete acked telemetry", "err", err)
		}
		return
	}
	s.mu.Lock()
	close(s.acked)
	s.acked = make(chan struct{})
	s.mu.Unlock()
}
