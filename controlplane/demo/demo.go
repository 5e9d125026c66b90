// Package demo is `shoal demo`: a control plane (embedded MQTT broker,
// Badger store) and N agents in this process, running the whole loop on a
// built-in synthetic sensor data set (temperature, vibration, current,
// pressure → normal / worn / failing):
//
//  1. push the data set and train v1 with a training job (epochs, gates);
//  2. roll v1 out in stages (canary, half, all), each gated on health;
//  3. set a drift policy and a retraining policy;
//  4. stream predictions through the agents' Open Inference Protocol APIs
//     and show the drift windows (low PSI, no alert);
//  5. the sensors age: temperature shifts by 3 standard deviations and
//     labelled field data arrives as the data set's v2; drift is detected,
//     an alert starts a retraining run, the candidate passes its gates and
//     is rolled out as a canary, then to the whole fleet.
//
// It prints its progress as it goes (Config.Out), then keeps streaming
// predictions until its context ends. The pieces: sensors.go (the data
// set), fleet.go (the control plane and agents, and their Run loops),
// predict.go (the stream of predictions), script.go (the steps).
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// The demo's model and data set, and its drift settings.
const (
	modelName   = "sensors"
	datasetName = "sensors"
	trainRows   = 900
	fieldRows   = 450
	shiftStd    = 3 // the shift of the aged sensors, in standard deviations
	driftWindow = 5 * time.Second
	driftSettle = time.Second
	windowRows  = 1500 // readings per drift window the stream aims at (PSI over 20 bins is noisy on fewer)
)

// Config configures the demo.
type Config struct {
	// Agents is the number of agents to start (at least 1).
	Agents int
	// Duration, if positive, ends the demo after this long; otherwise it
	// runs until its context ends.
	Duration time.Duration
	// DataDir keeps the control plane's and agents' state; "" is a
	// temporary directory, removed at the end.
	DataDir string
	// HTTPAddr and MQTTAddr are the control plane's API and embedded
	// broker addresses (port 0 picks a free one).
	HTTPAddr, MQTTAddr string
	// ONNXRuntimeLib is the path of libonnxruntime.so; "" searches
	// ($ONNXRUNTIME_LIB, the cache, the system).
	ONNXRuntimeLib string
	// Interval is the time between prediction rounds (positive).
	Interval time.Duration
	// Out takes the progress lines; nil discards them.
	Out io.Writer
	// Logger takes the control plane's and agents' logs; nil discards
	// them.
	Logger *slog.Logger
}

// Run runs the demo until ctx ends or cfg.Duration is up, wherever it is
// in the loop: that is a clean end (nil). A step that fails, or a part of
// the fleet that stops by itself, ends it with an error saying which.
// Either way the agents stop first (flushing their telemetry), then the
// control plane.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Agents < 1 {
		return fmt.Errorf("the demo needs at least 1 agent; %d asked for", cfg.Agents)
	}
	if cfg.Interval <= 0 {
		return fmt.Errorf("the interval between predictions must be positive; %s given", cfg.Interval)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	// A part of the fleet that stops by itself ends the script through
	// ctx; Run then returns the fleet's failures.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var sayMu sync.Mutex
	say := func(format string, args ...any) {
		sayMu.Lock()
		defer sayMu.Unlock()
		fmt.Fprintf(cfg.Out, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}

	dir := cfg.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "shoal-demo-")
		if err != nil {
			return fmt.Errorf("make the demo's data directory: %w", err)
		}
		defer func() {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove the demo's data in %s: %w", tmp, rerr))
			}
		}()
		dir = tmp
	}

	f, err := startControlPlane(ctx, &cfg, dir, log, fail)
	if err != nil {
		if ctx.Err() != nil {
			return nil // over before the control plane was up
		}
		return err
	}
	// Each round sends a batch per agent, sized so that a drift window
	// gets about windowRows predictions.
	rounds := max(1, int(driftWindow/cfg.Interval))
	pred := newPredictor(modelName, (windowRows+rounds*cfg.Agents-1)/(rounds*cfg.Agents), say)
	s := &script{ctx: ctx, c: f.c, cfg: &cfg, say: say, pred: pred, fleet: f}
	defer func() {
		serr := s.shutdown()
		err = errors.Join(f.Err(), err, serr)
	}()
	say("control plane up: API %s, MQTT %s (embedded broker), data in %s; drift windows of %s", f.cp.URL(), f.cp.MQTTAddr(), dir, driftWindow)
	if err := s.run(s.enroll); err != nil {
		return err
	}
	if err := s.run(s.loop); err != nil {
		return err
	}
	return s.streamUntilDone()
}
