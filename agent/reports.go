package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/lograte"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// publisher sends a payload on a topic (QoS 1); *link.Link satisfies it.
type publisher interface {
	Publish(topic string, payload []byte, retained bool) error
}

// reportRetry is how long to wait after a failed publish of the reported
// state before trying again while connected.
const reportRetry = 5 * time.Second

// reportPublisher publishes the reconciler's latest reported state,
// retained, whenever it changes and after every reconnect (a restarted
// broker may have lost the retained copy). Only the latest state matters,
// so Set never blocks and overwrites what has not been sent yet.
type reportPublisher struct {
	pub   publisher
	topic string
	log   *slog.Logger
	logs  *lograte.Limiter

	mu        sync.Mutex
	latest    *shoalv1.ReportedState
	dirty     bool
	connected bool
	wake      chan struct{}
}

func newReportPublisher(pub publisher, topic string, log *slog.Logger) *reportPublisher {
	return &reportPublisher{pub: pub, topic: topic, log: log, logs: lograte.New(time.Minute, 1, nil), wake: make(chan struct{}, 1)}
}

// Set records a new reported state (the reconciler's Reporter).
func (p *reportPublisher) Set(rs *shoalv1.ReportedState) {
	p.mu.Lock()
	p.latest, p.dirty = rs, true
	p.mu.Unlock()
	p.signal()
}

// SetConnected tells the publisher whether the link is up; on up it
// publishes the latest state again.
func (p *reportPublisher) SetConnected(up bool) {
	p.mu.Lock()
	p.connected = up
	if up {
		p.dirty = true
	}
	p.mu.Unlock()
	p.signal()
}

func (p *reportPublisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx is done.
func (p *reportPublisher) Run(ctx context.Context) error {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-retry.C:
		}
		p.mu.Lock()
		rs, send := p.latest, p.dirty && p.connected && p.latest != nil
		p.dirty = false
		p.mu.Unlock()
		if !send {
			continue
		}
		payload, err := proto.Marshal(rs)
		if err == nil {
			err = p.pub.Publish(p.topic, payload, true)
		}
		if err != nil {
			p.logs.Log(p.log, slog.LevelWarn, "", "could not publish the reported state; will retry", "err", err)
			p.mu.Lock()
			if p.latest == rs {
				p.dirty = true
			}
			p.mu.Unlock()
			retry.Reset(reportRetry)
		}
	}
}
