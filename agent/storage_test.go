package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/outbox"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// TestFullDiskKeepsServing: the agent's data directory fills up while it
// runs. The model keeps serving; a new model's download fails with ENOSPC,
// is reported and retried; the telemetry outbox stops writing rather than
// let Badger fault; and once there is room again the new model comes in
// by itself and telemetry flows.
func TestFullDiskKeepsServing(t *testing.T) {
	mnt := shoaltest.Tmpfs(t, 48<<20)

	broker := startBroker(t)
	cp := startCP(t, "tcp://"+broker.addr, "tok")
	desired := scheme.Device(dev, topics.Desired)
	if err := broker.Publish(desired, cp.desired("m", "1", modelBytes(t), 1, 1), true, 1); err != nil {
		t.Fatal(err)
	}
	reported := broker.subscribe(t, scheme.Device(dev, topics.Reported))
	cfg := Config{
		DataDir: filepath.Join(mnt, "data"), ServerURL: cp.URL, DeviceID: dev, EnrollToken: "tok", APIAddr: "127.0.0.1:0",
		// No telemetry window ends while the test fills the disk: an
		// append racing the fill for the last bytes is the one case the
		// outbox cannot guard (see outbox/space.go).
		TelemetryWindow: time.Hour, OutboxMinFreeBytes: 8 << 20, Logger: testLogger(t),
	}
	a, stop := runAgent(t, cfg)
	shoaltest.Eventually(t, "model 1 serves", func() error { _, err := predict(a.APIAddr(), "m"); return err })

	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 64<<10); ; {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	// Version 2: the same graph with an unknown field appended, so other
	// bytes to download.
	v2 := append(modelBytes(t), 0xc2, 0x3e, 4, 'v', 'e', 'r', '2') // field 1000, "ver2"
	if err := broker.Publish(desired, cp.desired("m", "2", v2, 2, 2), true, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, reported, "the download's ENOSPC in the reported state", func(p []byte) (bool, bool) {
		rs, ok := decodeReported(p)
		return true, ok && strings.Contains(rs.GetError(), "no space left on device")
	})
	if _, err := predict(a.APIAddr(), "m"); err != nil {
		t.Fatalf("predict on a full disk: %v", err)
	}
	shoaltest.Eventually(t, "the outbox stops writing", shoaltest.Holds(func() bool { return a.outbox.Stats().NoSpace }, func() string { return "the outbox reports room" }))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, reported, "model 2 active once there is room", func(p []byte) (bool, bool) {
		rs, ok := decodeReported(p)
		return true, ok && rs.GetAppliedGeneration() == 2 && rs.GetPhase() == shoalv1.Phase_PHASE_ACTIVE
	})
	if _, err := predict(a.APIAddr(), "m"); err != nil {
		t.Fatalf("predict after: %v", err)
	}
	if err := stop(); err != nil { // flushes the window into the outbox
		t.Fatal(err)
	}
	if st := a.outbox.Stats(); st.NoSpace || st.Records == 0 || st.DroppedNoSpace != 0 {
		t.Errorf("outbox once there was room: %+v", st)
	}
}

// TestOutboxSettingsReachTheOutbox: the outbox bound, sync interval and
// free-space floor given to the agent are the outbox's; zero values are
// the outbox's defaults.
func TestOutboxSettingsReachTheOutbox(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want outbox.Options
	}{
		{Config{OutboxMaxBytes: 1 << 20, OutboxSyncInterval: 250 * time.Millisecond, OutboxMinFreeBytes: 4 << 20, SyncWrites: true},
			outbox.Options{MaxBytes: 1 << 20, SyncInterval: 250 * time.Millisecond, MinFreeBytes: 4 << 20, SyncWrites: true}},
		{Config{OutboxSyncInterval: -1},
			outbox.Options{MaxBytes: outbox.DefaultMaxBytes, SyncInterval: -1, MinFreeBytes: outbox.DefaultMaxBytes + outbox.MinFreeSlack}},
		{Config{},
			outbox.Options{MaxBytes: outbox.DefaultMaxBytes, SyncInterval: outbox.DefaultSyncInterval, MinFreeBytes: outbox.DefaultMaxBytes + outbox.MinFreeSlack}},
	} {
		cfg := tc.cfg
		cfg.DataDir, cfg.ServerURL, cfg.DeviceID, cfg.EnrollToken, cfg.APIAddr = t.TempDir(), "http://127.0.0.1:1", dev, "tok", "127.0.0.1:0"
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := a.outbox.Options()
		a.Close()
		if got.MaxBytes != tc.want.MaxBytes || got.SyncInterval != tc.want.SyncInterval || got.MinFreeBytes != tc.want.MinFreeBytes || got.SyncWrites != tc.want.SyncWrites {
			t.Errorf("%+v: outbox options %+v; want %+v", tc.cfg, got, tc.want)
		}
	}
	cfg := Config{DataDir: t.TempDir(), OutboxMinFreeBytes: -1}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "outbox min free bytes -1 is negative") {
		t.Errorf("New with a negative free-space floor = %v", err)
	}
}
