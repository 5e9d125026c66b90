package fleet

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

func reported(id string, at int64) *shoalv1.ReportedState {
	return &shoalv1.ReportedState{
		SchemaVersion: 1, DeviceId: id, AppliedGeneration: 3,
		Phase: shoalv1.Phase_PHASE_ACTIVE, Profile: "jetson", AgentVersion: "0.2.0", ReportedAtUnixMs: at,
		Models: []*shoalv1.ModelStatus{{
			Name:     "m1",
			Active:   &shoalv1.ModelRef{Name: "m1", Version: "2"},
			Previous: &shoalv1.ModelRef{Name: "m1", Version: "1"},
			Phase:    shoalv1.Phase_PHASE_ACTIVE,
		}, {
			Name: "m9", Phase: shoalv1.Phase_PHASE_FAILED, Error: "self-test mismatch",
		}},
	}
}

func status(id string, online bool) *shoalv1.DeviceStatus {
	return &shoalv1.DeviceStatus{SchemaVersion: 1, DeviceId: id, Online: online, AgentVersion: "0.2.0"}
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIngestReportedAndStatus(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	if _, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "2"), nil); err != nil {
		t.Fatal(err)
	}
	e.svc.HandleStatus(scheme.Device("a", topics.Status), marshal(t, status("a", true)))
	seen := e.clk.Now()
	e.svc.HandleReported(scheme.Device("a", topics.Reported), marshal(t, reported("a", 1)))

	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Online || d.LastSeen == nil || !d.LastSeen.Equal(seen) || d.Phase != "active" || d.AppliedGeneration != 3 ||
		d.DesiredGeneration != 1 || d.AgentVersion != "0.2.0" || d.Profile != "jetson" {
		t.Fatalf("device = %+v", d)
	}
	want := []ModelState{
		{Name: "m1", ActiveVersion: "2", PreviousVersion: "1", DesiredVersion: "2", Phase: "active"},
		{Name: "m9", Phase: "failed", Error: "self-test mismatch"},
	}
	if len(d.Models) != 2 || d.Models[0] != want[0] || d.Models[1] != want[1] {
		t.Fatalf("models = %+v; want %+v", d.Models, want)
	}

	// The same retained message delivered again (a resubscription) is not
	// a new sighting.
	e.clk.Advance(time.Hour)
	e.svc.HandleReported(scheme.Device("a", topics.Reported), marshal(t, reported("a", 1)))
	if d, _ := e.svc.Get(ctx, "a"); !d.LastSeen.Equal(seen) {
		t.Errorf("duplicate moved last_seen to %v", d.LastSeen)
	}
	// A new report is.
	e.svc.HandleReported(scheme.Device("a", topics.Reported), marshal(t, reported("a", 2)))
	if d, _ := e.svc.Get(ctx, "a"); !d.LastSeen.Equal(e.clk.Now()) {
		t.Errorf("last_seen = %v after a new report; want %v", d.LastSeen, e.clk.Now())
	}
	seen = e.clk.Now()

	// The last will says offline, and is not a sighting.
	e.clk.Advance(time.Hour)
	e.svc.HandleStatus(scheme.Device("a", topics.Status), marshal(t, status("a", false)))
	d, _ = e.svc.Get(ctx, "a")
	if d.Online || !d.LastSeen.Equal(seen) {
		t.Errorf("after the last will: online=%v last_seen=%v; want offline, %v", d.Online, d.LastSeen, seen)
	}
	// Back online.
	e.svc.HandleStatus(scheme.Device("a", topics.Status), marshal(t, status("a", true)))
	if d, _ := e.svc.Get(ctx, "a"); !d.Online {
		t.Error("device not online after an online status")
	}

	st := e.svc.Stats()
	if st.Accepted != 5 || st.Duplicates != 1 || st.Malformed+st.BadTopic+st.UnknownDevice+st.StoreErrors != 0 {
		t.Errorf("Stats = %+v", st)
	}

	// Survives a restart.
	e.reopen(t)
	if d, _ := e.svc.Get(ctx, "a"); !d.Online || d.Phase != "active" {
		t.Errorf("after reopen: %+v", d)
	}
}

func TestIngestRefusesMalformed(t *testing.T) {
	good := func(t *testing.T) []byte {
		r := reported("a", 1)
		r.Error = strings.Repeat("x", 100)
		return marshal(t, r)
	}
	rep := scheme.Device("a", topics.Reported)
	sta := scheme.Device("a", topics.Status)
	for _, tc := range []struct {
		name    string
		status  bool // HandleStatus, not HandleReported
		topic   string
		payload func(t *testing.T) []byte
		counter func(IngestStats) uint64
	}{
		{"truncated protobuf", false, rep, func(t *testing.T) []byte { b := good(t); return b[:len(b)-10] },
			func(s IngestStats) uint64 { return s.Malformed }},
		{"garbage", false, rep, func(*testing.T) []byte { return []byte{0xff, 0xff, 0xff, 0xff, 0x0f} },
			func(s IngestStats) uint64 { return s.Malformed }},
		{"garbage status", true, sta, func(*testing.T) []byte { return []byte{0x0a, 0x80} },
			func(s IngestStats) uint64 { return s.Malformed }},
		{"empty payload", false, rep, func(*testing.T) []byte { return nil },
			func(s IngestStats) uint64 { return s.BadSchema }},
		{"schema version 2", false, rep, func(t *testing.T) []byte { r := reported("a", 1); r.SchemaVersion = 2; return marshal(t, r) },
			func(s IngestStats) uint64 { return s.BadSchema }},
		{"other device in payload", false, rep, func(t *testing.T) []byte { return marshal(t, reported("b", 1)) },
			func(s IngestStats) uint64 { return s.WrongDevice }},
		{"other device in status", true, sta, func(t *testing.T) []byte { return marshal(t, status("b", true)) },
			func(s IngestStats) uint64 { return s.WrongDevice }},
		{"giant payload", false, rep, func(*testing.T) []byte { return make([]byte, MaxReportedBytes+1) },
			func(s IngestStats) uint64 { return s.TooLarge }},
		{"giant status", true, sta, func(*testing.T) []byte { return make([]byte, MaxStatusBytes+1) },
			func(s IngestStats) uint64 { return s.TooLarge }},
		{"not enrolled", false, scheme.Device("zz", topics.Reported), func(t *testing.T) []byte { return marshal(t, reported("zz", 1)) },
			func(s IngestStats) uint64 { return s.UnknownDevice }},
		{"status on reported topic", true, rep, func(t *testing.T) []byte { return marshal(t, status("a", true)) },
			func(s IngestStats) uint64 { return s.BadTopic }},
		{"other prefix", false, "other/d/a/reported", good,
			func(s IngestStats) uint64 { return s.BadTopic }},
		{"invalid id in topic", false, "shoal/v1/d/.a/reported", good,
			func(s IngestStats) uint64 { return s.BadTopic }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.enroll(t, "a")
			if tc.status {
				e.svc.HandleStatus(tc.topic, tc.payload(t))
			} else {
				e.svc.HandleReported(tc.topic, tc.payload(t))
			}
			st := e.svc.Stats()
			if tc.counter(st) != 1 || st.Accepted != 0 {
				t.Fatalf("Stats = %+v", st)
			}
			d, err := e.svc.Get(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			if d.Phase != "unknown" || d.Online || d.LastSeen != nil {
				t.Errorf("refused message changed the device: %+v", d)
			}
			if e.logs.count("dropped") != 1 {
				t.Errorf("refusal not logged once")
			}
		})
	}
}

func TestIngestRandomBytesNeverPanics(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 2000
	for range n {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		e.svc.HandleReported(scheme.Device("a", topics.Reported), b)
		e.svc.HandleStatus(scheme.Device("a", topics.Status), b)
	}
	st := e.svc.Stats()
	total := st.Accepted + st.Duplicates + st.BadTopic + st.TooLarge + st.Malformed + st.BadSchema + st.WrongDevice + st.UnknownDevice + st.StoreErrors
	if total != 2*n {
		t.Errorf("%d messages counted; want %d: %+v", total, 2*n, st)
	}
	// One misbehaving device costs a log line per reason per interval.
	if got := e.logs.count("dropped"); got > 4 {
		t.Errorf("%d log lines for %d bad messages from one device; want at most one per reason", got, 2*n)
	}
}

// TestModelHealthAndActiveSince: the view shows what the device says of
// its active version's health, since when it serves, and which version it
// is working towards.
func TestModelHealthAndActiveSince(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	since := time.Date(2030, 1, 2, 3, 0, 0, 123e6, time.UTC)
	rep := reported("a", 1)
	rep.Models[0].Healthy = true
	rep.Models[0].ActiveSinceUnixMs = since.UnixMilli()
	rep.Models[1].Desired = &shoalv1.ModelRef{Name: "m9", Version: "4"}
	e.svc.HandleReported(scheme.Device("a", topics.Reported), marshal(t, rep))
	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	m1, m9 := d.Models[0], d.Models[1]
	if !m1.Healthy || m1.ActiveSince == nil || !m1.ActiveSince.Equal(since) || m1.ActiveSince.Location() != time.UTC {
		t.Errorf("m1 = %+v; want healthy, active since %v", m1, since)
	}
	if m9.Healthy || m9.ActiveSince != nil || m9.TargetVersion != "4" || m1.TargetVersion != "" {
		t.Errorf("m9 = %+v; want not healthy, no active_since, target version 4 (m1: %q, none)", m9, m1.TargetVersion)
	}
}
