// Command soak runs a fleet of real Shoal processes for a long time and
// watches them for leaks: a control plane (`shoal serve`, embedded broker)
// and N agents (`shoal-agent run`), each its own process, with steady
// predictions through every agent's local API, the control plane (and so
// its broker) restarted every -broker-restart, and a new model version
// pushed and deployed every -update.
//
// Every -sample it records, per process, RSS and open file descriptors
// (from /proc/PID) and goroutines and Go heap (from the process's GET
// /metrics), prints a progress line and appends to a CSV. At the end it
// stops the load, stops the agents gracefully (each flushes its last
// telemetry window), and compares the predictions it made with the
// predictions the control plane counted from telemetry: they must be
// equal, or it exits 1. Then it prints the summary: RSS after warm-up vs
// at the end, goroutines and fds first/after warm-up/last, update
// convergence and broker restarts.
//
//	go run ./bench/soak -agents 20 -duration 35m -out /tmp/soak.csv
//	go run ./bench/soak -short          # 2 agents, 90 s: checks the harness
//
// Linux only (it reads /proc). Results go in docs/BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type options struct {
	agents        int
	duration      time.Duration
	warmup        time.Duration
	sample        time.Duration
	brokerRestart time.Duration
	update        time.Duration
	rate          float64
	window        time.Duration
	out           string
	bin           string
	dir           string
	keep          bool
	strict        bool
	short         bool
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.IntVar(&o.agents, "agents", 20, "number of agent processes")
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long to run the load, after set-up")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Minute, "warm-up: growth is measured from the first sample after it")
	fs.DurationVar(&o.sample, "sample", 30*time.Second, "time between samples")
	fs.DurationVar(&o.brokerRestart, "broker-restart", 5*time.Minute, "restart the control plane (and its embedded broker) this often; 0: never")
	fs.DurationVar(&o.update, "update", 7*time.Minute, "push and deploy a new model version this often; 0: never")
	fs.Float64Var(&o.rate, "rate", 5, "predictions per second per agent")
	fs.DurationVar(&o.window, "telemetry-window", 10*time.Second, "the agents' telemetry window")
	fs.StringVar(&o.out, "out", "", "CSV of the samples (default: soak.csv in the work directory)")
	fs.StringVar(&o.bin, "bin", "", "directory holding shoal and shoal-agent (default: go build them into the work directory)")
	fs.StringVar(&o.dir, "dir", "", "work directory: data, logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory after a successful run (it is always kept after a failure)")
	fs.BoolVar(&o.strict, "strict", false, "also exit 1 when a target is missed (RSS growth, goroutine or fd growth, an update that did not converge)")
	fs.BoolVar(&o.short, "short", false, "a quick check of the harness: 2 agents, 90s, restart every 30s, update every 40s (flags given override)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; every setting is a -flag", fs.Arg(0))
	}
	if o.short {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("agents", func() { o.agents = 2 })
		def("duration", func() { o.duration = 90 * time.Second })
		def("warmup", func() { o.warmup = 30 * time.Second })
		def("sample", func() { o.sample = 10 * time.Second })
		def("broker-restart", func() { o.brokerRestart = 30 * time.Second })
		def("update", func() { o.update = 40 * time.Second })
		def("telemetry-window", func() { o.window = 2 * time.Second })
	}
	switch {
	case o.agents < 1 || o.agents > 999:
		return nil, fmt.Errorf("-agents %d: want 1 to 999", o.agents)
	case o.duration <= 0 || o.sample <= 0 || o.warmup < 0 || o.brokerRestart < 0 || o.update < 0 || o.window <= 0:
		return nil, errors.New("-duration, -sample and -telemetry-window must be positive; -warmup, -broker-restart and -update not negative")
	case o.warmup >= o.duration:
		return nil, fmt.Errorf("-warmup %s is not shorter than -duration %s: nothing would be measured after it", o.warmup, o.duration)
	case o.rate <= 0 || o.rate > 1000:
		return nil, fmt.Errorf("-rate %g: want predictions per second per agent, above 0 and at most 1000", o.rate)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if runtime.GOOS != "linux" {
		fmt.Fprintln(os.Stderr, "soak: reads /proc; run it on Linux")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o))
}

// run prepares the work directory and binaries, runs the soak and returns
// the exit code.
func run(ctx context.Context, o *options) int {
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "shoal-soak-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			return 1
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	if o.out == "" {
		o.out = filepath.Join(dir, "soak.csv")
	}
	logf("work directory %s (logs: cp.log, agents/*/agent.log)", dir)
	bin := o.bin
	if bin == "" {
		bin = filepath.Join(dir, "bin")
		logf("building shoal and shoal-agent into %s", bin)
		if err := build(ctx, bin); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			return 1
		}
	}
	for _, b := range []string{"shoal", "shoal-agent"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "soak: %v (run `make build` and pass -bin bin, or leave -bin out to build)\n", err)
			return 1
		}
	}
	s := &soak{o: o, dir: dir, bin: bin}
	code := s.run(ctx)
	if code == 0 && !o.keep && o.dir == "" && !strings.HasPrefix(o.out, dir) {
		os.RemoveAll(dir)
	} else {
		logf("work directory kept: %s", dir)
	}
	return code
}

// build builds both binaries from the module the command runs in.
func build(ctx context.Context, bin string) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if err != nil || root == "." || root == "" {
		return fmt.Errorf("find the module root (run from inside the shoal repository): %v", err)
	}
	for name, pkg := range map[string]string{"shoal": "./controlplane/cmd/shoal", "shoal-agent": "./agent/cmd/shoal-agent"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return nil
}

// logf prints a progress line with the wall-clock time.
func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
