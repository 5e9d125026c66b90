// Command shoal-agent is the Shoal device agent.
//
//	shoal-agent run --data-dir DIR [--server URL --device-id ID --enroll-token T [--label K=V]... [--group G]] [flags]
//	shoal-agent version
//
// main only wires: flags and the config file become an agent.Config, and
// the agent runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/agent/internal/failpoint"
	firmwareprofiles "github.com/shoalfleet/shoal/firmware-profiles"
	"github.com/shoalfleet/shoal/internal/buildinfo"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// tokenEnv may hold the enrollment token, so that it need not appear on a
// command line (and in ps).
const tokenEnv = "SHOAL_ENROLL_TOKEN"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		m := NewMain()
		m.Stderr = stderr
		if err := m.ParseFlags(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintln(stderr, "shoal-agent:", err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := m.Run(ctx)
		if cerr := m.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(stderr, "shoal-agent:", err)
			return 1
		}
		return 0
	case "version":
		fmt.Fprintf(stdout, "shoal-agent %s (ONNX Runtime %s, %s %s/%s)\n", buildinfo.Version, onnxrt.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "shoal-agent: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  shoal-agent run --data-dir DIR [flags]   run the agent (see shoal-agent run -h)
  shoal-agent version                      print the version

First start (enrolls once; --label K=V, repeatable, and --group G are sent with the enrollment):
  shoal-agent run --data-dir DIR --server URL --device-id ID --enroll-token TOKEN [--label K=V]... [--group G]
`)
}

// Main is the agent program: ParseFlags, Run, Close. End-to-end tests use
// it to run agents in-process exactly as the binary does.
type Main struct {
	Settings settings
	// Stderr receives logs and flag errors.
	Stderr io.Writer

	facts   func() firmwareprofiles.Facts // the hardware, for detection; tests replace it
	profile profileChoice                 // how ParseFlags chose the profile, logged by Run
	agent   *agent.Agent
}

// NewMain returns a Main with default settings.
func NewMain() *Main {
	return &Main{Settings: defaultSettings(), Stderr: os.Stderr, facts: firmwareprofiles.LocalFacts}
}

// ParseFlags reads `run`'s flags: --config FILE first, then the other
// flags on top (flags override the file). The firmware profile (--profile,
// or detected from the hardware) supplies the defaults of the settings
// neither sets.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("shoal-agent run", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	configPath := fs.String("config", "", "YAML or JSON file with the same keys as these flags (e.g. data-dir: /var/lib/shoal-agent; labels: for --label)")
	raw := map[string][]string{}
	var order []string
	for _, o := range options {
		fs.Var(&rawValue{name: o.name, isBool: o.isBool, repeated: o.setPairs != nil, raw: raw, order: &order}, o.name, o.usage)
	}
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: shoal-agent run --data-dir DIR [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; every setting is a --flag", fs.Arg(0))
	}
	s := defaultSettings()
	set := map[string]string{} // option name → where it was set
	if *configPath != "" {
		if err := loadFile(*configPath, &s, set); err != nil {
			return err
		}
	}
	for _, name := range order {
		o, _ := lookupOption(name)
		var err error
		if o.setPairs != nil {
			var pairs map[string]string
			if pairs, err = flagPairs(raw[name]); err == nil {
				err = o.setPairs(&s, pairs)
			}
		} else {
			err = o.set(&s, raw[name][0])
		}
		if err != nil {
			return fmt.Errorf("--%s: %v", name, err)
		}
		set[o.key()] = "--" + name
	}
	if err := m.applyProfile(&s, set); err != nil {
		return err
	}
	if s.EnrollToken == "" {
		s.EnrollToken = agent.Secret(os.Getenv(tokenEnv))
	}
	m.Settings = s
	return nil
}

// Run starts the agent and blocks until ctx is done or it fails.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Settings.Config
	cfg.Logger = m.logger()
	m.profile.log(cfg.Logger, m.Settings)
	if failpoint.Enabled {
		cfg.Now = failpoint.Now // a fault-injection build: the test may step the clock
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	m.agent = a
	cfg.Logger.Info("shoal-agent starting", "version", buildinfo.Version, "device", a.DeviceID(), "data_dir", cfg.DataDir, "api", a.APIAddr())
	return a.Run(ctx)
}

// Close releases the agent.
func (m *Main) Close() error {
	if m.agent == nil {
		return nil
	}
	return m.agent.Close()
}

func (m *Main) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: m.Settings.LogLevel}
	if m.Settings.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(m.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(m.Stderr, opts))
}

// flagPairs parses the key=value values of a repeated flag.
func flagPairs(vals []string) (map[string]string, error) {
	pairs := make(map[string]string, len(vals))
	for _, kv := range vals {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value (e.g. site=berlin)", kv)
		}
		if _, dup := pairs[k]; dup {
			return nil, fmt.Errorf("key %q is given twice", k)
		}
		pairs[k] = v
	}
	return pairs, nil
}

// rawValue records a flag's text (every one, for a repeated flag; the
// last, for the others); settings are applied after the config file so
// that flags win.
type rawValue struct {
	name     string
	isBool   bool
	repeated bool
	raw      map[string][]string
	order    *[]string
}

func (v *rawValue) String() string { return "" }

func (v *rawValue) Set(s string) error {
	if _, seen := v.raw[v.name]; !seen {
		*v.order = append(*v.order, v.name)
	}
	if v.repeated {
		v.raw[v.name] = append(v.raw[v.name], s)
	} else {
		v.raw[v.name] = []string{s}
	}
	return nil
}

func (v *rawValue) IsBoolFlag() bool { return v.isBool }
