package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	firmwareprofiles "github.com/shoalfleet/shoal/firmware-profiles"
)

// parseOn parses args as on a machine with the given facts.
func parseOn(t *testing.T, facts firmwareprofiles.Facts, args ...string) (*Main, error) {
	t.Helper()
	m := NewMain()
	m.Stderr = &bytes.Buffer{}
	m.facts = func() firmwareprofiles.Facts { return facts }
	return m, m.ParseFlags(args)
}

var (
	riscv = firmwareprofiles.Facts{Arch: "riscv64", OS: "linux"}
	pi4   = firmwareprofiles.Facts{Arch: "arm64", OS: "linux", Board: "Raspberry Pi 4 Model B Rev 1.4"}
)

const known = "the known profiles are: generic-amd64, generic-arm64, jetson-orin, nvidia-gpu-amd64, raspberry-pi-4"

func TestUnknownProfile(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", "/d", "--profile", "rpi4"}, `--profile: "rpi4" is not a known firmware profile; ` + known},
		{[]string{"--config", "testdata/profile.bad.yaml"}, `testdata/profile.bad.yaml:2: profile: "jetson-nano" is not a known firmware profile; ` + known},
		// A flag replaces the file's bad name.
		{[]string{"--config", "testdata/profile.bad.yaml", "--profile", "Jetson-Orin"}, `--profile: "Jetson-Orin" is not a known`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseOn(t, pi4, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseFlags(%q) = %v;\nwant an error containing %q", tc.args, err, tc.want)
			}
		})
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"run", "--data-dir", t.TempDir(), "--profile", "rpi4"}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), `shoal-agent: --profile: "rpi4" is not a known firmware profile; `+known) {
		t.Errorf("run --profile rpi4: exit %d, %q", code, errOut.String())
	}
	if _, err := parseOn(t, pi4, "--config", "testdata/profile.bad.yaml", "--profile", "jetson-orin"); err != nil {
		t.Errorf("a good --profile should replace the file's unknown one: %v", err)
	}
}

func TestProfileDefaults(t *testing.T) {
	type limits struct {
		outbox  int64
		window  time.Duration
		threads int
	}
	for _, tc := range []struct {
		name    string
		facts   firmwareprofiles.Facts
		args    []string
		profile string
		want    limits
	}{
		{"named", riscv, []string{"--profile", "raspberry-pi-4"}, "raspberry-pi-4", limits{16 << 20, 30 * time.Second, 3}},
		{"named beats detected", pi4, []string{"--profile", "jetson-orin"}, "jetson-orin", limits{256 << 20, 10 * time.Second, 4}},
		{"flags override the profile", riscv,
			[]string{"--profile", "raspberry-pi-4", "--outbox-max-bytes", "2000000", "--telemetry-window", "5s", "--intra-op-threads", "0"},
			"raspberry-pi-4", limits{2000000, 5 * time.Second, 0}},
		{"one flag, the rest from the profile", riscv, []string{"--profile", "raspberry-pi-4", "--intra-op-threads", "1"}, "raspberry-pi-4", limits{16 << 20, 30 * time.Second, 1}},
		{"the file overrides the profile", riscv, []string{"--config", "testdata/profile-limits.yaml"}, "raspberry-pi-4", limits{16 << 20, time.Minute, 3}},
		{"flags override the file", riscv, []string{"--config", "testdata/profile-limits.yaml", "--telemetry-window", "20s"}, "raspberry-pi-4", limits{16 << 20, 20 * time.Second, 3}},
		{"detected", pi4, nil, "raspberry-pi-4", limits{16 << 20, 30 * time.Second, 3}},
		{"detected, flags override", pi4, []string{"--telemetry-window", "2s"}, "raspberry-pi-4", limits{16 << 20, 2 * time.Second, 3}},
		{"none detected: the agent's defaults", riscv, nil, "", limits{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseOn(t, tc.facts, append([]string{"--data-dir", "/d"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			s := m.Settings
			got := limits{s.OutboxMaxBytes, s.TelemetryWindow, s.IntraOpThreads}
			if s.Profile != tc.profile || got != tc.want {
				t.Errorf("profile %q, limits %+v; want %q, %+v", s.Profile, got, tc.profile, tc.want)
			}
		})
	}
}

func TestProfileLogged(t *testing.T) {
	for _, tc := range []struct {
		facts firmwareprofiles.Facts
		args  []string
		want  []string
	}{
		{pi4, nil, []string{`level=INFO msg="firmware profile detected" profile=raspberry-pi-4 arch=arm64 os=linux board="Raspberry Pi 4 Model B Rev 1.4"`, "outbox_max_bytes=16777216 telemetry_window=30s intra_op_threads=3"}},
		{riscv, nil, []string{`level=WARN msg="no firmware profile matches this device; using the agent's defaults (pass --profile NAME to choose one)" arch=riscv64`, `known="generic-amd64, generic-arm64,`, "outbox_max_bytes=default telemetry_window=default intra_op_threads=0"}},
		{riscv, []string{"--profile", "jetson-orin", "--intra-op-threads", "2"}, []string{
			`msg="firmware profile" profile=jetson-orin set_by=--profile outbox_max_bytes=268435456 telemetry_window=10s intra_op_threads=2`,
			`msg="the profile prefers another execution provider; this agent runs models on the CPU only for now" profile=jetson-orin preferred=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider using=CPUExecutionProvider`,
		}},
	} {
		m, err := parseOn(t, tc.facts, append([]string{"--data-dir", "/d"}, tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		m.profile.log(slog.New(slog.NewTextHandler(&logs, nil)), m.Settings)
		for _, w := range tc.want {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("%v: log\n%s\nwant it to contain %s", tc.args, logs.String(), w)
			}
		}
	}
}
