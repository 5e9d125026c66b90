// Package inference holds the agent's active models: a Model is one loaded
// ONNX model version (over internal/onnxrt) that can run, self-test and
// describe its inputs and outputs; a Set maps model names to their active
// Model and swaps versions atomically while predictions are running.
//
// A Model is reference counted. Whoever loads it owns one reference; Set.Swap
// takes that reference over, and every Set.Acquire adds one until its
// release func is called. The ONNX Runtime session is destroyed when the
// last reference goes, so a swap never closes a session under a running
// prediction and never waits for one either.
//
// A Model may keep DataStats: the data statistics of its predictions,
// binned with its manifest's reference profile.
package inference

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync/atomic"

	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Ref identifies a model version as the deployment manifest names it.
type Ref struct {
	Name            string
	Version         string
	SHA256          string // lower-case hex of the model file
	ReleaseSequence uint64
}

// String is "name@version" for logs and messages.
func (r Ref) String() string { return r.Name + "@" + r.Version }

// Proto returns the wire form of r.
func (r Ref) Proto() *shoalv1.ModelRef {
	return &shoalv1.ModelRef{Name: r.Name, Version: r.Version, Sha256: r.SHA256, ReleaseSequence: r.ReleaseSequence}
}

// Model is one loaded model version. Its methods may be called from many
// goroutines.
type Model struct {
	ref     Ref
	sess    *onnxrt.Session
	inputs  []onnxrt.TensorSpec
	outputs []onnxrt.TensorSpec

	// refs counts the owner's reference plus one per Acquire. Once it reaches
	// zero it never rises again (retain refuses), and the session is closed.
	refs atomic.Int64
	// handed is set once the owner's reference has been released by Close
	// or taken over by a Set.
	handed atomic.Bool
	// predictions counts the Runs that succeeded, for the reconciler's
	// health check.
	predictions atomic.Uint64
	// stats, once set, keeps the data statistics of the predictions; nil
	// when the manifest has no reference profile.
	stats atomic.Pointer[DataStats]
	// captureShare is the float64 bits of the share of predictions to
	// capture (DeploymentManifest.capture_share); 0 captures none.
	captureShare atomic.Uint64
	closeErr     error // the session's Close error; written before closed is closed
	closed       chan struct{}
	// releaseFn calls m.release; made once so that Acquire does not allocate.
	releaseFn func()
}

// Load reads the model file at path and opens it with ONNX Runtime. When
// ref.SHA256 is set, the bytes loaded must have that digest, so the model
// that runs is exactly the one that was verified, even if the file changed
// since. ref.Name must not be empty.
func Load(path string, ref Ref, opts onnxrt.Options) (*Model, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", ref, err)
	}
	if fi.Size() > onnxrt.MaxModelBytes {
		return nil, fmt.Errorf("load model %s: %s is %d bytes; the limit is %d", ref, path, fi.Size(), onnxrt.MaxModelBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", ref, err)
	}
	return openWith(data, ref, func() (*onnxrt.Session, error) { return onnxrt.OpenFileData(path, data, opts) })
}

// Open is Load for model bytes already in memory.
func Open(data []byte, ref Ref, opts onnxrt.Options) (*Model, error) {
	return openWith(data, ref, func() (*onnxrt.Session, error) { return onnxrt.Open(data, opts) })
}

func openWith(data []byte, ref Ref, session func() (*onnxrt.Session, error)) (*Model, error) {
	if ref.Name == "" {
		return nil, errors.New("load model: the model name is empty")
	}
	if ref.SHA256 != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != strings.ToLower(ref.SHA256) {
			return nil, fmt.Errorf("load model %s: the file's sha256 is %s; the manifest says %s", ref, got, ref.SHA256)
		}
	}
	sess, err := session()
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", ref, err)
	}
	m := &Model{ref: ref, sess: sess, inputs: sess.Inputs(), outputs: sess.Outputs(), closed: make(chan struct{})}
	m.refs.Store(1)
	m.releaseFn = func() { m.release() }
	return m, nil
}

// Ref returns the version this model is.
func (m *Model) Ref() Ref { return m.ref }

// Inputs returns the model's inputs (a copy).
func (m *Model) Inputs() []onnxrt.TensorSpec { return cloneSpecs(m.inputs) }

// Outputs returns the model's tensor outputs, in the order Run returns them
// (a copy).
func (m *Model) Outputs() []onnxrt.TensorSpec { return cloneSpecs(m.outputs) }

// Input returns the spec of the input called name. The spec's Shape must
// not be modified.
func (m *Model) Input(name string) (onnxrt.TensorSpec, bool) {
	for _, s := range m.inputs {
		if s.Name == name {
			return s, true
		}
	}
	return onnxrt.TensorSpec{}, false
}

// InputNames returns the input names in the model's order.
func (m *Model) InputNames() []string { return specNames(m.inputs) }

// OutputNames returns the output names in the order Run returns them.
func (m *Model) OutputNames() []string { return specNames(m.outputs) }

// Run runs the model. Inputs are matched by name; an error about the
// inputs is an *onnxrt.InputError naming the input, any other error is the
// model failing. The caller must hold a reference (Acquire) or own m.
// Each successful Run counts in Predictions.
func (m *Model) Run(inputs []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	out, err := m.sess.Run(inputs)
	if err == nil {
		m.predictions.Add(1)
	}
	return out, err
}

// Predictions returns how many Runs of m have succeeded since it was
// loaded. SelfTest does not count: a model only predicts for callers once
// a Set serves it, so this is the predictions it has served.
func (m *Model) Predictions() uint64 { return m.predictions.Load() }

// Stats returns the data statistics m keeps of its predictions, or nil if
// it keeps none. It is one atomic load, for the inference path.
func (m *Model) Stats() *DataStats { return m.stats.Load() }

// SetStats makes s the data statistics of m's predictions (NewDataStats
// for m), unless m has some already; it reports whether it did. It may be
// called while m serves: a model loaded from disk gets its statistics once
// the reconciler sees its manifest.
func (m *Model) SetStats(s *DataStats) bool { return m.stats.CompareAndSwap(nil, s) }

// CaptureShare returns the share of m's predictions (0..1) to capture for
// retraining data; 0 means none. It is one atomic load.
func (m *Model) CaptureShare() float64 { return math.Float64frombits(m.captureShare.Load()) }

// SetCaptureShare sets CaptureShare, clamped to [0, 1] (NaN is 0). It may
// be called while m serves.
func (m *Model) SetCaptureShare(share float64) {
	if !(share > 0) {
		share = 0
	}
	m.captureShare.Store(math.Float64bits(min(share, 1)))
}

// SelfTest runs the manifest's self-test: its inputs must give its expected
// outputs within its tolerance. The error says which output differs and how.
func (m *Model) SelfTest(st *shoalv1.SelfTest) error {
	if err := onnxrt.RunSelfTest(m.sess, st); err != nil {
		return fmt.Errorf("model %s: %w", m.ref, err)
	}
	return nil
}

// Close gives up the owner's reference: the session closes now if no
// prediction holds the model, else when the last one releases it. It
// returns the session's close error when it closed it. Close of a model
// that a Set has taken over does nothing (the Set owns it); a second Close
// does nothing.
func (m *Model) Close() error {
	if !m.handed.CompareAndSwap(false, true) {
		return nil
	}
	if m.release() {
		return m.closeErr
	}
	return nil
}

// Closed returns a channel closed once the session has been destroyed.
func (m *Model) Closed() <-chan struct{} { return m.closed }

// retain adds a reference unless the model has already been released for
// good.
func (m *Model) retain() bool {
	for {
		n := m.refs.Load()
		if n <= 0 {
			return false
		}
		if m.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference, closing the session with the last one; it
// reports whether it did.
func (m *Model) release() bool {
	switch n := m.refs.Add(-1); {
	case n > 0:
		return false
	case n < 0:
		panic(fmt.Sprintf("inference: model %s released more often than acquired", m.ref))
	}
	m.closeErr = m.sess.Close()
	close(m.closed)
	return true
}

func cloneSpecs(in []onnxrt.TensorSpec) []onnxrt.TensorSpec {
	out := make([]onnxrt.TensorSpec, len(in))
	for i, s := range in {
		out[i] = onnxrt.TensorSpec{Name: s.Name, DataType: s.DataType, Shape: append([]int64(nil), s.Shape...)}
	}
	return out
}

func specNames(specs []onnxrt.TensorSpec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}
