package topics

import "testing"

func TestRoundTrip(t *testing.T) {
	for _, prefix := range []string{"", "shoal/v1", "/acme/fleet/"} {
		s := New(prefix)
		for _, k := range Kinds {
			topic := s.Device("dev-1.a_b", k)
			id, got, err := s.Parse(topic)
			if err != nil || id != "dev-1.a_b" || got != k {
				t.Errorf("Parse(%q) = %q, %q, %v", topic, id, got, err)
			}
		}
	}
	if got := New("").Device("x", Desired); got != "shoal/v1/d/x/desired" {
		t.Errorf("default topic = %q", got)
	}
}

func TestParseRejects(t *testing.T) {
	s := New("")
	for _, topic := range []string{
		"other/d/x/desired",
		"shoal/v1/d/x",
		"shoal/v1/d/x/desired/extra",
		"shoal/v1/d/x/unknown",
		"shoal/v1/d/x/stats", // statistics ride in telemetry records
		"shoal/v1/d/+/desired",
		"shoal/v1/d//desired",
		"shoal/v1/d/-x/desired",
	} {
		if _, _, err := s.Parse(topic); err == nil {
			t.Errorf("Parse(%q) succeeded; want error", topic)
		}
	}
}

func TestValidateDeviceID(t *testing.T) {
	good := []string{"a", "dev-01", "A.b_c-d"}
	bad := []string{"", "a/b", "a+b", "#", "a b", ".x", "-x", string(make([]byte, 129))}
	for _, id := range good {
		if err := ValidateDeviceID(id); err != nil {
			t.Errorf("ValidateDeviceID(%q) = %v", id, err)
		}
	}
	for _, id := range bad {
		if err := ValidateDeviceID(id); err == nil {
			t.Errorf("ValidateDeviceID(%q) = nil; want error", id)
		}
	}
}
