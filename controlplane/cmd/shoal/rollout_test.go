package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// writeFile writes a file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rolloutJSON runs a rollout command with --json and decodes its answer.
func rolloutJSON(t *testing.T, server string, args ...string) client.Rollout {
	t.Helper()
	out, _, err := run(t, server, append(args, "--json")...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	var r client.Rollout
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v --json: %v\n%s", args, err, out)
	}
	return r
}

// runIn is run with stdin as the command's standard input.
func runIn(t *testing.T, stdin, server string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := newRootCmd(&out, &errb)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"--server", server}, args...))
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

// desiredOf is the version of model in each device's desired state, as
// `shoal devices --json` shows it (devices without one are left out).
func desiredOf(t *testing.T, server, model string) map[string]string {
	t.Helper()
	out, _, err := run(t, server, "devices", "--json")
	if err != nil {
		t.Fatalf("devices --json: %v", err)
	}
	var devs []client.Device
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		t.Fatalf("devices --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, d := range devs {
		for _, m := range d.Models {
			if m.Name == model && m.DesiredVersion != "" {
				got[d.ID] = m.DesiredVersion
			}
		}
	}
	return got
}

// specOf is the JSON of the spec the server stored for r (defaults filled
// in), decoded generically.
func specOf(t *testing.T, r client.Rollout) map[string]any {
	t.Helper()
	var spec map[string]any
	data, err := json.Marshal(r.Spec)
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err != nil {
		t.Fatalf("spec of %s: %v\n%+v", r.ID, err, r.Spec)
	}
	return spec
}

// TestRolloutCommands drives `shoal rollout` against a real control plane.
// Its devices are enrolled but never connect, so the rollouts stay where
// the commands put them: a stage before the last passes the offline
// devices over (they stay "pending" and are sent nothing), and the last
// stage (the only one, in a single-stage rollout) notifies them, and
// finds them "offline".
func TestRolloutCommands(t *testing.T) {
	cp := controltest.Start(t)
	s := cp.URL()
	onnx, err := os.ReadFile(testModel(t))
	if err != nil {
		t.Fatal(err)
	}
	cp.PushModel(t, "summer", "1", onnx)
	cp.PushModel(t, "summer", "2", onnx)
	enrollDevice(t, cp, "pump-1", `,"labels":{"env":"prod"}`)
	enrollDevice(t, cp, "pump-2", `,"labels":{"env":"prod"}`)
	enrollDevice(t, cp, "pump-3", `,"labels":{"env":"dev"}`)

	out, _, err := run(t, s, "rollout", "list")
	if err != nil || !strings.Contains(out, "no rollouts yet") {
		t.Fatalf("empty rollout list: %q %v", out, err)
	}

	// From a YAML file: the table of the new rollout.
	yamlSpec := writeFile(t, "prod.yaml", `# summer 1 to production
model: summer
version: "1"
selector:
  labels: {env: prod}
on_failure: rollback
health: {predictions: 10, seconds: 30}
stages:
  - {name: canary, count: 1, soak: 10m, timeout: 15m}
  - name: all
    percent: 100
    failure: {max_percent: 50}
`)
	out, _, err = run(t, s, "rollout", "create", "-f", yamlSpec)
	if err != nil {
		t.Fatalf("create -f prod.yaml: %v", err)
	}
	for _, want := range []string{
		"rollout r1: summer 1, running, stage canary, 2 devices",
		"STAGE", "NOTIFIED", "canary", "all",
		"DEVICE", "PHASE", "pump-1", "pump-2", "pending",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pump-3") {
		t.Errorf("pump-3 (env=dev) is in the env=prod rollout:\n%s", out)
	}
	// Both devices are offline and the canary is not the last stage: it
	// passed them over, so they wait, pending, and were sent nothing.
	r1 := rolloutJSON(t, s, "rollout", "show", "r1")
	if r1.Stages[0].Notified != 0 || r1.Phases["pending"] != 2 {
		t.Errorf("r1: canary %+v, phases %v; want no device notified, both pending", r1.Stages[0], r1.Phases)
	}
	for _, d := range r1.Devices {
		if d.Phase != "pending" || d.Stage != "" || d.NotifiedAt != nil {
			t.Errorf("device of r1 = %+v; want pending, not notified", d)
		}
	}
	if got := desiredOf(t, s, "summer"); len(got) != 0 {
		t.Errorf("desired summer after r1's canary = %v; want none", got)
	}
	spec := specOf(t, r1)
	stages := spec["stages"].([]any)
	canary, all := stages[0].(map[string]any), stages[1].(map[string]any)
	if spec["on_failure"] != "rollback" || canary["on_failure"] != "rollback" || canary["soak"] != "10m0s" || canary["timeout"] != "15m0s" ||
		all["timeout"] != "10m0s" || all["failure"].(map[string]any)["max_percent"] != 50.0 {
		t.Errorf("spec from YAML = %+v", r1.Spec)
	}
	if h := spec["health"].(map[string]any); h["predictions"] != 10.0 || h["seconds"] != 30.0 {
		t.Errorf("health from YAML = %v", h)
	}

	// The same from JSON (YAML's superset), with --json.
	jsonSpec := writeFile(t, "dev.json", `{"model": "summer", "version": "1",
  "selector": {"labels": {"env": "dev"}},
  "stages": [{"name": "only", "percent": 100}]}`)
	r2 := rolloutJSON(t, s, "rollout", "create", "-f", jsonSpec)
	if r2.ID != "r2" || r2.State != "running" || r2.Targets != 1 || len(r2.Devices) != 1 || r2.Devices[0].ID != "pump-3" ||
		len(r2.Stages) != 1 || r2.Stages[0].Name != "only" {
		t.Fatalf("create -f dev.json = %+v", r2)
	}
	// Its only stage is the last: it notifies pump-3, offline, which
	// converges when it returns.
	if d := r2.Devices[0]; d.Phase != "offline" || d.Stage != "only" || d.NotifiedAt == nil || r2.Stages[0].Offline != 1 {
		t.Errorf("pump-3 in r2 = %+v, stage %+v; want offline, notified by the only stage", d, r2.Stages[0])
	}
	if got := desiredOf(t, s, "summer"); fmt.Sprint(got) != "map[pump-3:1]" {
		t.Errorf("desired summer after r2 = %v; want pump-3 on 1 alone", got)
	}

	// Mistakes in the file: the server's error names the field.
	for _, tc := range []struct {
		name, content, text string
	}{
		{"typo.yaml", "model: summer\nversion: \"2\"\nstages:\n  - {name: all, precent: 100}\n", `"precent"`},
		{"gate.yaml", "model: summer\nversion: \"2\"\nstages:\n  - name: all\n    percent: 100\n    failure: {max_pecent: 5}\n", `"max_pecent"`},
		{"size.yaml", "model: summer\nversion: \"2\"\nstages:\n  - {name: all, percent: 120}\n", "percent 120"},
		{"list.yaml", "- model: summer\n", "want a mapping"},
		{"broken.yaml", "model: [summer\n", "neither YAML nor JSON"},
	} {
		_, _, err := run(t, s, "rollout", "create", "-f", writeFile(t, tc.name, tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("create -f %s: error %v; want it to say %q", tc.name, err, tc.text)
		}
	}

	// From flags: --stages makes a canary of two devices, then all;
	// --supersede takes the devices over from r1 and r2.
	r3 := rolloutJSON(t, s, "rollout", "create", "--model", "summer", "--version", "2", "--stages", "2,100%",
		"--soak", "1m", "--on-failure", "rollback", "--max-failures", "1", "--supersede")
	if r3.ID != "r3" || r3.Version != "2" || r3.Targets != 3 || r3.Stage != "canary" || len(r3.Stages) != 2 ||
		r3.Stages[0].Size != 2 || r3.Stages[1].Name != "all" || r3.Stages[1].Size != 3 {
		t.Errorf("create from flags = %+v", r3)
	}
	spec = specOf(t, r3)
	canary = spec["stages"].([]any)[0].(map[string]any)
	if canary["count"] != 2.0 || canary["soak"] != "1m0s" || canary["on_failure"] != "rollback" ||
		canary["failure"].(map[string]any)["max_count"] != 1.0 || spec["supersede"] != true {
		t.Errorf("spec from flags = %+v", r3.Spec)
	}
	for _, id := range []string{"r1", "r2"} {
		if r := rolloutJSON(t, s, "rollout", "show", id); r.State != "aborted" || r.Reason != "superseded by rollout r3" {
			t.Errorf("%s after --supersede: %s, %q", id, r.State, r.Reason)
		}
	}
	// Without --supersede the same is refused, naming the holder.
	_, _, err = run(t, s, "rollout", "create", "--model", "summer", "--version", "1", "--devices", "pump-1")
	if err == nil || !strings.Contains(err.Error(), "rollout r3 of model summer already holds pump-1") {
		t.Errorf("overlapping create: %v; want the holder named", err)
	}
	for _, tc := range []struct {
		args []string
		text string
	}{
		{[]string{"--model", "summer", "--version", "2", "--stages", "2,lots"}, `"lots"`},
		{[]string{"--model", "summer", "--version", "2", "--stages", "x%"}, `"x%" is not a percentage`},
		{[]string{"--model", "summer"}, "--version"},
		{[]string{"--model", "summer", "--version", "2", "-f", yamlSpec}, "--model cannot be combined with -f: the file describes the rollout (only --supersede, --wait and --quiet-devices can)"},
		{[]string{"-f", yamlSpec, "--version", "2"}, "--version cannot be combined with -f"},
		{[]string{"-f", yamlSpec, "--stages", "1,100%"}, "--stages cannot be combined with -f"},
		{[]string{"--model", "summer", "--version", "2", "--selector", "env"}, "key=value"},
		{[]string{"--model", "summer", "--version", "2", "--stages", "1"}, "covers 1 of the 3 devices"},
		{[]string{"--model", "summer", "--version", "9"}, `"9"`},
		{[]string{"--model", "summer", "--version", "2", "--on-failure", "retry"}, `on_failure "retry"`},
	} {
		if _, _, err := run(t, s, append([]string{"rollout", "create"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("create %v: error %v; want it to say %q", tc.args, err, tc.text)
		}
	}

	// list: newest first, a table for people and JSON for scripts.
	out, _, err = run(t, s, "rollout", "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATE") || !strings.Contains(lines[0], "OFFLINE") {
		t.Fatalf("rollout list:\n%s", out)
	}
	for i, want := range [][]string{{"r3", "summer", "2", "running", "canary", "3"}, {"r2", "aborted", "only", "1"}, {"r1", "aborted", "canary", "2"}} {
		if f := strings.Fields(lines[i+1]); f[0] != want[0] || !containsAll(f, want[1:]) {
			t.Errorf("list row %d = %q; want %v", i+1, lines[i+1], want)
		}
	}
	out, _, err = run(t, s, "rollout", "list", "--model", "summer", "--json")
	var list struct {
		Rollouts []client.Rollout `json:"rollouts"`
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Rollouts) != 3 || list.Rollouts[0].ID != "r3" {
		t.Fatalf("list --json: %q %v", out, err)
	}
	if got := list.Rollouts[0].Phases; fmt.Sprint(got) != "map[pending:3]" {
		t.Errorf("r3's phases in the list = %v; want 3 pending (offline, passed over by the canary)", got)
	}
	if out, _, err = run(t, s, "rollout", "list", "--model", "winter", "--json"); err != nil || !strings.Contains(out, `"rollouts": []`) {
		t.Errorf("list --model winter --json = %q %v; want an empty list", out, err)
	}

	// show: stages, devices and events; --json has each device's phase.
	out, _, err = run(t, s, "rollout", "show", "r3")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"rollout r3: summer 2, running, stage canary, 3 devices",
		"STAGE", "DEVICE", "PREVIOUS", "TIME", "EVENT",
		"rollout of summer 2 to 3 devices in 2 stages",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show r3 lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "→ offline") || strings.Contains(out, "→ notified") {
		t.Errorf("show r3 has a device notified by the canary, although every one is offline:\n%s", out)
	}
	for _, dev := range []string{"pump-1", "pump-2", "pump-3"} {
		if !strings.Contains(out, dev) {
			t.Errorf("show r3 lacks device %s:\n%s", dev, out)
		}
	}
	r3 = rolloutJSON(t, s, "rollout", "show", "r3")
	if len(r3.Devices) != 3 || len(r3.Events) == 0 || r3.Events[0].Type != "created" {
		t.Fatalf("show r3 --json = %+v", r3)
	}
	var types []string
	for _, ev := range r3.Events {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "created,stage_started" {
		t.Errorf("events of r3 = %v; want no device event while its canary waits", types)
	}
	for _, d := range r3.Devices {
		if d.Phase != "pending" || d.Stage != "" || d.NotifiedAt != nil {
			t.Errorf("device in show --json = %+v; want pending, passed over by the canary", d)
		}
	}
	// r3 sent nothing: pump-3 still has r2's version.
	if got := desiredOf(t, s, "summer"); fmt.Sprint(got) != "map[pump-3:1]" {
		t.Errorf("desired summer during r3's canary = %v; want pump-3 on 1 alone", got)
	}
	if _, _, err := run(t, s, "rollout", "show", "r9"); err == nil || !strings.Contains(err.Error(), `"r9"`) {
		t.Errorf("show r9: %v", err)
	}
	// --watch on a rollout that is over prints its events and stops.
	out, _, err = run(t, s, "rollout", "show", "r1", "--watch")
	if err != nil || !strings.Contains(out, "superseded by rollout r3") || !strings.Contains(out, "[aborted] stage canary") {
		t.Errorf("show r1 --watch: %v\n%s", err, out)
	}

	// pause, resume, abort.
	out, _, err = run(t, s, "rollout", "pause", "r3")
	if err != nil || !strings.Contains(out, "rollout r3: summer 2, paused") || !strings.Contains(out, "reason: paused by an operator") {
		t.Errorf("pause: %v\n%s", err, out)
	}
	if _, _, err := run(t, s, "rollout", "pause", "r3"); err == nil || !strings.Contains(err.Error(), "pause rollout r3") || !strings.Contains(err.Error(), "cannot be paused") {
		t.Errorf("pause of a paused rollout: %v", err)
	}
	if r := rolloutJSON(t, s, "rollout", "resume", "r3"); r.State != "running" || r.Reason != "" {
		t.Errorf("resume: %s, %q", r.State, r.Reason)
	}
	if _, _, err := run(t, s, "rollout", "resume", "r3"); err == nil || !strings.Contains(err.Error(), "cannot be resumed") {
		t.Errorf("resume of a running rollout: %v", err)
	}
	if r := rolloutJSON(t, s, "rollout", "abort", "r3"); r.State != "aborted" || r.EndedAt == nil || !r.Ended() {
		t.Errorf("abort: %+v", r)
	}
	if _, _, err := run(t, s, "rollout", "promote", "r3"); err == nil || !strings.Contains(err.Error(), "r3 is aborted") {
		t.Errorf("promote of an aborted rollout: %v", err)
	}
	if _, _, err := run(t, s, "rollout", "abort", "r9"); err == nil || !strings.Contains(err.Error(), `"r9"`) {
		t.Errorf("abort r9: %v", err)
	}
	// Once r3 is over the devices are free for a direct deployment.
	if out, _, err := run(t, s, "deploy", "--model", "summer", "--version", "1", "--devices", "pump-1"); err != nil {
		t.Errorf("deploy after abort: %v\n%s", err, out)
	}

	// -f - reads the spec from standard input; an unquoted `version: 2`
	// (a YAML number) is sent as the version "2".
	out, _, err = runIn(t, "model: summer\nversion: 2\nstages:\n  - {name: all, percent: 100}\n", s, "rollout", "create", "-f", "-", "--json")
	if err != nil {
		t.Fatalf("create -f - (stdin): %v\n%s", err, out)
	}
	var r4 client.Rollout
	if err := json.Unmarshal([]byte(out), &r4); err != nil {
		t.Fatalf("create -f - --json: %v\n%s", err, out)
	}
	if r4.ID != "r4" || r4.Version != "2" || specOf(t, r4)["version"] != "2" || r4.Targets != 3 || r4.Phases["offline"] != 3 {
		t.Errorf("create -f - = %+v; want r4 of summer 2 to the 3 devices, all offline", r4)
	}
	if got := desiredOf(t, s, "summer"); fmt.Sprint(got) != "map[pump-1:2 pump-2:2 pump-3:2]" {
		t.Errorf("desired summer after r4 = %v; want every device on 2", got)
	}
	if _, _, err := runIn(t, "", s, "rollout", "create", "-f", "-"); err == nil {
		t.Error("create -f - with an empty standard input was accepted")
	}

	// -f FILE with --supersede: the flag is merged into the file's spec.
	takeOver := writeFile(t, "take-over.yaml", "model: summer\nversion: \"1\"\nselector: {devices: [pump-1]}\nstages:\n  - {name: all, percent: 100}\n")
	if _, _, err := run(t, s, "rollout", "create", "-f", takeOver); err == nil || !strings.Contains(err.Error(), "rollout r4 of model summer already holds pump-1") {
		t.Errorf("create -f take-over.yaml without --supersede: %v; want r4 named as the holder", err)
	}
	r5 := rolloutJSON(t, s, "rollout", "create", "-f", takeOver, "--supersede")
	if r5.ID != "r5" || r5.Version != "1" || r5.Targets != 1 || specOf(t, r5)["supersede"] != true {
		t.Errorf("create -f take-over.yaml --supersede = %+v", r5)
	}
	if r := rolloutJSON(t, s, "rollout", "show", "r4"); r.State != "aborted" || r.Reason != "superseded by rollout r5" {
		t.Errorf("r4 after -f --supersede: %s, %q", r.State, r.Reason)
	}
	if got := desiredOf(t, s, "summer"); got["pump-1"] != "1" {
		t.Errorf("pump-1's desired summer after r5 = %q; want 1", got["pump-1"])
	}
}

func containsAll(fields, want []string) bool {
	for _, w := range want {
		if !slices.Contains(fields, w) {
			return false
		}
	}
	return true
}
