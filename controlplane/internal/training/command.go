package training

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Command is a trainer that runs an executable under the contract in the
// package documentation.
type Command struct {
	// Path is the executable; Args come before the contract's flags.
	Path string
	Args []string
	// Env adds KEY=value entries to the executable's environment.
	Env []string
	// Timeout bounds a run (default DefaultCommandTimeout).
	Timeout time.Duration
	// TempDir is where work directories are made (default os.TempDir()).
	TempDir string
}

var _ Trainer = (*Command)(nil)

// DefaultCommandTimeout bounds a command trainer's run unless
// Command.Timeout says otherwise.
const DefaultCommandTimeout = time.Hour

// The contract's limits.
const (
	maxMetricsBytes = 1 << 20
	maxLineBytes    = 4 << 10
	tailLines       = 10 // of output quoted in an error
	tailLineBytes   = 200
	// killGrace is how long a process group has between SIGTERM and
	// SIGKILL, and how long output pipes held open by leftover processes
	// are waited for.
	killGrace = 10 * time.Second
)

// The work directory's files.
const (
	fileData    = "data.csv"
	fileSpec    = "spec.json"
	dirOut      = "out"
	fileModel   = "model.onnx"
	fileMetrics = "metrics.json"
)

// commandSpec is spec.json: the spec as given, and what the data set's
// columns are.
type commandSpec struct {
	Spec
	Features []string `json:"features"`
	Target   string   `json:"target"`
	Classes  []string `json:"classes,omitempty"`
}

// Train runs the executable on data and spec and reads what it wrote.
// Every line it prints goes to progress (Line and Stream set, and the
// epoch fields too for a progress line). Errors: see Trainer; the message
// says what the executable did wrong and quotes its last lines of output.
func (c *Command) Train(ctx context.Context, spec Spec, data Data, progress func(Progress)) (*Result, error) {
	const op = "training.Command"
	name := filepath.Base(c.Path)
	if spec.Task != Classification && spec.Task != Regression {
		return nil, shoalerr.E(shoalerr.Invalid, op, "training spec: task %q is unknown; use %q or %q", spec.Task, Classification, Regression)
	}
	d, err := check(op, data, spec.Task)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(c.TempDir, "shoal-train-*")
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "make the work directory for trainer %s", name)
	}
	defer os.RemoveAll(dir)
	dataPath, specPath, outDir := filepath.Join(dir, fileData), filepath.Join(dir, fileSpec), filepath.Join(dir, dirOut)
	if err := writeJob(d, spec, dataPath, specPath, outDir); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "write the inputs of trainer %s", name)
	}

	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := append(append([]string(nil), c.Args...), "--data", dataPath, "--spec", specPath, "--out", outDir)
	cmd := exec.CommandContext(tctx, c.Path, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + dir,
		"SHOAL_DATA=" + dataPath, "SHOAL_SPEC=" + specPath, "SHOAL_OUT=" + outDir}
	cmd.Env = append(cmd.Env, c.Env...)
	killGroup(cmd)
	cmd.WaitDelay = killGrace
	lines := make(chan Progress, 64)
	stdout, stderr := &lineWriter{stream: "stdout", lines: lines}, &lineWriter{stream: "stderr", lines: lines}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot start trainer %s (%s); check the path and that it is executable", name, c.Path)
	}
	waited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		// Wait returns once the pipes are copied: no more writes.
		stdout.flush()
		stderr.flush()
		close(lines)
		waited <- err
	}()

	res := &Result{Metrics: map[string]float64{}}
	var tail []string
	for p := range lines {
		line := p.Line
		if len(line) > tailLineBytes {
			n := tailLineBytes
			for n > 0 && !utf8.RuneStart(line[n]) {
				n--
			}
			line = line[:n] + "…"
		}
		tail = append(tail, p.Stream+": "+line)
		if len(tail) > tailLines {
			tail = tail[1:]
		}
		if p.Epoch > 0 {
			res.History = append(res.History, p)
			res.Epochs = max(res.Epochs, p.Epoch)
		}
		if progress != nil {
			progress(p)
		}
	}
	err = <-waited
	output := "it printed nothing"
	if len(tail) > 0 {
		output = "its last lines of output:\n  " + strings.Join(tail, "\n  ")
	}
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: trainer %s stopped: %w", op, name, ctx.Err())
	case tctx.Err() != nil:
		return nil, shoalerr.E(shoalerr.Invalid, op, "trainer %s ran past its timeout of %s and was stopped; train for less or raise the timeout; %s", name, timeout, output)
	// exec.ErrWaitDelay: it exited 0 but left a process holding its output.
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, shoalerr.E(shoalerr.Invalid, op, "trainer %s failed (%s); %s", name, exit.ProcessState, output)
		}
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "run trainer %s", name)
	}
	if err := readModel(res, filepath.Join(outDir, fileModel)); err != nil {
		return nil, shoalerr.E(shoalerr.Invalid, op, "trainer %s exited 0 but %v; %s", name, err, output)
	}
	if err := readMetrics(res, filepath.Join(outDir, fileMetrics)); err != nil {
		return nil, shoalerr.E(shoalerr.Invalid, op, "trainer %s exited 0 but %v; %s", name, err, output)
	}
	return res, nil
}

// writeJob writes data.csv and spec.json and makes the output directory.
func writeJob(d checked, spec Spec, dataPath, specPath, outDir string) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(append(append([]string(nil), d.Features...), d.Target))
	rec := make([]string, len(d.Features)+1)
	for r, row := range d.X {
		for j, v := range row {
			rec[j] = ""
			if !math.IsNaN(v) {
				rec[j] = strconv.FormatFloat(v, 'g', -1, 64)
			}
		}
		rec[len(row)] = strconv.FormatFloat(d.Y[r], 'g', -1, 64)
		w.Write(rec)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	if err := os.WriteFile(dataPath, buf.Bytes(), 0o600); err != nil {
		return err
	}
	js := commandSpec{Spec: spec, Features: d.Features, Target: d.Target}
	if spec.Task == Classification {
		js.Classes = d.Classes
	}
	b, err := json.Marshal(js)
	if err != nil {
		return err
	}
	if err := os.WriteFile(specPath, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Mkdir(outDir, 0o700)
}

// readModel reads model.onnx into res, with its input and output names.
func readModel(res *Result, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("wrote no model: %s is missing (write the ONNX model to $SHOAL_OUT/%s)", fileModel, fileModel)
	case err != nil:
		return fmt.Errorf("its model cannot be read: %w", err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("its %s is not a regular file", fileModel)
	case fi.Size() == 0:
		return fmt.Errorf("its %s is empty", fileModel)
	case fi.Size() > onnxrt.MaxModelBytes:
		return fmt.Errorf("its %s is %d bytes; the limit is %d", fileModel, fi.Size(), onnxrt.MaxModelBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("its model cannot be read: %w", err)
	}
	var m onnx.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil || m.Graph == nil || len(m.Graph.Output) == 0 {
		return fmt.Errorf("its %s is not an ONNX model (no graph with outputs in %d bytes)", fileModel, len(data))
	}
	weights := map[string]bool{}
	for _, w := range m.Graph.Initializer {
		weights[w.Name] = true
	}
	for _, in := range m.Graph.Input {
		if !weights[in.Name] && res.Input == "" {
			res.Input = in.Name
		}
	}
	for _, out := range m.Graph.Output {
		res.Outputs = append(res.Outputs, out.Name)
	}
	res.Model = data
	return nil
}

// readMetrics reads metrics.json into res: an object of finite numbers.
func readMetrics(res *Result, path string) error {
	const want = `a JSON object of numbers, such as {"accuracy": 0.93}`
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wrote no metrics: %s is missing (write %s to $SHOAL_OUT/%s)", fileMetrics, want, fileMetrics)
	}
	if err != nil {
		return fmt.Errorf("its metrics cannot be read: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetricsBytes+1))
	if err != nil {
		return fmt.Errorf("its metrics cannot be read: %w", err)
	}
	if len(b) > maxMetricsBytes {
		return fmt.Errorf("its %s is over %d bytes; write %s", fileMetrics, maxMetricsBytes, want)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return fmt.Errorf("its %s is not %s: %.80q", fileMetrics, want, b)
	}
	if len(raw) == 0 {
		return fmt.Errorf("its %s holds no metrics; write %s", fileMetrics, want)
	}
	for k, v := range raw {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return fmt.Errorf("its %s gives %q as %s, not a number; write %s", fileMetrics, k, v, want)
		}
		res.Metrics[k] = f
	}
	return nil
}

// lineWriter turns what a stream writes into Progress lines; a line that
// is a JSON object with an "epoch" also fills the epoch fields. Lines are
// cut at maxLineBytes.
type lineWriter struct {
	stream string
	lines  chan<- Progress
	buf    []byte
	cut    bool // the current line was cut: drop the rest of it
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !w.cut {
			room := maxLineBytes - len(w.buf)
			if len(chunk) > room {
				w.buf = append(w.buf, chunk[:room]...)
				w.emit()
				w.cut = true
			} else {
				w.buf = append(w.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !w.cut {
			w.emit()
		}
		w.cut = false
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 && !w.cut {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	line := strings.TrimRight(string(w.buf), "\r")
	w.buf = w.buf[:0]
	var p Progress
	if strings.HasPrefix(line, "{") {
		if json.Unmarshal([]byte(line), &p) != nil || p.Epoch <= 0 {
			p = Progress{}
		}
	}
	p.Line, p.Stream = line, w.stream
	w.lines <- p
}
