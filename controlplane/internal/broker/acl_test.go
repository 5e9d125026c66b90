package broker

import (
	"testing"

	"github.com/shoalfleet/shoal/internal/topics"
)

// TestDeviceMayPublishOnlyOwnTopics: the hook's publish rule, topic by
// topic. There is no stats topic (data statistics ride in telemetry
// records): a device's own d/{id}/stats is refused like any unknown kind.
func TestDeviceMayPublishOnlyOwnTopics(t *testing.T) {
	s := topics.New("")
	h := &deviceHook{scheme: s}
	for _, tc := range []struct {
		topic string
		want  bool
	}{
		{s.Device("a", topics.Reported), true},
		{s.Device("a", topics.Telemetry), true},
		{s.Device("a", topics.Status), true},
		{s.Device("a", topics.Desired), false}, // the control plane's to write
		{s.Device("a", topics.Ack), false},     // the control plane's to write
		{s.Prefix + "/d/a/stats", false},
		{s.Prefix + "/d/a/unknown", false},
		{s.Device("b", topics.Telemetry), false}, // another device's
		{"elsewhere/d/a/telemetry", false},
	} {
		if got := h.mayPublish("a", tc.topic); got != tc.want {
			t.Errorf("device a may publish on %q: %v; want %v", tc.topic, got, tc.want)
		}
	}
}
