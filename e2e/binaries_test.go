package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/trust"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds bin/shoal and bin/shoal-agent once per test run (with
// -race when the tests run with it) and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "shoal-e2e-bin-")
		if buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		for name, pkg := range map[string]string{"shoal": "./controlplane/cmd/shoal", "shoal-agent": "./agent/cmd/shoal-agent"} {
			args := []string{"build", "-o", filepath.Join(binDir, name)}
			if raceEnabled {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, pkg)...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a running binary whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     string
	done    chan error // receives the exit once; whoever reads it puts it back
	stopped bool       // stop has run
}

func start(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	bin := strings.Fields(name)[0]
	cmd := exec.Command(filepath.Join(binaries(t), bin), args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// agentAPIAddr matches the agent's start-up line, which names the local
// API's address (text log: api=127.0.0.1:PORT).
var agentAPIAddr = regexp.MustCompile(`shoal-agent starting\W.*\bapi=(\S+)`)

// startAgentProc starts `shoal-agent run args...` with --api-addr
// 127.0.0.1:0 and returns it with the local API's base URL, read from its
// log: the agent binds the port itself, so no other process can take it
// between a test choosing a free port and the agent binding it.
func startAgentProc(t *testing.T, dir, name string, args ...string) (*proc, string) {
	t.Helper()
	p := start(t, dir, name, append(args, "--api-addr", "127.0.0.1:0")...)
	var api string
	shoaltest.Eventually(t, name+" local API address in its log", func() error {
		if m := agentAPIAddr.FindStringSubmatch(p.output()); m != nil {
			api = "http://" + m[1]
			return nil
		}
		return p.exited()
	})
	return p, api
}

// output returns what the process has logged so far.
func (p *proc) output() string {
	data, _ := os.ReadFile(p.log)
	return string(data)
}

// exited returns an error if the process has exited (with the end of its
// log), or errors.New("running") while it runs: for waits that should fail
// at once when the process is gone.
func (p *proc) exited() error {
	select {
	case err := <-p.done:
		p.done <- err // keep it for stop
		return fmt.Errorf("%s exited (%v); log:\n%s", p.name, err, p.tail())
	default:
		return errors.New("running")
	}
}

// stop sends SIGTERM and waits for a clean exit. A process that exited on
// its own before is reported if it failed.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil && !p.stopped {
			t.Errorf("%s had exited with %v; log:\n%s", p.name, err, p.tail())
		}
		p.stopped = true
		return
	default:
	}
	if p.stopped {
		return
	}
	p.stopped = true
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s exited with %v; log:\n%s", p.name, err, p.tail())
		}
	case <-time.After(shoaltest.Patience):
		p.cmd.Process.Kill()
		p.done <- <-p.done
		t.Errorf("%s did not stop within %s of SIGTERM; log:\n%s", p.name, shoaltest.Patience, p.tail())
	}
}

func (p *proc) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

func shoal(t *testing.T, server string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), "shoal"), append([]string{"--server", server}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func httpGet(url string) ([]byte, int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return data, resp.StatusCode, err
}

func ortModel(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locate onnxruntime_go module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "test_data", name)
}

// inferSums runs the summer model (example_dynamic_axes.onnx: each row's
// sum) on two rows, 1..10 and 11..20, on the agent at api.
func inferSums(api string) ([]float64, error) {
	c, err := localclient.New(api)
	if err != nil {
		return nil, err
	}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	r, err := c.Infer(context.Background(), localclient.InferRequest{Model: "summer", Inputs: []localclient.Tensor{localclient.NewTensor("input_vectors", []int64{2, 10}, x)}})
	if err != nil {
		return nil, err
	}
	if len(r.Outputs) != 1 || r.Outputs[0].Name != "output_scalars" {
		return nil, fmt.Errorf("outputs = %+v; want output_scalars alone", r.Outputs)
	}
	return r.Outputs[0].Float64s()
}

// agentLive returns nil once the agent at api answers that it is live.
func agentLive(api string) error {
	c, err := localclient.New(api)
	if err != nil {
		return err
	}
	return c.Live(context.Background())
}

// TestBinariesSpine runs the real binaries as a new user would: serve,
// enroll two agents, refuse a non-ONNX push, push a PyTorch-exported model,
// deploy, predict on both agents; then restart one agent with the control
// plane down and no token: it serves its model from disk at once.
func TestBinariesSpine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	dir := t.TempDir()
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	server := "http://" + httpAddr
	cp := start(t, dir, "shoal serve", "serve", "--data-dir", filepath.Join(dir, "cp"), "--http-addr", httpAddr, "--mqtt-addr", mqttAddr)
	var pubPEM []byte
	shoaltest.Eventually(t, "control plane serving", func() error {
		data, code, err := httpGet(server + "/api/v1/trust/public-key")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		pubPEM = data
		return err
	})

	agents := map[string]string{}
	var agentProcs []*proc
	for _, id := range []string{"bin-a", "bin-b"} {
		out, err := shoal(t, server, "token", "create", "--json")
		if err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		var tok struct{ Token string }
		if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
			t.Fatalf("token create --json = %q (%v)", out, err)
		}
		p, api := startAgentProc(t, dir, "shoal-agent "+id, "run", "--data-dir", filepath.Join(dir, id), "--server", server,
			"--broker", "tcp://"+mqttAddr, "--device-id", id, "--enroll-token", tok.Token)
		agentProcs = append(agentProcs, p)
		agents[id] = api
		shoaltest.Eventually(t, id+" live", func() error { return agentLive(agents[id]) })
	}

	junk := filepath.Join(dir, "junk.onnx")
	os.WriteFile(junk, []byte("junk\n"), 0o644)
	if out, err := shoal(t, server, "model", "push", "--name", "junk", "--version", "1", junk); err == nil || !strings.Contains(out, "ONNX") {
		t.Fatalf("non-ONNX push: err=%v out=%q; want a refusal that says why", err, out)
	}

	model := ortModel(t, "example_dynamic_axes.onnx")
	if out, err := shoal(t, server, "model", "push", "--name", "summer", "--version", "1", model); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	if out, err := shoal(t, server, "deploy", "--model", "summer", "--version", "1"); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	for id, api := range agents {
		shoaltest.Eventually(t, id+" serving summer", func() error {
			got, err := inferSums(api)
			if err != nil {
				return err
			}
			if len(got) != 2 || got[0] != 55 || got[1] != 155 {
				t.Fatalf("%s: outputs %v; want [55 155]", id, got)
			}
			return nil
		})
	}
	out, err := shoal(t, server, "devices", "--json")
	if err != nil || !strings.Contains(out, "bin-a") || !strings.Contains(out, "bin-b") {
		t.Fatalf("devices --json: %v\n%s", err, out)
	}
	if out, err := shoal(t, server, "devices"); err != nil || !strings.Contains(out, "summer 1") {
		t.Fatalf("devices table: %v\n%s", err, out)
	}

	// The signature the CLI hands out verifies the artifact with the public key.
	sigFile := filepath.Join(dir, "summer.sig")
	if out, err := shoal(t, server, "model", "signature", "summer", "1", "-o", sigFile); err != nil {
		t.Fatalf("model signature: %v\n%s", err, out)
	}
	sig, _ := os.ReadFile(sigFile)
	v, err := trust.NewVerifier(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(model)
	defer f.Close()
	if err := v.VerifyBlob(f, string(sig)); err != nil {
		t.Fatalf("signature from `shoal model signature` does not verify: %v", err)
	}

	// cosign itself accepts it, when installed (.ci/run installs it).
	if cosign := cosignPath(); cosign != "" {
		pubFile := filepath.Join(dir, "shoal.pub")
		os.WriteFile(pubFile, pubPEM, 0o644)
		out, err := exec.Command(cosign, "verify-blob", "--key", pubFile, "--signature", sigFile, "--insecure-ignore-tlog=true", model).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verified OK") {
			t.Fatalf("cosign verify-blob: %v\n%s", err, out)
		}
		tampered := filepath.Join(dir, "tampered.onnx")
		data, _ := os.ReadFile(model)
		data[len(data)/2] ^= 1
		os.WriteFile(tampered, data, 0o644)
		if out, err := exec.Command(cosign, "verify-blob", "--key", pubFile, "--signature", sigFile, "--insecure-ignore-tlog=true", tampered).CombinedOutput(); err == nil {
			t.Fatalf("cosign accepted a tampered model:\n%s", out)
		}
	} else {
		t.Log("cosign not installed: checked the signature with the Go verifier only")
	}

	// Offline restart: stop everything, start agent a again with no token
	// and no control plane or broker: it serves from disk.
	agentProcs[0].stop(t)
	cp.stop(t)
	_, api := startAgentProc(t, dir, "shoal-agent bin-a-restart", "run", "--data-dir", filepath.Join(dir, "bin-a"), "--server", server,
		"--broker", "tcp://"+mqttAddr, "--device-id", "bin-a")
	shoaltest.Eventually(t, "restarted agent serving offline", func() error {
		got, err := inferSums(api)
		if err != nil {
			return err
		}
		if len(got) != 2 || got[0] != 55 {
			return fmt.Errorf("outputs %v", got)
		}
		return nil
	})
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cosignPath finds cosign on PATH, in $COSIGN, or where .ci/run installs it.
func cosignPath() string {
	if p := os.Getenv("COSIGN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	if p := filepath.Join(home, ".cache", "shoal", "tools", "cosign"); fileExists(p) {
		return p
	}
	return ""
}
