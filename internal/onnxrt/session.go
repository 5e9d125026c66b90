package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// MaxModelBytes bounds a model file Shoal will load.
const MaxModelBytes = 1 << 30

// Options tune a session.
type Options struct {
	// IntraOpThreads is ONNX Runtime's intra-op thread count; 0 keeps its
	// default (one per core).
	IntraOpThreads int
}

// InputError says which input of a request is wrong and why.
type InputError struct {
	Input  string
	Reason string
}

func (e *InputError) Error() string {
	if e.Input == "" {
		return e.Reason
	}
	return fmt.Sprintf("input %q: %s", e.Input, e.Reason)
}

// ModelError says why bytes are not a loadable ONNX model.
type ModelError struct{ Err error }

func (e *ModelError) Error() string { return "not a loadable ONNX model: " + e.Err.Error() }
func (e *ModelError) Unwrap() error { return e.Err }

// Session is a loaded model. Run may be called from many goroutines; Close
// waits for runs in progress.
type Session struct {
	mu      sync.RWMutex
	s       *ort.DynamicAdvancedSession
	inputs  []TensorSpec
	outputs []TensorSpec
	// skipped lists outputs that are not tensors (sequences, maps, as
	// scikit-learn's ZipMap makes); they are not fetched.
	skipped []string
	closed  bool
}

// OpenFile loads the model at path.
func OpenFile(path string, opts Options) (*Session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	return OpenFileData(path, data, opts)
}

// Open loads a model from its bytes. The library must be initialised (Init).
// Bytes that are not a loadable model give a *ModelError; a model that
// needs a locale the machine lacks gives a *LocaleError. The bytes are
// written to a temporary file for a moment (see OpenFileData).
func Open(data []byte, opts Options) (*Session, error) {
	if err := checkSize(data); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "shoal-model-*.onnx")
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("load model: write a temporary copy: %w", err)
	}
	return OpenFileData(f.Name(), data, opts)
}

// OpenFileData loads a model whose bytes data the caller has read from
// path (and checked, say against a digest): the session is made from
// data. ONNX Runtime reads the model's inputs and outputs through a
// temporary session, which onnxruntime_go makes with default options (a
// thread pool of one spinning thread per core) when given bytes, and
// with ours — one thread, no spinning — only when given a path: on a
// 16-core machine a thousand model loads spent 170 CPU-seconds in those
// throwaway pools.
func OpenFileData(path string, data []byte, opts Options) (*Session, error) {
	if _, err := Init(""); err != nil {
		return nil, err
	}
	if err := checkSize(data); err != nil {
		return nil, err
	}
	inspectOpts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer inspectOpts.Destroy()
	if err := oneThreadNoSpinning(inspectOpts); err != nil {
		return nil, fmt.Errorf("options of the session that reads the model's inputs and outputs: %w", err)
	}
	ins, outs, err := ort.GetInputOutputInfoWithOptions(path, inspectOpts)
	if err != nil {
		return nil, loadError(err)
	}
	s := &Session{}
	var inNames, outNames []string
	for _, in := range ins {
		if in.OrtValueType != ort.ONNXTypeTensor {
			return nil, &ModelError{fmt.Errorf("input %q is a %s; only tensor inputs are supported", in.Name, in.OrtValueType)}
		}
		s.inputs = append(s.inputs, specOf(in))
		inNames = append(inNames, in.Name)
	}
	for _, out := range outs {
		if out.OrtValueType != ort.ONNXTypeTensor {
			s.skipped = append(s.skipped, out.Name)
			continue
		}
		s.outputs = append(s.outputs, specOf(out))
		outNames = append(outNames, out.Name)
	}
	if len(outNames) == 0 {
		return nil, &ModelError{errors.New("the model has no tensor outputs")}
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if opts.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
			return nil, fmt.Errorf("set intra-op threads: %w", err)
		}
		if err := so.SetInterOpNumThreads(1); err != nil {
			return nil, fmt.Errorf("set inter-op threads: %w", err)
		}
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, inNames, outNames, so)
	if err != nil {
		return nil, loadError(err)
	}
	s.s = sess
	return s, nil
}

// oneThreadNoSpinning sets so to run on one thread that never spins.
func oneThreadNoSpinning(so *ort.SessionOptions) error {
	if err := so.SetIntraOpNumThreads(1); err != nil {
		return fmt.Errorf("set intra-op threads: %w", err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return fmt.Errorf("set inter-op threads: %w", err)
	}
	for _, key := range []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"} {
		if err := so.AddSessionConfigEntry(key, "0"); err != nil {
			return fmt.Errorf("set %s: %w", key, err)
		}
	}
	return nil
}

func checkSize(data []byte) error {
	if len(data) == 0 {
		return &ModelError{errors.New("the file is empty")}
	}
	if len(data) > MaxModelBytes {
		return &ModelError{fmt.Errorf("the file is %d bytes; the limit is %d", len(data), MaxModelBytes)}
	}
	return nil
}

func specOf(info ort.InputOutputInfo) TensorSpec {
	return TensorSpec{Name: info.Name, DataType: fromORTType(info.DataType), Shape: append([]int64(nil), info.Dimensions...)}
}

// Inspect loads model bytes only to read their inputs and outputs.
func Inspect(data []byte) (inputs, outputs []TensorSpec, err error) {
	s, err := Open(data, Options{IntraOpThreads: 1})
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	return s.Inputs(), s.Outputs(), nil
}

// Inputs returns the model's inputs.
func (s *Session) Inputs() []TensorSpec { return cloneSpecs(s.inputs) }

// Outputs returns the model's tensor outputs (those Run returns).
func (s *Session) Outputs() []TensorSpec { return cloneSpecs(s.outputs) }

// SkippedOutputs names outputs that are not tensors and are never returned.
func (s *Session) SkippedOutputs() []string { return append([]string(nil), s.skipped...) }

func cloneSpecs(in []TensorSpec) []TensorSpec {
	out := make([]TensorSpec, len(in))
	for i, s := range in {
		out[i] = TensorSpec{Name: s.Name, DataType: s.DataType, Shape: append([]int64(nil), s.Shape...)}
	}
	return out
}

// CheckInputs matches inputs to the model's inputs by name, returning them
// in the model's order. Errors are *InputError naming the input.
func (s *Session) CheckInputs(inputs []Tensor) ([]Tensor, error) {
	byName := make(map[string]int, len(inputs))
	for i, in := range inputs {
		if _, dup := byName[in.Name]; dup {
			return nil, &InputError{in.Name, "given more than once"}
		}
		byName[in.Name] = i
	}
	ordered := make([]Tensor, len(s.inputs))
	for i, spec := range s.inputs {
		j, ok := byName[spec.Name]
		if !ok {
			return nil, &InputError{spec.Name, fmt.Sprintf("missing; the model needs %s %v", spec.DataType, spec.Shape)}
		}
		in := inputs[j]
		if in.DataType != spec.DataType {
			if spec.DataType == FP16 || spec.DataType == BF16 {
				return nil, &InputError{spec.Name, fmt.Sprintf("the model takes %s, which Shoal cannot pass yet; export the model with FP32 inputs", spec.DataType)}
			}
			return nil, &InputError{spec.Name, fmt.Sprintf("datatype is %s; the model needs %s", in.DataType, spec.DataType)}
		}
		if len(in.Shape) != len(spec.Shape) {
			return nil, &InputError{spec.Name, fmt.Sprintf("shape %v has %d dimensions; the model needs %d (%v)", in.Shape, len(in.Shape), len(spec.Shape), spec.Shape)}
		}
		for d, want := range spec.Shape {
			if want >= 0 && in.Shape[d] != want {
				return nil, &InputError{spec.Name, fmt.Sprintf("shape %v: dimension %d is %d; the model needs %d (%v)", in.Shape, d, in.Shape[d], want, spec.Shape)}
			}
		}
		if err := in.Validate(); err != nil {
			return nil, &InputError{spec.Name, err.Error()}
		}
		ordered[i] = in
	}
	if len(inputs) != len(s.inputs) {
		for _, in := range inputs {
			if !s.hasInput(in.Name) {
				return nil, &InputError{in.Name, "the model has no such input"}
			}
		}
	}
	return ordered, nil
}

func (s *Session) hasInput(name string) bool {
	for _, spec := range s.inputs {
		if spec.Name == name {
			return true
		}
	}
	return false
}

// Run checks inputs (see CheckInputs) and runs the model, returning every
// tensor output in the model's order.
func (s *Session) Run(inputs []Tensor) ([]Tensor, error) {
	ordered, err := s.CheckInputs(inputs)
	if err != nil {
		return nil, err
	}
	ins := make([]ort.Value, len(ordered))
	defer func() {
		for _, v := range ins {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, in := range ordered {
		v, err := toORT(in)
		if err != nil {
			return nil, &InputError{in.Name, err.Error()}
		}
		ins[i] = v
	}
	outs := make([]ort.Value, len(s.outputs))
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, errors.New("model session is closed")
	}
	err = s.s.Run(ins, outs)
	s.mu.RUnlock()
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("run model: %w", err)
	}
	result := make([]Tensor, len(outs))
	for i, v := range outs {
		t, err := fromORT(s.outputs[i].Name, v)
		if err != nil {
			return nil, err
		}
		result[i] = t
	}
	return result, nil
}

// Close releases the session after runs in progress finish.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.s.Destroy()
}
