package demo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// TestSensorCSV: the data set is the same for the same arguments, its
// training rows are the same in every version, the classes come in turn,
// and the field rows carry the shift.
func TestSensorCSV(t *testing.T) {
	v1 := sensorCSV(30, 0, 0)
	if again := sensorCSV(30, 0, 0); again != v1 {
		t.Fatal("sensorCSV is not deterministic")
	}
	v2 := sensorCSV(30, 300, shiftStd)
	lines1, lines2 := strings.Split(strings.TrimSpace(v1), "\n"), strings.Split(strings.TrimSpace(v2), "\n")
	if lines1[0] != "temperature,vibration,current,pressure,state" || len(lines1) != 31 || len(lines2) != 331 {
		t.Fatalf("header %q, %d and %d lines; want 31 and 331", lines1[0], len(lines1), len(lines2))
	}
	if !slices.Equal(lines1, lines2[:31]) {
		t.Error("v2 does not start with v1's rows")
	}
	var field, train float64
	for i, line := range lines2[1:] {
		cols := strings.Split(line, ",")
		if len(cols) != 5 || cols[4] != sensorClasses[i%3] {
			t.Fatalf("row %d = %q; want 4 readings and class %s", i, line, sensorClasses[i%3])
		}
		temp, err := strconv.ParseFloat(cols[0], 64)
		if err != nil {
			t.Fatal(err)
		}
		if i < 30 {
			train += temp / 30
		} else {
			field += temp / 300
		}
	}
	// The classes' mean temperatures average to base + 1/3 std; the field
	// rows are shiftStd higher.
	if d := field - train; d < 0.6*shiftStd*sensorStd[sensorShifted] || d > 1.4*shiftStd*sensorStd[sensorShifted] {
		t.Errorf("field rows read %.1f°C above the training rows; want about %.0f", d, shiftStd*sensorStd[sensorShifted])
	}
}

func TestSensorRowShift(t *testing.T) {
	a := sensorRow(rand.New(rand.NewPCG(1, 2)), 1, 0)
	b := sensorRow(rand.New(rand.NewPCG(1, 2)), 1, 2)
	if b[sensorShifted]-a[sensorShifted] != 2*sensorStd[sensorShifted] {
		t.Errorf("a shift of 2 moves the reading by %v; want 2 std", b[sensorShifted]-a[sensorShifted])
	}
	for j := range a {
		if j != sensorShifted && a[j] != b[j] {
			t.Errorf("reading %d moved with the shift", j)
		}
	}
	if got := formatReading([]float64{61.25, 0.456, 8.04, 101.33}); got != "61.2°C 0.46g 8.0A 101.3kPa" {
		t.Errorf("formatReading = %q", got)
	}
}

// TestRunner: a Run that returns before stop is a failure that ends the
// demo, named; errors on the way out are stop's.
func TestRunner(t *testing.T) {
	failed := make(chan error, 4)
	r := newRunner(func(err error) { failed <- err })
	broke := errors.New("broker gone")
	r.Go("agent a", func(ctx context.Context) error { return broke })
	r.Go("agent b", func(ctx context.Context) error { return nil })
	r.Go("agent c", func(ctx context.Context) error { <-ctx.Done(); return errors.New("flush failed") })
	r.Go("agent d", func(ctx context.Context) error { <-ctx.Done(); return nil })
	for range 2 {
		var f *failure
		if err := <-failed; !errors.As(err, &f) || f.who != "agent a" && f.who != "agent b" {
			t.Errorf("failed with %v; want agent a's or b's failure", err)
		}
	}
	err := r.stop()
	if err == nil || !strings.Contains(err.Error(), "agent c: flush failed") || strings.Contains(err.Error(), "agent d") {
		t.Errorf("stop = %v; want agent c's error alone", err)
	}
	if ferr := r.Err(); !errors.Is(ferr, broke) ||
		!strings.Contains(ferr.Error(), "the demo stopped: agent a stopped by itself: broker gone") || !strings.Contains(ferr.Error(), "agent b stopped by itself") {
		t.Errorf("Err = %v; want agents a and b named", ferr)
	}
	if len(failed) != 0 {
		t.Errorf("%d more failures; want 2 (a and b)", len(failed))
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestRunEndsAtDuration: a Duration that ends long before the loop does
// ends the demo cleanly, with its final count.
func TestRunEndsAtDuration(t *testing.T) {
	onnxrt.MustInitForTest(t)
	out := &lockedBuffer{}
	start := time.Now()
	err := Run(context.Background(), Config{Agents: 2, Duration: 4 * time.Second, DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", Interval: time.Second, Out: out})
	if err != nil {
		t.Fatalf("Run = %v; want a clean end\n%s", err, out)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("a 4s demo took %s", d)
	}
	for _, want := range []string{"control plane up", "agents enrolled and online", "shutting down", "final count:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRunChecksConfig(t *testing.T) {
	for _, cfg := range []Config{{Agents: 0, Interval: time.Second}, {Agents: 1}} {
		if err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v): no error", cfg)
		}
	}
}
