// Command rollout measures a staged rollout at fleet scale: a control
// plane (`shoal serve`, its own process, so that its RSS and CPU are its
// own) and N agents running in this process, over the embedded broker.
// It rolls a small model out to every agent in one 100% stage, twice —
// first install, then an update — and reports the time from the
// rollout's creation to the last device healthy, the control plane's RSS
// and CPU meanwhile, and where the time goes: when devices were notified,
// started downloading, verified and self-tested, activated, and reported
// healthy (from the rollout's own event log), and the engine's own time.
//
//	go run ./bench/rollout -agents 1000
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/procstats"
)

type options struct {
	agents  int
	shoal   string
	dataDir string
	hidden  int
	profile string
}

func main() {
	var o options
	flag.IntVar(&o.agents, "agents", 1000, "agents to run in this process")
	flag.StringVar(&o.shoal, "shoal", "", "shoal binary (default: go build one)")
	flag.StringVar(&o.dataDir, "data-dir", "", "work directory (default: a temporary one, removed at the end)")
	flag.IntVar(&o.hidden, "hidden", 16, "hidden layer width of the model: 16 is about 1 KB; 700 (two layers) about 2 MB")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of this process (the agents) during the rollouts to this file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "rollout bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options) error {
	raiseFDLimit()
	dir := o.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "shoal-rollout-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if o.shoal == "" {
		o.shoal = filepath.Join(dir, "shoal")
		logf("building shoal")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.shoal, "./controlplane/cmd/shoal")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build shoal: %w", err)
		}
	}
	httpAddr, mqttAddr := freeAddr(), freeAddr()
	cpLog, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return err
	}
	defer cpLog.Close()
	cp := exec.Command(o.shoal, "serve", "--data-dir", filepath.Join(dir, "cp"), "--http-addr", httpAddr, "--mqtt-addr", mqttAddr, "--log-level", "warn")
	cp.Stdout, cp.Stderr = cpLog, cpLog
	if err := cp.Start(); err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() {
		cp.Process.Signal(syscall.SIGTERM)
		cp.Wait()
	}()
	server := "http://" + httpAddr
	c, err := client.New(server)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, 30*time.Second, func() error { _, err := c.Models(ctx); return err }); err != nil {
		return fmt.Errorf("control plane did not come up: %w", err)
	}
	logf("control plane up (pid %d): %s", cp.Process.Pid, server)

	// Agents: each enrolls with its own token, then connects.
	log := slog.New(slog.DiscardHandler)
	agentCtx, stopAgents := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgents()
	var wg sync.WaitGroup
	var agents []*agent.Agent
	var mu sync.Mutex
	startT := time.Now()
	var startErr error
	for i := range o.agents {
		tok, err := c.CreateToken(ctx, time.Hour)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		id := fmt.Sprintf("bench-%04d", i)
		a, err := agent.New(agent.Config{
			DataDir:         filepath.Join(dir, "agents", id),
			ServerURL:       server,
			DeviceID:        id,
			EnrollToken:     agent.Secret(tok.Token),
			APIAddr:         "127.0.0.1:0",
			TelemetryWindow: 30 * time.Second,
			IntraOpThreads:  1,
			Logger:          log,
		})
		if err != nil {
			startErr = fmt.Errorf("agent %s: %w", id, err)
			break
		}
		mu.Lock()
		agents = append(agents, a)
		mu.Unlock()
		wg.Add(1)
		go func() { defer wg.Done(); a.Run(agentCtx) }()
	}
	defer func() {
		logf("stopping %d agents", len(agents))
		stopAgents()
		wg.Wait()
		for _, a := range agents {
			a.Close()
		}
	}()
	if startErr != nil {
		return startErr
	}
	err = waitUntil(ctx, 10*time.Minute, func() error {
		devs, err := c.Devices(ctx)
		if err != nil {
			return err
		}
		online := 0
		for _, d := range devs {
			if d.Online {
				online++
			}
		}
		if online < o.agents {
			return fmt.Errorf("%d of %d online", online, o.agents)
		}
		return nil
	})
	if err != nil {
		return err
	}
	logf("%d agents enrolled and online in %s", o.agents, time.Since(startT).Round(time.Millisecond))

	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for v := 1; v <= 2; v++ {
		sizes := []int{4, o.hidden, 3}
		if o.hidden > 64 {
			sizes = []int{4, o.hidden, o.hidden, 3}
		}
		data, err := onnxbuild.MLP(onnxbuild.MLPSpec{Name: "bench", Input: "x", Layers: onnxbuild.RandomLayers(uint64(v), sizes...), Classifier: true})
		if err != nil {
			return err
		}
		mv, err := c.PushModel(ctx, "bench", strconv.Itoa(v), bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		what := map[int]string{1: "first install", 2: "update (1 → 2)"}[v]
		res, err := measure(ctx, c, cp.Process.Pid, server, strconv.Itoa(v), o.agents)
		if err != nil {
			return fmt.Errorf("rollout of %d: %w", v, err)
		}
		res.print(what, mv.Size, o.agents)
	}
	fmt.Printf("\nmachine: %s, %d CPUs (GOMAXPROCS %d), %s\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	return nil
}

// result is one measured rollout.
type result struct {
	total      time.Duration
	milestones map[string][]time.Duration // by phase: time from creation to each device's first event of it
	cpuSec     float64                    // control plane CPU seconds during the rollout
	agentsCPU  float64                    // this process's (the agents') CPU seconds
	rssMax     int64
	rssBefore  int64
	passes     float64
	passSec    float64
	samples    int
}

// measure creates the rollout and follows its events until every device
// is healthy, sampling the control plane meanwhile.
func measure(ctx context.Context, c *client.Client, pid int, server, version string, n int) (*result, error) {
	cpu0, rss0 := procUsage(pid)
	self0, _ := procUsage(os.Getpid())
	m0 := scrape(server)
	res := &result{milestones: map[string][]time.Duration{}, rssBefore: rss0, rssMax: rss0}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				if _, rss := procUsage(pid); rss > res.rssMax {
					res.rssMax = rss
				}
				res.samples++
			}
		}
	}()
	// Health {0, 0}: an agent reports the version healthy once active.
	r, err := c.CreateRollout(ctx, apiv1.RolloutSpec{
		Model: "bench", Version: version,
		Health: &apiv1.HealthCheck{Predictions: 0, Seconds: 0},
		Stages: []apiv1.Stage{{Name: "all", Percent: 100, Timeout: apiv1.Duration(10 * time.Minute)}},
	})
	if err != nil {
		close(stopSampling)
		<-sampled
		return nil, err
	}
	created := r.CreatedAt
	logf("rollout %s of bench %s to %d devices created", r.ID, version, r.Targets)
	var after uint64
	healthy := map[string]bool{}
	seen := map[string]map[string]bool{}
	lastLog := time.Now()
	var lastEvent time.Time
	deadline := time.Now().Add(10 * time.Minute)
	for len(healthy) < n {
		if time.Now().After(deadline) {
			close(stopSampling)
			<-sampled
			return nil, fmt.Errorf("only %d of %d healthy after 10 minutes", len(healthy), n)
		}
		evs, err := c.RolloutEvents(ctx, r.ID, after)
		if err != nil {
			close(stopSampling)
			<-sampled
			return nil, err
		}
		for _, ev := range evs {
			after = ev.Seq
			if ev.Type != "device" {
				continue
			}
			if seen[ev.Phase] == nil {
				seen[ev.Phase] = map[string]bool{}
			}
			if !seen[ev.Phase][ev.Device] {
				seen[ev.Phase][ev.Device] = true
				res.milestones[ev.Phase] = append(res.milestones[ev.Phase], ev.Time.Sub(created))
			}
			if ev.Phase == "healthy" {
				healthy[ev.Device] = true
				lastEvent = ev.Time
			}
			if ev.Phase == "failed" {
				close(stopSampling)
				<-sampled
				return nil, fmt.Errorf("device %s failed: %s", ev.Device, ev.Message)
			}
		}
		if time.Since(lastLog) > 2*time.Second {
			logf("  %d of %d healthy", len(healthy), n)
			lastLog = time.Now()
		}
		if len(healthy) < n {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	close(stopSampling)
	<-sampled
	cpu1, _ := procUsage(pid)
	self1, _ := procUsage(os.Getpid())
	res.agentsCPU = self1 - self0
	m1 := scrape(server)
	res.total = lastEvent.Sub(created)
	res.cpuSec = cpu1 - cpu0
	res.passes = m1["shoal_rollout_passes_total"] - m0["shoal_rollout_passes_total"]
	res.passSec = m1["shoal_rollout_pass_seconds_total"] - m0["shoal_rollout_pass_seconds_total"]
	return res, nil
}

func (r *result) print(what string, size int64, n int) {
	fmt.Printf("\n== %s: %d devices, one 100%% stage, model %d bytes ==\n", what, n, size)
	fmt.Printf("rollout start → all %d healthy: %s\n", n, r.total.Round(time.Millisecond))
	fmt.Printf("control plane: CPU %.1f s over %.1f s (%.0f%% of one core), RSS %.1f MiB before, %.1f MiB peak\n",
		r.cpuSec, r.total.Seconds(), 100*r.cpuSec/max(r.total.Seconds(), 1e-9), float64(r.rssBefore)/(1<<20), float64(r.rssMax)/(1<<20))
	fmt.Printf("agents (this process): CPU %.1f s (%.0f%% of one core); with the control plane, %.0f%% of the machine's %d cores\n",
		r.agentsCPU, 100*r.agentsCPU/max(r.total.Seconds(), 1e-9), 100*(r.agentsCPU+r.cpuSec)/max(r.total.Seconds(), 1e-9)/float64(runtime.NumCPU()), runtime.NumCPU())
	fmt.Printf("rollout engine: %.0f passes, %.2f s in them (%.1f%% of the rollout)\n", r.passes, r.passSec, 100*r.passSec/max(r.total.Seconds(), 1e-9))
	fmt.Println("where the time goes (time from creation until a device first reached the phase, as the control plane saw it):")
	fmt.Printf("  %-12s %8s %8s %8s %8s %6s\n", "PHASE", "P10", "P50", "P90", "MAX", "N")
	for _, ph := range []string{"notified", "downloading", "verifying", "active", "healthy"} {
		ds := r.milestones[ph]
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		q := func(p float64) string {
			return ds[min(len(ds)-1, int(p*float64(len(ds))))].Round(time.Millisecond).String()
		}
		fmt.Printf("  %-12s %8s %8s %8s %8s %6d\n", ph, q(0.10), q(0.50), q(0.90), ds[len(ds)-1].Round(time.Millisecond), len(ds))
	}
}

// procUsage returns a process's CPU seconds (user + system) and RSS.
func procUsage(pid int) (cpuSec float64, rss int64) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name, which is in parentheses.
		s := string(data)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpuSec = (ut + st) / 100 // USER_HZ
			}
		}
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		rss = procstats.ParseStatus(data)["VmRSS"]
	}
	return cpuSec, rss
}

// scrape reads the control plane's /metrics samples.
func scrape(server string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(server + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

func waitUntil(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// raiseFDLimit lifts the soft open-file limit to the hard one: a
// thousand agents hold a few files and sockets each.
func raiseFDLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
