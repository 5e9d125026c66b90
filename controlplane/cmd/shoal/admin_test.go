package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// run runs the CLI against server and returns stdout, stderr and the error.
func run(t *testing.T, server string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := newRootCmd(&out, &errb)
	cmd.SetArgs(append([]string{"--server", server}, args...))
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func testModel(t *testing.T) string {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(strings.TrimSpace(string(dir)), "test_data", "example_dynamic_axes.onnx")
}

// TestAdminCommands drives the admin CLI against a real in-process control
// plane: tables for people, JSON for scripts, and clear errors.
func TestAdminCommands(t *testing.T) {
	cp := controltest.Start(t)
	s := cp.URL()

	out, _, err := run(t, s, "model", "list")
	if err != nil || !strings.Contains(out, "no models yet") {
		t.Fatalf("empty model list: %q %v", out, err)
	}
	out, _, err = run(t, s, "model", "push", "--name", "summer", "--version", "1", testModel(t))
	if err != nil || !strings.Contains(out, "pushed summer 1") || !strings.Contains(out, `"input_vectors" FP32[?,10]`) {
		t.Fatalf("push: %q %v", out, err)
	}
	junk := filepath.Join(t.TempDir(), "junk.onnx")
	os.WriteFile(junk, []byte("junk"), 0o644)
	if _, _, err := run(t, s, "model", "push", "--name", "junk", "--version", "1", junk); err == nil || !strings.Contains(err.Error(), "ONNX") {
		t.Fatalf("junk push error = %v", err)
	}
	if _, _, err := run(t, s, "model", "push", "--name", "x", testModel(t)); err == nil || !strings.Contains(err.Error(), "--version") {
		t.Fatalf("push without --version: %v", err)
	}

	out, _, err = run(t, s, "model", "list")
	if err != nil || !strings.Contains(out, "MODEL") || !strings.Contains(out, "summer") {
		t.Fatalf("model list: %q %v", out, err)
	}
	out, _, err = run(t, s, "model", "list", "--json")
	var models []struct{ Name, Latest string }
	if err != nil || json.Unmarshal([]byte(out), &models) != nil || len(models) != 1 || models[0].Latest != "1" {
		t.Fatalf("model list --json: %q %v", out, err)
	}
	out, _, err = run(t, s, "model", "show", "summer", "1", "--json")
	var mv struct {
		SHA256 string
		Inputs []struct{ Name string }
	}
	if err != nil || json.Unmarshal([]byte(out), &mv) != nil || len(mv.SHA256) != 64 || mv.Inputs[0].Name != "input_vectors" {
		t.Fatalf("model show --json: %q %v", out, err)
	}
	out, _, err = run(t, s, "model", "show", "summer")
	if err != nil || !strings.Contains(out, mv.SHA256[:12]) {
		t.Fatalf("model show: %q %v", out, err)
	}
	if _, _, err := run(t, s, "model", "show", "nope", "1"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("show unknown: %v", err)
	}
	out, _, err = run(t, s, "model", "signature", "summer", "1")
	if err != nil || len(strings.TrimSpace(out)) < 80 {
		t.Fatalf("signature: %q %v", out, err)
	}

	out, _, err = run(t, s, "token", "create", "--json")
	var tok struct{ Token string }
	if err != nil || json.Unmarshal([]byte(out), &tok) != nil || len(tok.Token) < 32 {
		t.Fatalf("token create --json: %q %v", out, err)
	}
	out, _, err = run(t, s, "devices")
	if err != nil || !strings.Contains(out, "no devices yet") {
		t.Fatalf("devices: %q %v", out, err)
	}
	if _, _, err := run(t, s, "deploy", "--model", "summer", "--version", "1", "--devices", "ghost"); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("deploy to an unknown device: %v", err)
	}
	if _, _, err := run(t, s, "deploy", "--model", "summer", "--version", "9"); err == nil {
		t.Fatal("deploy of an unknown version succeeded")
	}
	out, _, err = run(t, s, "telemetry", "--json")
	if err != nil || !strings.Contains(out, `"total"`) {
		t.Fatalf("telemetry --json: %q %v", out, err)
	}

	// A control plane that is not there: the error says what to do.
	if _, _, err := run(t, "http://127.0.0.1:1", "devices"); err == nil || !strings.Contains(err.Error(), "shoal serve") {
		t.Fatalf("unreachable server: %v", err)
	}
	if _, _, err := run(t, "not a url", "devices"); err == nil {
		t.Fatal("bad --server accepted")
	}
}
