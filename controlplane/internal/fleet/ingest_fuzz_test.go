package fleet

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// fuzzDevices are enrolled in the fleet the ingest fuzz targets feed.
var fuzzDevices = []string{"a", "pump-7"}

// ingestFuzz is a fleet over a real Badger store, shared by the calls of
// one fuzz target.
type ingestFuzz struct {
	st  store.Store
	pub *recorder
	clk *shoaltest.Clock
	svc *Service
}

func newIngestFuzz(f *testing.F) *ingestFuzz {
	st, err := badgerstore.Open(f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	e := &ingestFuzz{st: st, pub: &recorder{}, clk: new(shoaltest.Clock)}
	e.svc = New(st, e.pub, scheme, nil, e.clk.Now)
	for _, id := range fuzzDevices {
		tok, err := e.svc.CreateToken(ctx, time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: id}); err != nil {
			f.Fatal(err)
		}
	}
	return e
}

func (e *ingestFuzz) state(t *testing.T, id string) stateRecord {
	t.Helper()
	var st stateRecord
	if err := e.st.View(func(tx store.Tx) error {
		_, err := store.GetJSON(tx, stateKey(id), &st)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return st
}

// counter names the one IngestStats field a message must move.
type counter string

// outcome is what the ingest must do with payload on topic, worked out
// independently of the code under test.
func outcome(topic string, want topics.Kind, payload []byte, max int, m proto.Message, schema func() uint32, device func() string) (id string, c counter) {
	id, kind, err := scheme.Parse(topic)
	switch {
	case err != nil || kind != want:
		return "", "BadTopic"
	case len(payload) > max:
		return id, "TooLarge"
	case proto.Unmarshal(payload, m) != nil:
		return id, "Malformed"
	case schema() != SchemaVersion:
		return id, "BadSchema"
	case device() != id:
		return id, "WrongDevice"
	case !slices.Contains(fuzzDevices, id):
		return id, "UnknownDevice"
	}
	return id, "Accepted" // or Duplicates: the caller knows what was stored
}

// moved checks that exactly counter c went up by one.
func moved(t *testing.T, before, after IngestStats, c counter) {
	t.Helper()
	want := before
	switch c {
	case "Accepted":
		want.Accepted++
	case "Duplicates":
		want.Duplicates++
	case "BadTopic":
		want.BadTopic++
	case "TooLarge":
		want.TooLarge++
	case "Malformed":
		want.Malformed++
	case "BadSchema":
		want.BadSchema++
	case "WrongDevice":
		want.WrongDevice++
	case "UnknownDevice":
		want.UnknownDevice++
	}
	if after != want {
		t.Fatalf("counters moved from %+v to %+v; want only %s up by one", before, after, c)
	}
}

// checkView checks that the API's view of an enrolled device still builds.
func (e *ingestFuzz) checkView(t *testing.T, id string) Device {
	t.Helper()
	d, err := e.svc.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%q) after ingest: %v", id, err)
	}
	if !slices.IsSortedFunc(d.Models, func(a, b ModelState) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("models not sorted: %+v", d.Models)
	}
	for i, m := range d.Models {
		if m.Name == "" || i > 0 && d.Models[i-1].Name == m.Name {
			t.Fatalf("model slots %+v: empty or repeated name", d.Models)
		}
	}
	return d
}

// FuzzHandleReported feeds reported-state messages to the fleet as the
// broker delivers them from {prefix}/d/{id}/reported. Each message moves
// exactly the counter its fate calls for (worked out independently: topic,
// size, protobuf, schema, device id, enrollment, duplicate), is stored
// byte for byte only when accepted, leaves the stored state alone
// otherwise, publishes nothing and never breaks the API's view of the
// device. Seeds: testdata/fuzz/FuzzHandleReported.
func FuzzHandleReported(f *testing.F) {
	e := newIngestFuzz(f)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		var m shoalv1.ReportedState
		id, c := outcome(topic, topics.Reported, payload, MaxReportedBytes, &m, m.GetSchemaVersion, m.GetDeviceId)
		var prior stateRecord
		if c == "Accepted" {
			prior = e.state(t, id)
			if bytes.Equal(prior.Reported, payload) {
				c = "Duplicates"
			}
		}
		e.clk.Advance(time.Second)
		before := e.svc.Stats()
		e.svc.HandleReported(topic, payload)
		moved(t, before, e.svc.Stats(), c)
		if len(e.pub.all()) != 0 {
			t.Fatal("ingest published something")
		}
		if c != "Accepted" && c != "Duplicates" {
			return
		}
		st := e.state(t, id)
		switch c {
		case "Accepted":
			if !bytes.Equal(st.Reported, payload) || !st.LastSeen.Equal(e.clk.Now()) || st.Online != prior.Online || !bytes.Equal(st.Status, prior.Status) {
				t.Fatalf("stored %+v after accepting %x", st, payload)
			}
		case "Duplicates":
			if !st.LastSeen.Equal(prior.LastSeen) {
				t.Fatalf("a duplicate moved last_seen from %v to %v", prior.LastSeen, st.LastSeen)
			}
		}
		d := e.checkView(t, id)
		if d.Phase != PhaseName(m.GetPhase()) || d.AppliedGeneration != m.GetAppliedGeneration() || d.Error != m.GetError() {
			t.Fatalf("view %+v does not show the report %v", d, &m)
		}
	})
}

// FuzzHandleStatus does the same for {prefix}/d/{id}/status: online and
// last-will messages. An accepted status sets online as it says and moves
// last_seen only when it says online.
func FuzzHandleStatus(f *testing.F) {
	e := newIngestFuzz(f)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		var m shoalv1.DeviceStatus
		id, c := outcome(topic, topics.Status, payload, MaxStatusBytes, &m, m.GetSchemaVersion, m.GetDeviceId)
		var prior stateRecord
		if c == "Accepted" {
			prior = e.state(t, id)
			if bytes.Equal(prior.Status, payload) {
				c = "Duplicates"
			}
		}
		e.clk.Advance(time.Second)
		before := e.svc.Stats()
		e.svc.HandleStatus(topic, payload)
		moved(t, before, e.svc.Stats(), c)
		if len(e.pub.all()) != 0 {
			t.Fatal("ingest published something")
		}
		if c != "Accepted" && c != "Duplicates" {
			return
		}
		st := e.state(t, id)
		if c == "Accepted" {
			wantSeen := prior.LastSeen
			if m.GetOnline() {
				wantSeen = e.clk.Now()
			}
			if !bytes.Equal(st.Status, payload) || st.Online != m.GetOnline() || !st.LastSeen.Equal(wantSeen) || !bytes.Equal(st.Reported, prior.Reported) {
				t.Fatalf("stored %+v after accepting %v", st, &m)
			}
		} else if st.Online != prior.Online || !st.LastSeen.Equal(prior.LastSeen) {
			t.Fatalf("a duplicate changed the state from %+v to %+v", prior, st)
		}
		if d := e.checkView(t, id); d.Online != st.Online {
			t.Fatalf("view says online=%v; stored %v", d.Online, st.Online)
		}
	})
}

func fuzzIngestSeeds(t *testing.T) (reportedSeeds, statusSeeds []fuzzcorpus.Seed) {
	t.Helper()
	seed := func(name string, valid bool, topic string, payload []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{topic, payload}}
	}
	rep := func(id string) string { return scheme.Device(id, topics.Reported) }
	sta := func(id string) string { return scheme.Device(id, topics.Status) }
	good := marshal(t, reported("a", 1))
	failed := reported("pump-7", 2)
	failed.Phase, failed.Error = shoalv1.Phase_PHASE_FAILED, "deployment 0 of generation 3: manifest signature does not verify with the pinned key"
	failed.Models[0].Phase = shoalv1.Phase(99) // a phase this build does not know
	schema2 := reported("a", 3)
	schema2.SchemaVersion = 2
	reportedSeeds = []fuzzcorpus.Seed{
		seed("active", true, rep("a"), good),
		seed("failed-unknown-phase", true, rep("pump-7"), marshal(t, failed)),
		seed("no-models", true, rep("a"), marshal(t, &shoalv1.ReportedState{SchemaVersion: 1, DeviceId: "a", Phase: shoalv1.Phase_PHASE_IDLE})),
		seed("truncated", false, rep("a"), good[:len(good)-7]),
		seed("empty", false, rep("a"), nil),
		seed("schema-2", false, rep("a"), marshal(t, schema2)),
		seed("other-device", false, rep("pump-7"), good),
		seed("not-enrolled", false, rep("zz"), marshal(t, reported("zz", 1))),
		seed("status-topic", false, sta("a"), good),
		seed("bad-id", false, "shoal/v1/d/+/reported", good),
	}
	online := marshal(t, status("a", true))
	statusSeeds = []fuzzcorpus.Seed{
		seed("online", true, sta("a"), online),
		seed("last-will", true, sta("pump-7"), marshal(t, status("pump-7", false))),
		seed("truncated", false, sta("a"), online[:len(online)-2]),
		seed("other-device", false, sta("pump-7"), online),
		seed("not-enrolled", false, sta("zz"), marshal(t, status("zz", true))),
		seed("reported-topic", false, rep("a"), online),
		seed("other-prefix", false, "fleet/v9/d/a/status", online),
		seed("oversize", false, sta("a"), append(bytes.Clone(online), make([]byte, MaxStatusBytes)...)),
	}
	return reportedSeeds, statusSeeds
}

// TestFuzzIngestCorpus keeps testdata/fuzz/FuzzHandleReported and
// FuzzHandleStatus in step with the seeds above (-update-fuzz-corpus
// rewrites them): valid seeds are accepted by a fleet with the fuzz
// devices enrolled, the others are dropped.
func TestFuzzIngestCorpus(t *testing.T) {
	e := newEnv(t)
	for _, id := range fuzzDevices {
		e.enroll(t, id)
	}
	reported, status := fuzzIngestSeeds(t)
	accept := func(handle func(topic string, payload []byte)) func([]any) error {
		return func(v []any) error {
			before := e.svc.Stats()
			handle(v[0].(string), v[1].([]byte))
			after := e.svc.Stats()
			if after.Accepted+after.Duplicates == before.Accepted+before.Duplicates {
				return errors.New("dropped")
			}
			return nil
		}
	}
	fuzzcorpus.Sync(t, "FuzzHandleReported", reported, accept(e.svc.HandleReported))
	fuzzcorpus.Sync(t, "FuzzHandleStatus", status, accept(e.svc.HandleStatus))
}
