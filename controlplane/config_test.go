package controlplane

import (
	"strings"
	"testing"
	"time"
)

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

func TestConfigDrift(t *testing.T) {
	for _, tc := range []struct {
		name                             string
		window, settle, eval             time.Duration
		wantWindow, wantSettle, wantEval time.Duration
		wantErr                          string
	}{
		{name: "defaults", wantWindow: time.Hour, wantSettle: 5 * time.Minute, wantEval: time.Minute},
		{name: "set", window: 15 * time.Minute, settle: time.Minute, eval: 10 * time.Second,
			wantWindow: 15 * time.Minute, wantSettle: time.Minute, wantEval: 10 * time.Second},
		{name: "short window for tests", window: time.Second, settle: 100 * time.Millisecond, eval: 50 * time.Millisecond,
			wantWindow: time.Second, wantSettle: 100 * time.Millisecond, wantEval: 50 * time.Millisecond},
		{name: "window not dividing a day", window: 7 * time.Minute, wantErr: "drift window 7m0s: want a whole number of milliseconds that divides 24h"},
		{name: "window over a day", window: 48 * time.Hour, wantErr: "drift window 48h0m0s"},
		{name: "window under a millisecond", window: time.Microsecond, wantErr: "drift window 1µs"},
		{name: "window of fractional milliseconds", window: 1500 * time.Microsecond, wantErr: "drift window 1.5ms"},
		{name: "negative window", window: -time.Hour, wantErr: "drift window -1h0m0s"},
		{name: "negative settle", settle: -time.Second, wantErr: "drift settle time -1s is negative"},
		{name: "negative eval", eval: -time.Second, wantErr: "drift evaluation interval -1s is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Config{DataDir: t.TempDir(), DriftWindow: tc.window, DriftSettle: tc.settle, DriftEvalInterval: tc.eval}.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("withDefaults: error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("withDefaults: %v", err)
			}
			if c.DriftWindow != tc.wantWindow || c.DriftSettle != tc.wantSettle || c.DriftEvalInterval != tc.wantEval {
				t.Errorf("drift window, settle, eval = %s, %s, %s; want %s, %s, %s",
					c.DriftWindow, c.DriftSettle, c.DriftEvalInterval, tc.wantWindow, tc.wantSettle, tc.wantEval)
			}
		})
	}
}

func TestConfigDriftCohortLabels(t *testing.T) {
	for _, tc := range []struct {
		name    string
		labels  []string
		wantErr string
	}{
		{name: "none"},
		{name: "two", labels: []string{"region", "site"}},
		{name: "four", labels: []string{"a", "b", "c", "d"}},
		{name: "five", labels: []string{"a", "b", "c", "d", "e"}, wantErr: "5 cohort labels given; at most 4"},
		{name: "twice", labels: []string{"region", "region"}, wantErr: `cohort label "region" is given twice`},
		{name: "empty", labels: []string{""}, wantErr: "cohort label is empty"},
		{name: "slash", labels: []string{"team/x"}, wantErr: `cohort label "team/x" has '/'`},
		{name: "equals", labels: []string{"a=b"}, wantErr: `cohort label "a=b" has '='`},
		{name: "too long", labels: []string{strings.Repeat("k", 64)}, wantErr: "a label key has at most 63"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Config{DataDir: t.TempDir(), DriftCohortLabels: tc.labels}.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "drift cohort labels") {
					t.Fatalf("withDefaults: error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("withDefaults: %v", err)
			}
			if len(c.DriftCohortLabels) != len(tc.labels) {
				t.Errorf("DriftCohortLabels = %q; want %q", c.DriftCohortLabels, tc.labels)
			}
		})
	}
}
