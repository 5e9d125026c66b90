package topics

import (
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
)

// FuzzParse parses MQTT topic names, which come from the broker (and so,
// on an external broker, from anyone it lets publish). A topic Parse
// accepts must be exactly the topic Device builds from what it returned,
// so no two topics map to one (device, kind); and every valid id and kind
// must survive Device then Parse. Seeds: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, prefix, topic, id string, kind byte) {
		checkParse(t, New(prefix), topic)
		checkParse(t, New(""), topic)

		s := New(prefix)
		k := Kinds[int(kind)%len(Kinds)]
		built := s.Device(id, k)
		gotID, gotKind, err := s.Parse(built)
		if verr := ValidateDeviceID(id); verr != nil {
			if err == nil && gotID == id {
				t.Fatalf("Parse(%q) accepted invalid id %q (%v)", built, id, verr)
			}
			return
		}
		if err != nil || gotID != id || gotKind != k {
			t.Fatalf("Parse(Device(%q, %s)) = %q, %s, %v", id, k, gotID, gotKind, err)
		}
		for _, filter := range []string{s.DeviceRoot(id), s.AllDevices(k)} {
			if _, _, err := s.Parse(filter); err == nil {
				t.Fatalf("Parse accepted the filter %q", filter)
			}
		}
	})
}

func checkParse(t *testing.T, s Scheme, topic string) {
	t.Helper()
	id, k, err := s.Parse(topic)
	if err != nil {
		if id != "" || k != "" {
			t.Fatalf("Parse(%q) = %q, %q with error %v", topic, id, k, err)
		}
		if !strings.Contains(err.Error(), "topic ") {
			t.Fatalf("Parse(%q): error %q does not name the topic", topic, err)
		}
		return
	}
	if verr := ValidateDeviceID(id); verr != nil {
		t.Fatalf("Parse(%q) returned invalid id %q: %v", topic, id, verr)
	}
	if s.Device(id, k) != topic {
		t.Fatalf("Parse(%q) = %q, %s; Device gives %q", topic, id, k, s.Device(id, k))
	}
	if strings.ContainsAny(id, "/+#\x00") {
		t.Fatalf("Parse(%q) returned id %q with a topic separator or wildcard", topic, id)
	}
}

func fuzzParseSeeds() []fuzzcorpus.Seed {
	seed := func(name string, valid bool, prefix, topic, id string, kind byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{prefix, topic, id, kind}}
	}
	return []fuzzcorpus.Seed{
		seed("reported", true, "", "shoal/v1/d/pump-7/reported", "pump-7", 1),
		seed("telemetry-custom-prefix", true, "/fleet/eu/", "fleet/eu/d/a.b_c-9/telemetry", "a.b_c-9", 2),
		seed("ack-max-id", true, "", "shoal/v1/d/"+strings.Repeat("x", MaxDeviceIDLen)+"/ack", strings.Repeat("x", MaxDeviceIDLen), 4),
		seed("prefix-with-d", true, "x/d/y", "x/d/y/d/dev/status", "dev", 5),
		seed("id-too-long", false, "", "shoal/v1/d/"+strings.Repeat("x", MaxDeviceIDLen+1)+"/ack", "", 0),
		seed("wildcard-id", false, "", "shoal/v1/d/+/telemetry", "+", 2),
		seed("multi-level", false, "", "shoal/v1/d/#", "#", 0),
		seed("extra-level", false, "", "shoal/v1/d/a/b/reported", "a/b", 1),
		seed("dot-id", false, "", "shoal/v1/d/../reported", "..", 1),
		seed("unknown-kind", false, "", "shoal/v1/d/a/Reported", "a", 1),
		seed("no-kind", false, "", "shoal/v1/d/a", "a", 0),
		seed("other-prefix", false, "", "shoal/v2/d/a/desired", "a", 0),
		seed("utf8-id", false, "", "shoal/v1/d/pümp/status", "pümp", 5),
		seed("nul-id", false, "", "shoal/v1/d/a\x00/status", "a\x00", 5),
	}
}

// TestFuzzParseCorpus keeps testdata/fuzz/FuzzParse in step with the seeds
// above (-update-fuzz-corpus rewrites it): valid topics parse, the others
// do not.
func TestFuzzParseCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, "FuzzParse", fuzzParseSeeds(), func(v []any) error {
		_, _, err := New(v[0].(string)).Parse(v[1].(string))
		return err
	})
}
