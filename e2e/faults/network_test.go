package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/e2e/e2etest"
	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// TestLinkCut cuts the agents' MQTT link (a TCP proxy between them and the
// broker drops every connection and refuses new ones) for an outage while
// they keep predicting, and deploys a new version during the cut. Inference
// never fails; after the link returns the agents converge on the new
// version and the control plane's counts are exact.
func TestLinkCut(t *testing.T) {
	s := mode()
	cp := StartControlPlane(t)
	cp.Watch(t)
	proxy := e2etest.NewProxy(t, cp.MQTTAddr)
	agents := []*Agent{
		NewAgent(t, cp, "link-1", AgentOptions{Broker: proxy.URL()}),
		NewAgent(t, cp, "link-2", AgentOptions{Broker: proxy.URL()}),
	}
	for _, a := range agents {
		a.Start(t, "")
	}
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", agents...)

	load := startLoad(agents)
	proxy.Cut()
	cp.Push(t, "clf", "2", classifier(t, 2, 8))
	cp.Deploy(t, "clf", "2") // waits, retained, at the broker
	before := load.made()
	outage := time.NewTimer(s.outage) // the fault: the link stays down this long
	<-outage.C
	if load.made() == before {
		t.Fatalf("no prediction succeeded while the link was down")
	}
	for _, a := range agents {
		if m, err := cp.Model(a.ID, "clf"); err != nil || m.ActiveVersion != "1" {
			t.Fatalf("%s changed version with its link cut: %+v %v", a.ID, m, err)
		}
	}
	proxy.Restore()
	cp.WaitActive(t, "clf", "2", agents...)
	if err := load.stop(); err != nil {
		t.Fatalf("a prediction failed around the cut: %v", err)
	}
	cp.WaitExactTelemetry(t, agents...)
	t.Logf("link cut for %s: %d predictions, all counted once", s.outage, load.made())
}

// TestMosquittoStopStart runs the fleet over Debian's Mosquitto (the
// control plane with --broker) and stops the broker for an outage while
// the agents keep predicting: nothing is lost or counted twice, and a
// deploy after the broker returns converges.
func TestMosquittoStopStart(t *testing.T) {
	s := mode()
	mq := e2etest.StartMosquitto(t)
	cp := StartControlPlaneWith(t, mq.URL())
	cp.Watch(t)
	agents := []*Agent{NewAgent(t, cp, "mq-1", AgentOptions{}), NewAgent(t, cp, "mq-2", AgentOptions{})}
	for _, a := range agents {
		a.Start(t, "")
	}
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", agents...)

	load := startLoad(agents)
	mq.Stop()
	before := load.made()
	outage := time.NewTimer(s.outage) // the fault: the broker stays down this long
	<-outage.C
	if load.made() == before {
		t.Fatalf("no prediction succeeded while the broker was down")
	}
	mq.Start()
	cp.Push(t, "clf", "2", classifier(t, 2, 8))
	shoaltest.Eventually(t, "deploy once the control plane has reconnected", func() error {
		_, err := cp.Client.Deploy(cp.ctx(), "clf", "2", nil)
		return err
	})
	cp.WaitActive(t, "clf", "2", agents...)
	if err := load.stop(); err != nil {
		t.Fatalf("a prediction failed around the broker outage: %v", err)
	}
	cp.WaitExactTelemetry(t, agents...)
	t.Logf("mosquitto down for %s: %d predictions, all counted once", s.outage, load.made())
}

// TestClockJumps steps the agent's wall clock forward three days, back
// two hours, then forty days forward (past the manifests' 30-day expiry)
// and back: telemetry keeps flowing with exact counts, an update deployed
// while the clock is behind converges, one deployed while it is far ahead
// is refused as expired with the old model still serving, and once the
// clock is right again a new deploy converges.
func TestClockJumps(t *testing.T) {
	cp := StartControlPlane(t)
	cp.Watch(t)
	offset := filepath.Join(t.TempDir(), "clock-offset")
	setClock := func(d string) {
		t.Helper()
		if err := os.WriteFile(offset, []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setClock("0s")
	a := NewAgent(t, cp, "clock-1", AgentOptions{Env: []string{"SHOAL_CLOCK_OFFSET_FILE=" + offset}})
	a.Start(t, "")
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", a)
	a.MustPredict(t, 5)
	cp.WaitExactTelemetry(t, a)

	setClock("72h")
	a.MustPredict(t, 5)
	cp.WaitExactTelemetry(t, a)

	setClock("-2h") // stepped back: windows must keep closing, not stall for 74h
	a.MustPredict(t, 5)
	cp.WaitExactTelemetry(t, a)
	cp.Push(t, "clf", "2", classifier(t, 2, 8))
	cp.Deploy(t, "clf", "2")
	cp.WaitActive(t, "clf", "2", a)

	setClock("960h") // 40 days ahead: every manifest looks expired
	cp.Push(t, "clf", "3", classifier(t, 3, 8))
	cp.Deploy(t, "clf", "3")
	shoaltest.Eventually(t, "v3 refused as expired", func() error {
		m, err := cp.Model(a.ID, "clf")
		if err != nil {
			return err
		}
		if m.Phase != "failed" {
			return fmt.Errorf("phase %q error %q", m.Phase, m.Error)
		}
		if m.ActiveVersion != "2" {
			t.Fatalf("active %q after refusing v3", m.ActiveVersion)
		}
		return nil
	})
	if v, err := a.Predict(); err != nil || v != "2" {
		t.Fatalf("after refusing an expired manifest the agent serves %q (%v); want 2", v, err)
	}

	setClock("0s")
	cp.Deploy(t, "clf", "3") // a new release, signed now
	cp.WaitActive(t, "clf", "3", a)
	a.MustPredict(t, 5)
	cp.WaitExactTelemetry(t, a)
}

// TestDiskFull fills the file system that holds the agent's data (a small
// tmpfs) while it predicts: inference keeps serving, the agent does not
// crash, and once space returns its telemetry arrives with exact counts
// (records it could not write are held and written later, or reported as
// dropped — never lost silently).
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs here (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })

	cp := StartControlPlane(t)
	cp.Watch(t)
	agentDir := filepath.Join(dir, "agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		t.Fatal(err)
	}
	a := NewAgent(t, cp, "disk-1", AgentOptions{Dir: agentDir})
	a.Start(t, "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Proc().Tail(4000))
		}
	})
	cp.Push(t, "clf", "1", classifier(t, 1, 8))
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", a)
	a.MustPredict(t, 5)
	cp.WaitExactTelemetry(t, a)

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 1<<20)
	for {
		if _, err := f.Write(block); err != nil {
			break // ENOSPC: the disk is full
		}
	}
	f.Close()
	for range 50 { // predictions while the disk is full
		if _, err := a.Predict(); err != nil {
			t.Fatalf("inference failed on a full disk: %v\n%s", err, a.Proc().Tail(2000))
		}
	}
	if a.Proc().Exited() {
		t.Fatalf("the agent died on a full disk:\n%s", a.Proc().Tail(3000))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	a.MustPredict(t, 5)
	made := a.Made()
	shoaltest.Eventually(t, "telemetry after the disk has space again", func() error {
		c, err := cp.Telemetry(a.ID)
		if err != nil {
			return err
		}
		if c.Predictions > uint64(made) {
			t.Fatalf("%d predictions counted; %d made", c.Predictions, made)
		}
		if c.DroppedRecords == 0 && c.Predictions != uint64(made) {
			return fmt.Errorf("%d of %d predictions stored, none reported dropped", c.Predictions, made)
		}
		if c.DroppedRecords > 0 && c.Predictions == uint64(made) {
			t.Fatalf("records reported dropped, yet every prediction was counted: %+v", c)
		}
		return nil
	})
}
