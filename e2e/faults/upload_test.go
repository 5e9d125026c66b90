package faults

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestKillWhileUploading proves guarantees 1 and 4 (docs/RELIABILITY.md)
// under agent crashes: agents predicting and uploading are killed with
// SIGKILL again and again, each time at one of
//
//	telemetry-after-append  a record is in the outbox, not yet sent
//	                        (killed by the failpoint, kill@n)
//	upload-after-publish    a batch is published, its Ack not yet arrived
//	upload-after-ack        the Ack arrived, the records not yet deleted
//	sigkill                 a random moment while the last record is
//	                        sent, acked and deleted
//
// and restarted. At the upload points the failpoint pauses the sender
// (pause@n) and the test kills the process once its prediction round is
// complete, so that it knows exactly what the agent holds; predictions are
// made in rounds (one prediction, then wait until its record is appended),
// so no kill lands on a prediction that is only in memory (that window is
// guarantee 6's business, not this test's). At the end the control plane
// counts exactly the predictions made, one record per sequence number,
// nothing dropped, and its counters never went backwards.
func TestKillWhileUploading(t *testing.T) {
	s := mode()
	r := newRand(t)
	cp := StartControlPlane(t)
	cp.Watch(t)
	agents := make([]*Agent, s.chaosAgents)
	for i := range agents {
		agents[i] = NewAgent(t, cp, fmt.Sprintf("chaos-%d", i+1), AgentOptions{Window: 20 * time.Millisecond})
		agents[i].Start(t, "")
	}
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", agents...)
	for _, a := range agents {
		a.Stop(t)
	}

	start := time.Now()
	t.Run("agents", func(t *testing.T) {
		for i, a := range agents {
			seed := r.Uint64()
			t.Run(a.ID, func(t *testing.T) {
				t.Parallel()
				killWhileUploading(t, cp, a, s, rand.New(rand.NewPCG(seed, 1)), i)
			})
		}
	})
	if t.Failed() {
		return
	}
	total, err := cp.Client.Telemetry(cp.ctx(), "")
	if err != nil {
		t.Fatal(err)
	}
	made := 0
	for _, a := range agents {
		made += a.Made()
	}
	if total.Total.Predictions != uint64(made) || total.Total.DroppedRecords != 0 {
		t.Fatalf("control plane total %+v; want %d predictions, none dropped", total.Total, made)
	}
	t.Logf("%d agents × %d kills: %d predictions made, %d counted, %d records, 0 dropped, in %s",
		len(agents), s.chaosLives, made, total.Total.Predictions, total.Total.Records, time.Since(start).Round(time.Second))
}

// killWhileUploading kills and restarts agent a s.chaosLives times, at the
// points in turn (from offset), then checks its exact counts.
func killWhileUploading(t *testing.T, cp *ControlPlane, a *Agent, s suite, r *rand.Rand, offset int) {
	kinds := []string{"telemetry-after-append", "upload-after-publish", "upload-after-ack", "sigkill"}
	tally := map[string]int{}
	for life := range s.chaosLives {
		kind := kinds[(life+offset)%len(kinds)]
		before := a.Made()
		n := 1 + r.IntN(s.rounds)
		switch kind {
		case "telemetry-after-append":
			p := a.Start(t, fmt.Sprintf("telemetry-after-append=kill@%d", n))
			for i := 1; a.Round(t); i++ {
				if i >= n {
					t.Fatalf("%s: still running after %d appends; want killed at append %d", a.ID, i, n)
				}
			}
			if !p.Killed() || p.Hits(kind) != n {
				t.Fatalf("%s: exit %v after %d appends; want SIGKILL at append %d", a.ID, p.cmd.ProcessState, p.Hits(kind), n)
			}
		case "upload-after-publish", "upload-after-ack":
			p := a.Start(t, fmt.Sprintf("%s=pause@%d,telemetry-after-append=log", kind, n))
			// Each round is one record, published and acked after it is
			// appended: the n-th publish (ack) comes within a few rounds
			// after the n-th.
			for rounds := 0; p.Effect(kind) != "pause"; rounds++ {
				if rounds > n+100 {
					t.Fatalf("%s: no pause at %s hit %d after %d rounds (hits %d)", a.ID, kind, n, rounds, p.Hits(kind))
				}
				a.Round(t)
			}
			// The sender is frozen at the point; records made now queue
			// behind the batch it holds.
			for range r.IntN(3) {
				a.Round(t)
			}
			a.Kill(t)
		case "sigkill":
			a.Start(t, "telemetry-after-append=log")
			for range n {
				a.Round(t)
			}
			// The last record is being published, acked and deleted: kill
			// at a random moment of that (a fault's timing, not a wait).
			time.Sleep(time.Duration(r.Int64N(int64(4 * a.Window))))
			a.Kill(t)
		}
		tally[kind]++
		c, err := cp.Telemetry(a.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s life %d: killed at %s (n=%d) after %d predictions; control plane has %d of %d, highest seq %d",
			a.ID, life+1, kind, n, a.Made()-before, c.Predictions, a.Made(), c.HighestSeq)
	}

	// Restarted once more, the agent delivers what it holds; a clean stop
	// changes nothing.
	a.Start(t, "")
	cp.WaitExactTelemetry(t, a)
	c, err := cp.Telemetry(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Records != uint64(a.Made()) || c.HighestSeq != uint64(a.Made()) {
		t.Fatalf("%s: %d records up to seq %d for %d rounds; want one record and one sequence number per round", a.ID, c.Records, c.HighestSeq, a.Made())
	}
	a.Stop(t)
	cp.WaitExactTelemetry(t, a)
	t.Logf("%s: %d kills %v, %d predictions, exact", a.ID, s.chaosLives, tally, a.Made())
}
