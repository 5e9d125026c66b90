package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKillDuringUpdate proves guarantee 2 (docs/RELIABILITY.md): an agent
// killed with SIGKILL at any phase of an update keeps a runnable model, and
// converges once restarted. One agent per update-path failpoint, each
// armed at its second hit (the first is the update to v1), is killed by
// the failpoint during the update to v2. Restarted without failpoints,
// each serves v1 or v2 at its first answer (v2 once the state file was
// switched), resumes the download from its offset with a Range request
// (or reuses the complete file), converges on v2, and the control plane
// counts exactly the predictions made.
func TestKillDuringUpdate(t *testing.T) {
	cp := StartControlPlane(t)
	rows := []struct {
		point    string
		switched bool // the state file names v2 at the kill
		// requests is how many times the v2 artifact is fetched in all
		// (0: not checked).
		requests int
	}{
		{"download-partial", false, 2}, // the second one resumes with Range
		{"downloaded", false, 1},       // the complete partial file is reused
		{"verified", false, 1},
		{"activate-before-state", false, 0}, // the committed file is pruned at start: fetched again
		{"activate-after-state", true, 1},
		{"activated", true, 1},
	}
	agents := make([]*Agent, len(rows))
	proxies := make([]*ArtifactProxy, len(rows))
	for i, row := range rows {
		proxies[i] = NewArtifactProxy(t, cp)
		agents[i] = NewAgent(t, cp, "upd-"+row.point, AgentOptions{Server: proxies[i].URL})
		agents[i].Start(t, row.point+"=kill@2")
	}

	// Large enough (~1.4 MB) that a download can be cut midway.
	v1, v2 := classifier(t, 1, 600, 600), classifier(t, 2, 600, 600)
	cp.Push(t, "clf", "1", v1)
	cp.Deploy(t, "clf", "1")
	cp.WaitActive(t, "clf", "1", agents...)
	for _, a := range agents {
		a.MustPredict(t, 3)
	}
	// Everything predicted so far is in the control plane: the kills below
	// find no prediction that is not yet in an outbox.
	cp.WaitExactTelemetry(t, agents...)

	mv2 := cp.Push(t, "clf", "2", v2)
	start := time.Now()
	cp.Deploy(t, "clf", "2")
	for i, row := range rows {
		a := agents[i]
		p := a.Proc()
		p.WaitExit(t)
		if !p.Killed() || p.Effect(row.point) != "kill" || p.Hits(row.point) != 2 {
			t.Fatalf("%s: exited with %v, %s hit %d times (last effect %q); want killed at its 2nd hit; log:\n%s",
				a.ID, p.cmd.ProcessState, row.point, p.Hits(row.point), p.Effect(row.point), p.Tail(3000))
		}
	}
	t.Logf("all %d agents killed at their failpoint %s after the deploy", len(rows), time.Since(start).Round(time.Millisecond))

	// The kill at download-partial left at least half of v2 on disk.
	var partSize int64
	{
		fi, err := os.Stat(filepath.Join(agents[0].Dir, "partial", mv2.SHA256+".part"))
		if err != nil {
			t.Fatalf("%s: no partial download after the kill: %v", agents[0].ID, err)
		}
		partSize = fi.Size()
		if 2*partSize < mv2.Size || partSize >= mv2.Size {
			t.Fatalf("%s: partial download holds %d of %d bytes; want at least half and not all", agents[0].ID, partSize, mv2.Size)
		}
	}

	for i, row := range rows {
		a := agents[i]
		a.Start(t, "")
		// The first answer after the restart already serves a model.
		version, err := a.Ready("clf")
		if err != nil {
			t.Fatalf("%s: first readiness answer after the restart: %v; want ready and a version", a.ID, err)
		}
		got, err := a.Predict()
		if err != nil {
			t.Fatalf("%s: first prediction after the restart: %v", a.ID, err)
		}
		if row.switched && (version != "2" || got != "2") {
			t.Fatalf("%s: serves %s (ready) / %s (infer) after a kill at %s; want 2: the state file named it", a.ID, version, got, row.point)
		}
		if version != "1" && version != "2" || got != "1" && got != "2" {
			t.Fatalf("%s: serves %q (ready) / %q (infer) after a kill at %s; want 1 or 2", a.ID, version, got, row.point)
		}
		t.Logf("%s: killed at %s, serves v%s at once after the restart", a.ID, row.point, version)
	}

	cp.WaitActive(t, "clf", "2", agents...)
	for i, row := range rows {
		a := agents[i]
		if v, err := a.Predict(); err != nil || v != "2" {
			t.Fatalf("%s: after converging: version %q, %v", a.ID, v, err)
		}
		reqs := proxies[i].Requests(mv2.SHA256)
		t.Logf("%s: v2 artifact requests %+v", a.ID, reqs)
		if row.requests != 0 && len(reqs) != row.requests {
			t.Errorf("%s: the v2 artifact was requested %d times; want %d: %+v", a.ID, len(reqs), row.requests, reqs)
		}
	}
	// The resumed download asked for the rest only, and got only that.
	if reqs := proxies[0].Requests(mv2.SHA256); len(reqs) == 2 {
		want := fmt.Sprintf("bytes=%d-", partSize)
		if reqs[0].Range != "" || reqs[1].Range != want || reqs[1].Status != 206 || reqs[1].Bytes != mv2.Size-partSize {
			t.Errorf("%s: requests %+v; want a full GET, then Range %q answered 206 with %d bytes", agents[0].ID, reqs, want, mv2.Size-partSize)
		}
	}

	cp.WaitExactTelemetry(t, agents...)
	for _, a := range agents {
		a.Stop(t)
	}
	cp.WaitExactTelemetry(t, agents...)
}
