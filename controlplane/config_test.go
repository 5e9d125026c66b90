package controlplane

import "testing"

func TestIsUnspecifiedHost(t *testing.T) {
	for addr, want := range map[string]bool{
		":1883": true, "0.0.0.0:1883": true, "[::]:1883": true,
		"127.0.0.1:1883": false, "broker.example:1883": false, "[::1]:1883": false, "garbage": false,
	} {
		if got := isUnspecifiedHost(addr); got != want {
			t.Errorf("isUnspecifiedHost(%q) = %v; want %v", addr, got, want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"tcp://user:pass@broker:1883": "tcp://broker:1883",
		"ssl://broker:8883":           "ssl://broker:8883",
		"wss://u:p@host/mqtt":         "wss://host/mqtt",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q; want %q", in, got, want)
		}
	}
}
