package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// lockedBuffer is the demo's stdout; cancel is called once it holds the
// line `until`.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	until  string
	cancel func()
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if w.until != "" && strings.Contains(w.b.String(), w.until) {
		w.cancel()
	}
	return n, err
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func runDemoCmd(t *testing.T, ctx context.Context, out *lockedBuffer, args ...string) error {
	t.Helper()
	cmd := newRootCmd(out, out)
	cmd.SetArgs(append([]string{"demo", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, args...))
	return cmd.ExecuteContext(ctx)
}

// TestDemoFlags: bad flags are refused before anything starts (the demo
// package's tests cover a short --duration).
func TestDemoFlags(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"--agents 0", "--agents must be at least 1"},
		{"--interval 0s", "--interval must be positive"},
	} {
		out := &lockedBuffer{}
		err := runDemoCmd(t, context.Background(), out, strings.Fields(c.args)...)
		if err == nil || err.Error() != c.want {
			t.Errorf("demo %s = %v; want %q", c.args, err, c.want)
		}
	}
}

// TestDemoLoop runs the whole loop: train v1, roll it out, calm drift
// windows, the shift, the alert, the retraining run, its gates and
// canary rollout, every agent on v2; it stops once the demo says where to
// look.
func TestDemoLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("the whole loop takes about a minute")
	}
	onnxrt.MustInitForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{until: "streaming predictions every", cancel: cancel}
	if err := runDemoCmd(t, ctx, out, "--agents", "2", "--duration", "3m"); err != nil {
		t.Fatalf("demo = %v\n%s", err, out)
	}
	s := out.String()
	for _, want := range []string{
		"pushed dataset sensors v1: 900 rows",
		"epoch  10/60",
		"validation gates PASSED",
		"every stage passed; sensors 1 is healthy on 2 of 2 devices",
		"drift policy: alert when PSI ≥ 0.2",
		"samples, PSI 0.0",
		"no drift: 0 alerts",
		"pushed dataset sensors v2",
		"BREACH",
		"DRIFT ALERT",
		"retrains sensors on dataset sensors v2",
		"against champion v1",
		"every stage passed; sensors 2 is healthy on 2 of 2 devices",
		"the loop closed: sensors v1 (drifted) → v2",
		"demo-01 (model v2)",
		"demo-02 (model v2)",
		"/api/v1/loop/sensors",
		"final count:",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", s)
	}
}
