// Command shoal is the Shoal control plane (`shoal serve`), its demo
// (`shoal demo`) and the admin CLI that talks to a running control plane's
// API (`shoal model push`, `shoal deploy`, `shoal devices`, ...).
//
// main only wires: each subcommand lives in its own file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/internal/buildinfo"
)

// rootOptions are the global flags.
type rootOptions struct {
	server    string
	json      bool
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
}

func (o *rootOptions) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(o.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(o.stderr, opts))
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &rootOptions{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Shoal: train, sign and roll out ONNX models to a fleet of edge devices",
		Version:       buildinfo.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	def := os.Getenv("SHOAL_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	root.PersistentFlags().StringVar(&o.server, "server", def, "control plane URL for admin commands (env SHOAL_SERVER)")
	root.PersistentFlags().BoolVar(&o.json, "json", false, "print JSON for scripts instead of tables")
	root.PersistentFlags().StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	for _, mk := range []func(*rootOptions) *cobra.Command{
		newServeCmd,
		newDemoCmd,
		newModelCmd,
		newDatasetCmd,
		newDeployCmd,
		newDevicesCmd,
		newTokenCmd,
		newTelemetryCmd,
		newRolloutCmd,
		newLoopCmd,
		newTrainCmd,
		newJobsCmd,
		newJobCmd,
		newDriftCmd,
		newAlertsCmd,
		newCapturesCmd,
	} {
		root.AddCommand(mk(o))
	}
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "shoal: "+strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
