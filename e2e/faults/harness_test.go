// Harness for the fault-injection tests: the real binaries as processes
// that can be stopped, killed and started again on the same data
// directories and ports, and the waits and exact counts the tests assert
// with. Scenarios (the other _test.go files) only compose these:
//
//	bins            builds shoal and shoal-agent -tags failpoints once per run
//	                (-race when the test binary has it)
//	Proc            one run of a binary: its own log file, the failpoint
//	                lines in it, signals, exit status
//	ControlPlane    `shoal serve` on a fixed data dir and ports: Start, Stop
//	                (SIGTERM), Kill (SIGKILL), an API client, push, deploy,
//	                telemetry and device waits
//	Agent           `shoal-agent run` on a fixed data dir and API port:
//	                Start(failpoints) (waits for its API), Launch (does not),
//	                Stop, Kill, Predict (counts what succeeded), Round (one
//	                prediction, then wait until its telemetry record is in
//	                the outbox)
//	ArtifactProxy   a reverse proxy in front of the control plane's HTTP that
//	                records each artifact request (Range, status, bytes)
//	Watch           samples the control plane's telemetry counters and
//	                reports any that went backwards
//
// Nothing sleeps in place of synchronisation: conditions are polled with a
// deadline, and the tests wait on process exits, log lines (failpoint hits)
// and HTTP answers. The only timed waits are faults themselves (an outage
// of a given length, a kill after a random delay).
package faults

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/shoaltest"
)

var (
	fullFlag = flag.Bool("faults.full", false, "run the full fault-injection suite (longer outages, more kills); also SHOAL_FAULTS=full")
	seedFlag = flag.Uint64("faults.seed", 0, "seed of the random kills (0: a new one, logged)")
)

// suite holds the knobs that differ between the short and the full mode.
type suite struct {
	full bool
	// outage is how long the control plane stays down in the outage test.
	outage time.Duration
	// chaosAgents and chaosLives: agents killed at random points, and how
	// many times each is killed.
	chaosAgents, chaosLives int
	// rounds bounds the predictions of one chaos life before its kill.
	rounds int
	// cpCrashes is how many times the control plane is killed and
	// started again in the restart test.
	cpCrashes int
}

func mode() suite {
	if *fullFlag || os.Getenv("SHOAL_FAULTS") == "full" {
		return suite{full: true, outage: 2 * time.Minute, chaosAgents: 3, chaosLives: 16, rounds: 16, cpCrashes: 3}
	}
	return suite{outage: 10 * time.Second, chaosAgents: 2, chaosLives: 4, rounds: 5, cpCrashes: 1}
}

// newRand returns the test's random source, seeded from -faults.seed or
// logged so that a failing run can be repeated.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("random seed %d (repeat with -faults.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x5ea1))
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// bins builds shoal and shoal-agent (with failpoints) once per test run and
// returns their directory.
func bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "shoal-faults-bin-")
		if buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		for _, b := range []struct {
			name, pkg string
			tags      []string
		}{
			{"shoal", "./controlplane/cmd/shoal", nil},
			{"shoal-agent", "./agent/cmd/shoal-agent", []string{"-tags", "failpoints"}},
		} {
			args := append([]string{"build", "-o", filepath.Join(binDir, b.name)}, b.tags...)
			if raceEnabled {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, b.pkg)...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
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

// Proc is one run of a binary. Its stdout and stderr go to its own log
// file, where the failpoint lines are counted.
type Proc struct {
	Name string
	Log  string // path of the log file

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's error, set before done closes

	mu   sync.Mutex
	off  int64          // how far Hits has read the log
	hits map[string]int // failpoint lines seen per point
	fx   map[string]string
}

// startProc runs bin with args and env added to the test's environment.
// The process is stopped (SIGTERM, then SIGKILL) when the test ends if it
// is still running, and its log is checked for data races and panics.
func startProc(t *testing.T, name, logPath, bin string, env []string, args ...string) *Proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{}), hits: map[string]int{}, fx: map[string]string{}}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(shoaltest.Patience):
				p.cmd.Process.Kill()
				<-p.done
			}
		}
		if log := p.Output(); strings.Contains(log, "WARNING: DATA RACE") || strings.Contains(log, "\npanic: ") {
			t.Errorf("%s: data race or panic in its log %s:\n%s", p.Name, p.Log, log)
		} else if t.Failed() {
			t.Logf("%s: end of its log:\n%s", p.Name, p.Tail(4000))
		}
	})
	return p
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitExit waits for the process to exit on its own and returns its
// status.
func (p *Proc) WaitExit(t *testing.T) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState
	case <-time.After(shoaltest.Patience):
		t.Fatalf("%s did not exit within %s; log:\n%s", p.Name, shoaltest.Patience, p.Tail(3000))
		return nil
	}
}

// Killed reports whether the process was killed by SIGKILL.
func (p *Proc) Killed() bool {
	if !p.Exited() {
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Proc) Kill(t *testing.T) {
	t.Helper()
	if p.Exited() {
		t.Fatalf("%s: kill: it had already exited (%v); log:\n%s", p.Name, p.err, p.Tail(3000))
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.WaitExit(t)
}

// Stop sends SIGTERM and waits for a clean exit (status 0).
func (p *Proc) Stop(t *testing.T) {
	t.Helper()
	if p.Exited() {
		t.Fatalf("%s: stop: it had already exited (%v); log:\n%s", p.Name, p.err, p.Tail(3000))
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.WaitExit(t)
	if p.err != nil {
		t.Fatalf("%s: exit after SIGTERM: %v; log:\n%s", p.Name, p.err, p.Tail(3000))
	}
}

// Output returns the whole log.
func (p *Proc) Output() string {
	data, _ := os.ReadFile(p.Log)
	return string(data)
}

// Tail returns the last n bytes of the log.
func (p *Proc) Tail(n int) string {
	s := p.Output()
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

var hitLine = regexp.MustCompile(`^failpoint: name=(\S+) hit=(\d+) rule=\S+ effect=(\w+)$`)

// scan reads the log lines written since the last call and counts the
// failpoint hits in them.
func (p *Proc) scan() {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.Open(p.Log)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(p.off, io.SeekStart); err != nil {
		return
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return // a partial last line is read again next time
		}
		p.off += int64(len(line))
		if m := hitLine.FindStringSubmatch(strings.TrimSuffix(line, "\n")); m != nil {
			n, _ := strconv.Atoi(m[2])
			p.hits[m[1]] = max(p.hits[m[1]], n)
			p.fx[m[1]] = m[3]
		}
	}
}

// Hits returns how many hits of the failpoint the process has logged.
func (p *Proc) Hits(point string) int {
	p.scan()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[point]
}

// Effect returns the effect of the last logged hit of point: "none",
// "kill", "pause", or "" if it was never hit.
func (p *Proc) Effect(point string) string {
	p.scan()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fx[point]
}

// ControlPlane is `shoal serve` on a data directory and ports that stay
// the same across restarts.
type ControlPlane struct {
	Dir      string
	HTTPAddr string
	MQTTAddr string
	URL      string
	Client   *client.Client

	// Broker, when set, is an external MQTT broker URL (`--broker`) used
	// instead of the embedded one.
	Broker string

	proc   *Proc
	starts int
}

// StartControlPlane starts a control plane in a new temporary directory
// and waits until it serves.
func StartControlPlane(t *testing.T) *ControlPlane {
	return StartControlPlaneWith(t, "")
}

// StartControlPlaneWith starts a control plane on the external MQTT broker
// at brokerURL ("" for the embedded one).
func StartControlPlaneWith(t *testing.T, brokerURL string) *ControlPlane {
	t.Helper()
	dir := t.TempDir()
	cp := &ControlPlane{Dir: dir, HTTPAddr: freeAddr(t), MQTTAddr: freeAddr(t), Broker: brokerURL}
	cp.URL = "http://" + cp.HTTPAddr
	c, err := client.New(cp.URL)
	if err != nil {
		t.Fatal(err)
	}
	cp.Client = c
	cp.Start(t)
	return cp
}

// Start starts the control plane (again) and waits until its API answers.
// A restart keeps the data directory and both ports, so agents reconnect
// to the same broker address. Start, Stop and Kill belong on the goroutine
// of one test.
func (cp *ControlPlane) Start(t *testing.T) {
	t.Helper()
	if cp.proc != nil && !cp.proc.Exited() {
		t.Fatal("control plane: Start while it runs")
	}
	cp.starts++
	args := []string{"serve", "--data-dir", filepath.Join(cp.Dir, "data"), "--http-addr", cp.HTTPAddr, "--mqtt-addr", cp.MQTTAddr}
	if cp.Broker != "" {
		args = append(args, "--broker", cp.Broker)
	}
	cp.proc = startProc(t, fmt.Sprintf("control plane (start %d)", cp.starts), filepath.Join(cp.Dir, fmt.Sprintf("shoal.%d.log", cp.starts)),
		filepath.Join(bins(t), "shoal"), nil, args...)
	shoaltest.Eventually(t, "control plane serving", func() error {
		if cp.proc.Exited() {
			t.Fatalf("control plane exited at start: %v\n%s", cp.proc.err, cp.proc.Tail(3000))
		}
		_, err := cp.Client.PublicKey(context.Background())
		return err
	})
}

// Stop stops the control plane with SIGTERM (a clean shutdown).
func (cp *ControlPlane) Stop(t *testing.T) { t.Helper(); cp.proc.Stop(t) }

// Kill stops the control plane with SIGKILL (a crash).
func (cp *ControlPlane) Kill(t *testing.T) { t.Helper(); cp.proc.Kill(t) }

func (cp *ControlPlane) ctx() context.Context { return context.Background() }

// Token creates an enrollment token.
func (cp *ControlPlane) Token(t *testing.T) string {
	t.Helper()
	tok, err := cp.Client.CreateToken(cp.ctx(), 0)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return tok.Token
}

// Push uploads a model version.
func (cp *ControlPlane) Push(t *testing.T, name, version string, model []byte) client.ModelVersion {
	t.Helper()
	mv, err := cp.Client.PushModel(cp.ctx(), name, version, bytes.NewReader(model))
	if err != nil {
		t.Fatalf("push %s %s: %v", name, version, err)
	}
	return mv
}

// Deploy makes version the desired state of devices (every device if none).
func (cp *ControlPlane) Deploy(t *testing.T, name, version string, devices ...string) {
	t.Helper()
	if _, err := cp.Client.Deploy(cp.ctx(), name, version, devices); err != nil {
		t.Fatalf("deploy %s %s: %v", name, version, err)
	}
}

// Telemetry returns the stored telemetry counts of a device (zero before
// it sent any).
func (cp *ControlPlane) Telemetry(device string) (client.TelemetryCounts, error) {
	s, err := cp.Client.Telemetry(cp.ctx(), device)
	if client.StatusOf(err) == http.StatusNotFound {
		return client.TelemetryCounts{DeviceID: device}, nil
	}
	if err != nil {
		return client.TelemetryCounts{}, err
	}
	if len(s.Devices) != 1 {
		return client.TelemetryCounts{}, fmt.Errorf("telemetry of %s: %d device entries", device, len(s.Devices))
	}
	return s.Devices[0], nil
}

// Model returns the state of model on device id as the control plane
// knows it.
func (cp *ControlPlane) Model(id, model string) (client.DeviceModel, error) {
	devs, err := cp.Client.Devices(cp.ctx())
	if err != nil {
		return client.DeviceModel{}, err
	}
	for _, d := range devs {
		if d.ID != id {
			continue
		}
		for _, m := range d.Models {
			if m.Name == model {
				return m, nil
			}
		}
		return client.DeviceModel{}, fmt.Errorf("device %s reports no model %s (phase %s, error %q)", id, model, d.Phase, d.Error)
	}
	return client.DeviceModel{}, fmt.Errorf("no device %s", id)
}

// WaitActive waits until each agent reports version of model active and
// desired, and serves it.
func (cp *ControlPlane) WaitActive(t *testing.T, model, version string, agents ...*Agent) {
	t.Helper()
	for _, a := range agents {
		shoaltest.Eventually(t, fmt.Sprintf("%s: %s %s active", a.ID, model, version), func() error {
			m, err := cp.Model(a.ID, model)
			if err != nil {
				return err
			}
			if m.ActiveVersion != version || m.DesiredVersion != version || m.Phase != "active" {
				return fmt.Errorf("%s %s: active %q desired %q phase %q error %q", a.ID, model, m.ActiveVersion, m.DesiredVersion, m.Phase, m.Error)
			}
			return nil
		})
	}
}

// WaitExactTelemetry waits until the control plane's counts of each agent
// are exactly what the test made through the agent's API: predictions
// equal, nothing dropped, and one stored record per sequence number up to
// the highest (none missing, none counted twice). More predictions than
// were made fails at once.
func (cp *ControlPlane) WaitExactTelemetry(t *testing.T, agents ...*Agent) {
	t.Helper()
	for _, a := range agents {
		made := a.Made()
		shoaltest.Eventually(t, fmt.Sprintf("%s: telemetry counts %d predictions", a.ID, made), func() error {
			c, err := cp.Telemetry(a.ID)
			if err != nil {
				return err
			}
			if c.Predictions > uint64(made) {
				t.Fatalf("%s: the control plane counts %d predictions; the agent made %d (double-counted)", a.ID, c.Predictions, made)
			}
			if c.Predictions != uint64(made) {
				return fmt.Errorf("%s: %d of %d predictions stored (records %d, highest seq %d)", a.ID, c.Predictions, made, c.Records, c.HighestSeq)
			}
			if c.DroppedRecords != 0 {
				t.Fatalf("%s: %d records reported dropped; none should be", a.ID, c.DroppedRecords)
			}
			if c.Records != c.HighestSeq {
				t.Fatalf("%s: %d records stored for sequence numbers up to %d: a gap", a.ID, c.Records, c.HighestSeq)
			}
			return nil
		})
	}
}

// Watch samples the telemetry counters of the given devices until the test
// ends and fails it if any counter went backwards (highest_seq,
// predictions, records), which would mean the control plane lost
// acknowledged telemetry or an agent reused sequence numbers. Samples are
// skipped while the control plane is down.
func (cp *ControlPlane) Watch(t *testing.T) {
	c := cp.Client
	stop := make(chan struct{})
	done := make(chan struct{})
	var samples atomic.Int64
	go func() {
		defer close(done)
		last := map[string]client.TelemetryCounts{}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			s, err := c.Telemetry(context.Background(), "")
			if err != nil {
				continue
			}
			samples.Add(1)
			for _, d := range s.Devices {
				was := last[d.DeviceID]
				if d.HighestSeq < was.HighestSeq || d.Predictions < was.Predictions || d.Records < was.Records {
					t.Errorf("%s: telemetry counters went backwards: %+v after %+v", d.DeviceID, d, was)
				}
				last[d.DeviceID] = d
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		if samples.Load() == 0 {
			t.Errorf("the counter watch took no sample")
		}
		t.Logf("counter watch: %d samples, never backwards", samples.Load())
	})
}

// Agent is one device: a data directory and a local API address that
// stay the same across its runs (Start, Stop, Kill, Start, ...).
type Agent struct {
	ID      string
	Dir     string
	APIAddr string
	Server  string        // the URL given to --server (the control plane or a proxy)
	Window  time.Duration // --telemetry-window

	proc   *Proc
	runs   int
	token  string
	made   atomic.Int64
	api    *localclient.Client
	broker string   // --broker, when set
	env    []string // extra environment of every run
}

// AgentOptions tune NewAgent.
type AgentOptions struct {
	// Server is the control plane URL the agent is given; the control
	// plane's own by default (an ArtifactProxy's URL to watch downloads).
	Server string
	// Window is the telemetry window (default 50ms).
	Window time.Duration
	// Broker overrides the MQTT broker URL from enrollment (`--broker`),
	// e.g. a proxy that can cut the link.
	Broker string
	// Dir is the data directory (default: a new temporary one), e.g. on a
	// small file system that can fill up.
	Dir string
	// Env is extra environment for every run (e.g. the fault clock).
	Env []string
}

// NewAgent prepares an agent; its first Start enrolls it.
func NewAgent(t *testing.T, cp *ControlPlane, id string, o AgentOptions) *Agent {
	t.Helper()
	a := &Agent{ID: id, Dir: o.Dir, APIAddr: freeAddr(t), Server: o.Server, Window: o.Window, broker: o.Broker, env: o.Env}
	api, err := localclient.New("http://" + a.APIAddr)
	if err != nil {
		t.Fatal(err)
	}
	a.api = api
	if a.Dir == "" {
		a.Dir = t.TempDir()
	}
	if a.Server == "" {
		a.Server = cp.URL
	}
	if a.Window == 0 {
		a.Window = 50 * time.Millisecond
	}
	a.token = cp.Token(t)
	return a
}

// Proc returns the agent's current (or last) process.
func (a *Agent) Proc() *Proc { return a.proc }

// Start runs the agent with the failpoint rules in failpoints ("" arms
// none) and waits until its local API answers. The first start enrolls.
func (a *Agent) Start(t *testing.T, failpoints string) *Proc {
	t.Helper()
	p := a.Launch(t, failpoints)
	shoaltest.Eventually(t, a.ID+": local API answering", func() error {
		if p.Exited() {
			t.Fatalf("%s exited at start: %v\n%s", p.Name, p.err, p.Tail(3000))
		}
		return a.api.Live(context.Background())
	})
	return p
}

// Launch runs the agent like Start but returns at once, e.g. to kill it
// while it starts.
func (a *Agent) Launch(t *testing.T, failpoints string) *Proc {
	t.Helper()
	if a.proc != nil && !a.proc.Exited() {
		t.Fatalf("%s: Start while it runs", a.ID)
	}
	a.runs++
	args := []string{"run", "--data-dir", a.Dir, "--server", a.Server, "--device-id", a.ID, "--api-addr", a.APIAddr,
		"--telemetry-window", a.Window.String(), "--intra-op-threads", "1"}
	if a.runs == 1 {
		args = append(args, "--enroll-token", a.token)
	}
	if a.broker != "" {
		args = append(args, "--broker", a.broker)
	}
	name := fmt.Sprintf("agent %s (run %d", a.ID, a.runs)
	if failpoints != "" {
		name += ", " + failpoints
	}
	name += ")"
	a.proc = startProc(t, name, filepath.Join(a.Dir, fmt.Sprintf("agent.%d.log", a.runs)), filepath.Join(bins(t), "shoal-agent"),
		append([]string{"SHOAL_FAILPOINTS=" + failpoints}, a.env...), args...)
	return a.proc
}

// Stop stops the agent with SIGTERM: it flushes its telemetry window and
// exits cleanly.
func (a *Agent) Stop(t *testing.T) { t.Helper(); a.proc.Stop(t) }

// Kill stops the agent with SIGKILL.
func (a *Agent) Kill(t *testing.T) { t.Helper(); a.proc.Kill(t) }

// Made returns how many predictions succeeded through the agent's API.
func (a *Agent) Made() int { return int(a.made.Load()) }

// Predict makes one prediction of the "clf" model and returns the version
// that served it. Only a success counts as made.
func (a *Agent) Predict() (string, error) {
	x := []float32{rand.Float32(), rand.Float32(), rand.Float32(), rand.Float32()}
	out, err := a.api.Infer(context.Background(), localclient.InferRequest{Model: "clf", Inputs: []localclient.Tensor{localclient.NewTensor("sensor values", []int64{1, 4}, x)}})
	if err != nil {
		return "", err
	}
	a.made.Add(1)
	return out.ModelVersion, nil
}

// MustPredict makes n predictions and fails the test unless each succeeds.
func (a *Agent) MustPredict(t *testing.T, n int) {
	t.Helper()
	for range n {
		if _, err := a.Predict(); err != nil {
			t.Fatalf("%s: %v; log:\n%s", a.ID, err, a.proc.Tail(2000))
		}
	}
}

// Round makes one prediction and waits until its telemetry record has been
// appended to the outbox, seen as a new telemetry-after-append hit (the
// point must be armed: log, or kill@n). Rounds are what makes kills exact:
// between rounds the agent holds no prediction that is not yet in its
// outbox, and each round is exactly one record, one sequence number. It
// returns false if the agent died at that append (a kill rule).
func (a *Agent) Round(t *testing.T) bool {
	t.Helper()
	p := a.proc
	before := p.Hits("telemetry-after-append")
	if _, err := a.Predict(); err != nil {
		t.Fatalf("%s: %v; log:\n%s", a.ID, err, p.Tail(3000))
	}
	err := shoaltest.Poll(5*time.Millisecond, func() error {
		if p.Hits("telemetry-after-append") > before {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited (%v) before the record was appended", p.Name, p.err)
		}
		return errors.New("no telemetry-after-append hit yet")
	})
	if err != nil {
		t.Fatalf("%s: round: %v; log:\n%s", a.ID, err, p.Tail(3000))
	}
	if p.Effect("telemetry-after-append") == "kill" {
		p.WaitExit(t)
		return false
	}
	return true
}

// Ready asks the agent's local API whether model is ready and which
// version serves it.
func (a *Agent) Ready(model string) (version string, err error) {
	st, err := a.api.ModelReady(context.Background(), model, "")
	if err != nil {
		return "", err
	}
	if !st.Ready {
		return "", fmt.Errorf("model %s: the agent answered 200 but not ready: %+v", model, st)
	}
	return st.Version, nil
}

// ArtifactRequest is one artifact download the proxy passed on.
type ArtifactRequest struct {
	SHA256 string
	Range  string // the request's Range header
	Status int
	Bytes  int64 // body bytes written towards the agent
}

// ArtifactProxy is a reverse proxy in front of a control plane's HTTP API
// that records every artifact request (GET /v1/artifacts/{sha256}).
type ArtifactProxy struct {
	URL string

	mu   sync.Mutex
	reqs []ArtifactRequest
}

// NewArtifactProxy starts a proxy to cp; agents given its URL as --server
// fetch through it.
func NewArtifactProxy(t *testing.T, cp *ControlPlane) *ArtifactProxy {
	t.Helper()
	target, _ := url.Parse(cp.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // agents killed mid-download cut copies short
	ap := &ArtifactProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sha, ok := strings.CutPrefix(r.URL.Path, "/v1/artifacts/")
		if !ok || r.Method != http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		cw := &countingWriter{ResponseWriter: w}
		rp.ServeHTTP(cw, r)
		ap.mu.Lock()
		ap.reqs = append(ap.reqs, ArtifactRequest{SHA256: sha, Range: r.Header.Get("Range"), Status: cw.status, Bytes: cw.n})
		ap.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	ap.URL = srv.URL
	return ap
}

// Requests returns the requests for the artifact sha so far.
func (ap *ArtifactProxy) Requests(sha string) []ArtifactRequest {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	var out []ArtifactRequest
	for _, r := range ap.reqs {
		if r.SHA256 == sha {
			out = append(out, r)
		}
	}
	return out
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// classifier returns an ONNX classifier "clf" of 4 inputs ("sensor
// values") and 3 classes, with hidden layers of the given widths: about
// 4·hidden² bytes, so that downloads can be cut midway.
func classifier(t *testing.T, seed uint64, hidden ...int) []byte {
	t.Helper()
	widths := append(append([]int{4}, hidden...), 3)
	data, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "clf", Input: "sensor values", Layers: onnxbuild.RandomLayers(seed, widths...), Classifier: true})
	if err != nil {
		t.Fatal(err)
	}
	return data
}
