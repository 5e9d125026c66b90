package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/internal/buildinfo"
)

func parse(t *testing.T, args ...string) (*Main, error) {
	t.Helper()
	m := NewMain()
	m.Stderr = &bytes.Buffer{}
	return m, m.ParseFlags(args)
}

func TestGoodConfigFiles(t *testing.T) {
	t.Setenv(tokenEnv, "")
	m, err := parse(t, "--config", "testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := settings{
		Config: agent.Config{
			DataDir: "/var/lib/shoal-agent", ServerURL: "http://10.0.0.1:8080", BrokerURL: "tcp://10.0.0.1:1883",
			DeviceID: "pump-7", EnrollToken: "s3cret-token", APIAddr: "127.0.0.1:9191",
			ONNXRuntimeLib: "/opt/ort/libonnxruntime.so.1", Profile: "raspberry-pi-4", TelemetryWindow: 30 * time.Second, StatsWindow: 5 * time.Minute,
			OutboxMaxBytes: 1 << 20, OutboxSyncInterval: 250 * time.Millisecond, OutboxMinFreeBytes: 8 << 20, SyncWrites: true, IntraOpThreads: 2,
			Labels: map[string]string{"site": "berlin", "tier": "edge"}, Group: "pumps", HealthMinPredictions: 50, HealthMinTime: time.Minute,
		},
		LogLevel: slog.LevelDebug, LogFormat: "json",
	}
	if !reflect.DeepEqual(m.Settings, want) {
		t.Errorf("good.yaml:\n got %+v\nwant %+v", m.Settings, want)
	}

	m, err = parse(t, "--config", "testdata/good.json")
	if err != nil {
		t.Fatal(err)
	}
	s := m.Settings
	if s.DataDir != "/var/lib/shoal-agent" || s.DeviceID != "pump-7" || s.TelemetryWindow != 30*time.Second || !s.SyncWrites || s.IntraOpThreads != 2 {
		t.Errorf("good.json: %+v", s)
	}

	m, err = parse(t, "--config", "testdata/empty.yaml", "--data-dir", "/d")
	if err != nil || m.Settings.DataDir != "/d" || m.Settings.LogFormat != "text" || m.Settings.LogLevel != slog.LevelInfo {
		t.Errorf("empty file: %+v, %v", m.Settings, err)
	}
}

func TestFlagsOverrideTheFile(t *testing.T) {
	// Flags before or after --config: flags win either way.
	m, err := parse(t, "--device-id", "other", "--config", "testdata/good.yaml", "--sync-writes=false", "--log-format", "text")
	if err != nil {
		t.Fatal(err)
	}
	s := m.Settings
	if s.DeviceID != "other" || s.SyncWrites || s.LogFormat != "text" {
		t.Errorf("flags did not override: %+v", s)
	}
	if s.ServerURL != "http://10.0.0.1:8080" || s.Profile != "raspberry-pi-4" {
		t.Errorf("file values lost: %+v", s)
	}
	m, err = parse(t, "--sync-writes", "--data-dir", "/d")
	if err != nil || !m.Settings.SyncWrites {
		t.Errorf("bare --sync-writes: %+v, %v", m.Settings, err)
	}
	// 0 turns periodic syncs off: the agent's "never" is negative, since
	// its zero value means the default. The same for the health criteria.
	m, err = parse(t, "--config", "testdata/good.yaml", "--outbox-sync-interval", "0", "--health-min-predictions", "0", "--health-min-time", "0", "--stats-window", "0")
	if err != nil || m.Settings.OutboxSyncInterval >= 0 || m.Settings.HealthMinPredictions >= 0 || m.Settings.HealthMinTime >= 0 || m.Settings.StatsWindow >= 0 {
		t.Errorf("--outbox-sync-interval 0 --health-min-predictions 0 --health-min-time 0 --stats-window 0: %v, %v, %v, %v, %v",
			m.Settings.OutboxSyncInterval, m.Settings.HealthMinPredictions, m.Settings.HealthMinTime, m.Settings.StatsWindow, err)
	}
	if m, err = parse(t, "--config", "testdata/good.yaml", "--stats-window", "90s"); err != nil || m.Settings.StatsWindow != 90*time.Second {
		t.Errorf("--stats-window 90s over the file: %v, %v", m.Settings.StatsWindow, err)
	}
	// --label may be repeated; the flags' labels replace the file's.
	m, err = parse(t, "--label", "site=hamburg", "--config", "testdata/good.yaml", "--label", "owner=ops=team", "--label", "empty=", "--group", "valves")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"site": "hamburg", "owner": "ops=team", "empty": ""}; !maps.Equal(m.Settings.Labels, want) || m.Settings.Group != "valves" {
		t.Errorf("--label and --group over the file: %v, %q; want %v, valves", m.Settings.Labels, m.Settings.Group, want)
	}
}

func TestTokenFromEnvironment(t *testing.T) {
	t.Setenv(tokenEnv, "from-env")
	m, err := parse(t, "--data-dir", "/d")
	if err != nil || m.Settings.EnrollToken.Reveal() != "from-env" {
		t.Errorf("token = %q, %v", m.Settings.EnrollToken.Reveal(), err)
	}
	m, err = parse(t, "--data-dir", "/d", "--enroll-token", "from-flag")
	if err != nil || m.Settings.EnrollToken.Reveal() != "from-flag" {
		t.Errorf("flag should beat the environment: %q, %v", m.Settings.EnrollToken.Reveal(), err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "testdata/unknown-key.bad.yaml"}, `testdata/unknown-key.bad.yaml:2: unknown key "data_dir" (did you mean "data-dir"?)`},
		{[]string{"--config", "testdata/typo-key.bad.yaml"}, `testdata/typo-key.bad.yaml:3: unknown key "brokers"; the keys are: api-addr, broker,`},
		{[]string{"--config", "testdata/duplicate.bad.yaml"}, `testdata/duplicate.bad.yaml:3: key "data-dir" is set twice (first on line 1)`},
		{[]string{"--config", "testdata/duration.bad.yaml"}, `testdata/duration.bad.yaml:2: telemetry-window: "10 seconds" is not a positive duration`},
		{[]string{"--config", "testdata/bool.bad.yaml"}, `testdata/bool.bad.yaml:1: sync-writes: "sometimes" is not true or false`},
		{[]string{"--config", "testdata/list.bad.yaml"}, `testdata/list.bad.yaml:1: the config file must map keys to values`},
		{[]string{"--config", "testdata/nested.bad.yaml"}, `testdata/nested.bad.yaml:2: key "data-dir" wants a single value`},
		{[]string{"--config", "testdata/null.bad.yaml"}, `testdata/null.bad.yaml:1: key "data-dir" has no value`},
		{[]string{"--config", "testdata/syntax.bad.yaml"}, `config file testdata/syntax.bad.yaml: line 2`},
		{[]string{"--config", "testdata/loglevel.bad.yaml"}, `testdata/loglevel.bad.yaml:1: log-level: "loud" is not one of debug, info, warn, error`},
		{[]string{"--config", "testdata/threads.bad.json"}, `testdata/threads.bad.json:3: intra-op-threads: "-1" is not a number of threads`},
		{[]string{"--config", "testdata/unknown.bad.json"}, `testdata/unknown.bad.json:3: unknown key "dataDir"`},
		{[]string{"--config", "testdata/missing.yaml"}, `config file: open testdata/missing.yaml: no such file or directory`},
		{[]string{"--telemetry-window", "soon"}, `--telemetry-window: "soon" is not a positive duration`},
		{[]string{"--stats-window", "-1m"}, `--stats-window: "-1m" is not a duration`},
		{[]string{"--log-format", "xml"}, `--log-format: "xml" is not text or json`},
		{[]string{"--outbox-sync-interval", "-1s"}, `--outbox-sync-interval: "-1s" is not a duration`},
		{[]string{"--outbox-min-free-bytes", "0"}, `--outbox-min-free-bytes: "0" is not a positive number of bytes`},
		{[]string{"--label", "site"}, `--label: "site" is not key=value`},
		{[]string{"--label", "=berlin"}, `--label: a label has an empty key`},
		{[]string{"--label", "a=1", "--label", "a=2"}, `--label: key "a" is given twice`},
		{[]string{"--health-min-predictions", "-1"}, `--health-min-predictions: "-1" is not a number of predictions`},
		{[]string{"--health-min-time", "soon"}, `--health-min-time: "soon" is not a duration`},
		{[]string{"--config", "testdata/labels.bad.yaml"}, `testdata/labels.bad.yaml:2: key "labels" wants a mapping of keys to values`},
		{[]string{"--config", "testdata/label-key.bad.yaml"}, `testdata/label-key.bad.yaml:2: labels: a label has an empty key`},
		{[]string{"--config", "testdata/label-flag.bad.yaml"}, `testdata/label-flag.bad.yaml:1: unknown key "label" (did you mean "labels"?)`},
		{[]string{"--no-such-flag"}, `flag provided but not defined: -no-such-flag`},
		{[]string{"--data-dir", "/d", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parse(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseFlags(%q) = %v;\nwant an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestSecretsStayOutOfOutput(t *testing.T) {
	m, err := parse(t, "--data-dir", "/d", "--enroll-token", "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	m.Stderr = &logs
	m.Settings.LogFormat = "json"
	m.logger().Info("settings", "config", m.Settings.Config, "token", m.Settings.EnrollToken)
	for _, s := range []string{
		logs.String(),
		fmt.Sprintf("%v|%+v|%#v|%s|%q", m.Settings, m.Settings, m.Settings, m.Settings.EnrollToken, m.Settings.EnrollToken),
	} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("the token leaked: %s", s)
		}
	}
	if !strings.Contains(logs.String(), "[redacted]") {
		t.Errorf("log does not show the token as redacted: %s", logs.String())
	}
}

func TestCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "shoal-agent "+buildinfo.Version) {
		t.Errorf("version: %d %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run([]string{"bogus"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown command "bogus"`) {
		t.Errorf("bogus: %d %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"run", "-h"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "-data-dir") {
		t.Errorf("run -h: %d %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"run"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no data directory: pass --data-dir") {
		t.Errorf("run without --data-dir: %d %q", code, errOut.String())
	}
}

func TestRunNeverEnrolledWithoutToken(t *testing.T) {
	t.Setenv(tokenEnv, "")
	dir := t.TempDir()
	m, err := parse(t, "--data-dir", dir, "--server", "http://127.0.0.1:1", "--device-id", "d1")
	if err != nil {
		t.Fatal(err)
	}
	err = m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not enrolled yet") || !strings.Contains(err.Error(), "--enroll-token") ||
		!strings.Contains(err.Error(), filepath.Join(dir, "identity.json")) {
		t.Errorf("Run = %v; want an error saying to pass --enroll-token", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
