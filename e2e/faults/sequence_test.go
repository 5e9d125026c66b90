package faults

import (
	"errors"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// TestSequenceAcrossRestarts proves guarantee 4 (docs/RELIABILITY.md): a
// restarted agent rebuilds its queue from Badger and continues its
// sequence numbers, and the control plane de-duplicates. Every prediction
// is a round (one record, one sequence number), so after each restart the
// control plane's highest_seq must be exactly the number of rounds so far,
// with one record per sequence number: a reused number would be taken for a
// duplicate and its predictions would be missing; a lost queue would leave
// a gap. The restarts: a clean stop, a SIGKILL with a backlog queued behind
// a published but unacknowledged batch, and a SIGKILL right after a round.
func TestSequenceAcrossRestarts(t *testing.T) {
	cp := StartControlPlane(t)
	cp.Watch(t)
	a := NewAgent(t, cp, "seq", AgentOptions{Window: 20 * time.Millisecond})
	a.Start(t, "telemetry-after-append=log")
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", a)

	rounds := func(n int) {
		t.Helper()
		for range n {
			a.Round(t)
		}
	}
	expect := func(what string) {
		t.Helper()
		cp.WaitExactTelemetry(t, a)
		c, err := cp.Telemetry(a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c.HighestSeq != uint64(a.Made()) {
			t.Fatalf("%s: highest seq %d after %d rounds; want one sequence number per round", what, c.HighestSeq, a.Made())
		}
		t.Logf("%s: highest seq %d, %d records, %d predictions", what, c.HighestSeq, c.Records, c.Predictions)
	}

	rounds(5)
	expect("first run")

	a.Stop(t)
	a.Start(t, "telemetry-after-append=log")
	rounds(5)
	expect("after a clean restart")

	// The sender stops right after its first publish; five more records
	// queue behind that batch, and none of them can reach the control
	// plane before the kill.
	a.Stop(t)
	p := a.Start(t, "upload-after-publish=pause@1,telemetry-after-append=log")
	rounds(1)
	shoaltest.Eventually(t, "sender paused after its first publish", func() error {
		if p.Effect("upload-after-publish") != "pause" {
			return errors.New("no pause yet")
		}
		return nil
	})
	rounds(5)
	c, err := cp.Telemetry(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.HighestSeq > uint64(a.Made()-5) {
		t.Fatalf("highest seq %d reached the control plane while the sender was frozen; at most %d could", c.HighestSeq, a.Made()-5)
	}
	a.Kill(t)
	a.Start(t, "telemetry-after-append=log")
	rounds(5)
	expect("after a kill with a backlog")

	a.Kill(t)
	a.Start(t, "telemetry-after-append=log")
	rounds(5)
	expect("after a kill")

	a.Stop(t)
	expect("after the last clean stop")
}
