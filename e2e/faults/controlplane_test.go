package faults

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// TestControlPlaneRestarts proves guarantees 7 and 1 (docs/RELIABILITY.md)
// across control-plane restarts: while two agents keep predicting, the
// control plane is restarted cleanly (SIGTERM, which also restarts its
// embedded broker), stopped for an outage (10 s short, 2 min full), and
// killed with SIGKILL and started again (once short, three times full),
// always on the same data directory and ports. Every prediction succeeds throughout; the desired state
// deployed before the restarts is still what the control plane holds and
// what the agents report; a device that was offline since before that
// deploy comes back and converges on it; and the control plane counts
// exactly the predictions made, nothing dropped, its counters never going
// backwards.
func TestControlPlaneRestarts(t *testing.T) {
	s := mode()
	cp := StartControlPlane(t)
	cp.Watch(t)
	online := []*Agent{NewAgent(t, cp, "cp-1", AgentOptions{}), NewAgent(t, cp, "cp-2", AgentOptions{})}
	offline := NewAgent(t, cp, "cp-offline", AgentOptions{})
	all := append([]*Agent{offline}, online...)
	for _, a := range all {
		a.Start(t, "")
	}
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", all...)
	offline.MustPredict(t, 3)
	cp.WaitExactTelemetry(t, offline)
	offline.Stop(t)

	// v2 is deployed to every device, the offline one included.
	cp.Push(t, "clf", "2", classifier(t, 2, 8))
	cp.Deploy(t, "clf", "2")
	cp.WaitActive(t, "clf", "2", online...)

	load := startLoad(online)
	desired := func(when string) {
		t.Helper()
		shoaltest.Eventually(t, "desired state "+when, func() error {
			for _, a := range all {
				m, err := cp.Model(a.ID, "clf")
				if err != nil {
					return err
				}
				if m.DesiredVersion != "2" {
					t.Fatalf("%s: desired version %q %s; want 2, deployed before", a.ID, m.DesiredVersion, when)
				}
				if a != offline && (m.ActiveVersion != "2" || m.Phase != "active") {
					return fmt.Errorf("%s: active %q phase %q", a.ID, m.ActiveVersion, m.Phase)
				}
			}
			return nil
		})
	}

	start := time.Now()
	cp.Stop(t)
	cp.Start(t)
	desired("after a clean restart")
	t.Logf("clean restart: back in %s; %d predictions so far", time.Since(start).Round(time.Millisecond), load.made())

	cp.Stop(t)
	before := load.made()
	outage := time.NewTimer(s.outage) // the fault: the control plane stays away this long
	<-outage.C
	during := load.made() - before
	if during == 0 {
		t.Fatalf("no prediction succeeded during the %s outage", s.outage)
	}
	for _, a := range online {
		c, err := cp.Telemetry(a.ID)
		if err == nil {
			t.Fatalf("the control plane answered during its outage: %+v", c)
		}
	}
	cp.Start(t)
	desired("after an outage")
	t.Logf("outage of %s: %d predictions made meanwhile, all queued in the outboxes", s.outage, during)

	for i := range s.cpCrashes {
		// Crashes in quick succession: agents are still backing off from
		// the last one.
		cp.Kill(t)
		cp.Start(t)
		desired(fmt.Sprintf("after SIGKILL %d", i+1))
	}

	offline.Start(t, "")
	cp.WaitActive(t, "clf", "2", offline)
	if v, err := offline.Predict(); err != nil || v != "2" {
		t.Fatalf("%s after coming back: version %q, %v; want 2", offline.ID, v, err)
	}

	if failed := load.stop(); failed != nil {
		t.Fatalf("a prediction failed while the control plane restarted: %v", failed)
	}
	// Agents reconnect with backoff (at most 30 s between attempts).
	cp.WaitExactTelemetry(t, all...)
	for _, a := range all {
		a.Stop(t)
	}
	cp.WaitExactTelemetry(t, all...)
	total, err := cp.Client.Telemetry(cp.ctx(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d predictions made, %d counted, %d dropped; %s in all", load.made()+offline.Made(), total.Total.Predictions, total.Total.DroppedRecords, time.Since(start).Round(time.Second))
}

// load keeps agents predicting, each at most every 20 ms, until stopped.
type load struct {
	n    atomic.Int64
	quit chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error // the first failed prediction
}

func startLoad(agents []*Agent) *load {
	l := &load{quit: make(chan struct{})}
	for _, a := range agents {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			pace := time.NewTicker(20 * time.Millisecond)
			defer pace.Stop()
			for {
				select {
				case <-l.quit:
					return
				case <-pace.C:
				}
				if _, err := a.Predict(); err != nil {
					l.mu.Lock()
					if l.err == nil {
						l.err = fmt.Errorf("%s: %w", a.ID, err)
					}
					l.mu.Unlock()
					continue
				}
				l.n.Add(1)
			}
		}()
	}
	return l
}

func (l *load) made() int { return int(l.n.Load()) }

// stop ends the load and returns the first failure, if any.
func (l *load) stop() error {
	close(l.quit)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
