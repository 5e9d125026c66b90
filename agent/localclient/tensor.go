package localclient

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/shoalfleet/shoal/agent/internal/jsonfloat"
)

// InferRequest is an Open Inference Protocol inference request.
type InferRequest struct {
	// Model names the model; Version, if not "", the version that must
	// answer (a 404 *Error if another is active). Both go in the URL.
	Model, Version string
	// ID, if not "", is the request's id, echoed in the response and used
	// as the prediction's id for feedback; without one the agent makes one.
	ID     string
	Inputs []Tensor
	// Outputs names the outputs to return, in this order; nil returns
	// them all.
	Outputs []string
}

// MarshalJSON writes the request body.
func (r InferRequest) MarshalJSON() ([]byte, error) {
	type output struct {
		Name string `json:"name"`
	}
	body := struct {
		ID      string   `json:"id,omitempty"`
		Inputs  []Tensor `json:"inputs"`
		Outputs []output `json:"outputs,omitempty"`
	}{ID: r.ID, Inputs: r.Inputs}
	if body.Inputs == nil {
		body.Inputs = []Tensor{}
	}
	for _, n := range r.Outputs {
		body.Outputs = append(body.Outputs, output{n})
	}
	return json.Marshal(body)
}

// Tensor is an input of an inference request.
type Tensor struct {
	Name string
	// Datatype is the Open Inference Protocol type: FP32, FP64, INT8 to
	// INT64, UINT8 to UINT64, BOOL or BYTES (strings). "" takes it from
	// Data's type.
	Datatype string
	// Shape is the tensor's shape; nil is one dimension of len(Data).
	Shape []int64
	// Data holds the values, flat in row-major order, as the slice of the
	// Go type Datatype names: []float32 for FP32, []int64 for INT64,
	// []bool for BOOL, []string for BYTES, and so on. Floats that JSON has
	// no numbers for (NaN, ±Inf) are sent as the strings the agent reads.
	Data any
}

// Element is a Go type a tensor's data can hold.
type Element interface {
	float32 | float64 | int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | bool | string
}

// NewTensor returns an input called name of the datatype T stands for
// (FP32 for float32, INT64 for int64, BYTES for string, ...).
func NewTensor[T Element](name string, shape []int64, data []T) Tensor {
	return Tensor{Name: name, Datatype: datatypeOf(data), Shape: shape, Data: data}
}

// datatypeOf is the Open Inference Protocol type of a data slice, or "".
func datatypeOf(data any) string {
	switch data.(type) {
	case []float32:
		return "FP32"
	case []float64:
		return "FP64"
	case []int8:
		return "INT8"
	case []int16:
		return "INT16"
	case []int32:
		return "INT32"
	case []int64:
		return "INT64"
	case []uint8:
		return "UINT8"
	case []uint16:
		return "UINT16"
	case []uint32:
		return "UINT32"
	case []uint64:
		return "UINT64"
	case []bool:
		return "BOOL"
	case []string:
		return "BYTES"
	}
	return ""
}

// MarshalJSON writes the input as the request's JSON form.
func (t Tensor) MarshalJSON() ([]byte, error) {
	dt := t.Datatype
	if dt == "" {
		if dt = datatypeOf(t.Data); dt == "" {
			return nil, fmt.Errorf("input %q: data of type %T has no Open Inference Protocol datatype; give a slice such as []float32, or set Datatype", t.Name, t.Data)
		}
	}
	shape := t.Shape
	if shape == nil {
		n, err := dataLen(t.Data)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		shape = []int64{int64(n)}
	}
	name, err := json.Marshal(t.Name)
	if err != nil {
		return nil, err
	}
	b := append([]byte(`{"name":`), name...)
	b = append(b, `,"datatype":`...)
	b = strconv.AppendQuote(b, dt)
	b = append(b, `,"shape":[`...)
	for i, d := range shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, `],"data":`...)
	switch d := t.Data.(type) {
	case []float32:
		b = appendFloats(b, d, 32)
	case []float64:
		b = appendFloats(b, d, 64)
	case []uint8: // encoding/json would write base64
		b = append(b, '[')
		for i, v := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(v), 10)
		}
		b = append(b, ']')
	default:
		data, err := json.Marshal(t.Data)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		b = append(b, data...)
	}
	return append(b, '}'), nil
}

func dataLen(data any) (int, error) {
	switch d := data.(type) {
	case []float32:
		return len(d), nil
	case []float64:
		return len(d), nil
	case []int8:
		return len(d), nil
	case []int16:
		return len(d), nil
	case []int32:
		return len(d), nil
	case []int64:
		return len(d), nil
	case []uint8:
		return len(d), nil
	case []uint16:
		return len(d), nil
	case []uint32:
		return len(d), nil
	case []uint64:
		return len(d), nil
	case []bool:
		return len(d), nil
	case []string:
		return len(d), nil
	}
	return 0, fmt.Errorf("no Shape, and data of type %T is not a slice the agent takes", data)
}

// The strings the agent reads and writes for the floats JSON has no
// numbers for.
const (
	nanString    = jsonfloat.NaN
	infString    = jsonfloat.Inf
	negInfString = jsonfloat.NegInf
)

func appendFloats[T float32 | float64](b []byte, d []T, bits int) []byte {
	b = append(b, '[')
	for i, v := range d {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonfloat.Append(b, float64(v), bits)
	}
	return append(b, ']')
}

// InferResponse is the agent's answer to an inference request.
type InferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	// ID is the request's id, or the one the agent gave the prediction.
	ID      string         `json:"id,omitempty"`
	Outputs []OutputTensor `json:"outputs"`
}

// Output returns the output called name.
func (r *InferResponse) Output(name string) (OutputTensor, bool) {
	for _, o := range r.Outputs {
		if o.Name == name {
			return o, true
		}
	}
	return OutputTensor{}, false
}

// OutputTensor is one output of an inference response. Its data is kept
// as the agent wrote it; the methods decode it.
type OutputTensor struct {
	Name     string          `json:"name"`
	Datatype string          `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     json.RawMessage `json:"data"`
}

// Float32s decodes the data as float32s (exactly, for an FP32 output).
// NaN and ±Inf, which the agent writes as strings, are decoded too.
func (t OutputTensor) Float32s() ([]float32, error) {
	return decodeFloats[float32](t, 32)
}

// Float64s decodes the data as float64s, as Float32s does.
func (t OutputTensor) Float64s() ([]float64, error) {
	return decodeFloats[float64](t, 64)
}

// Int64s decodes the data of an integer output.
func (t OutputTensor) Int64s() ([]int64, error) {
	var out []int64
	if err := json.Unmarshal(t.Data, &out); err != nil {
		return nil, t.decodeError("whole numbers", err)
	}
	return out, nil
}

// Bools decodes the data of a BOOL output.
func (t OutputTensor) Bools() ([]bool, error) {
	var out []bool
	if err := json.Unmarshal(t.Data, &out); err != nil {
		return nil, t.decodeError("booleans", err)
	}
	return out, nil
}

// Strings decodes the data of a BYTES output.
func (t OutputTensor) Strings() ([]string, error) {
	var out []string
	if err := json.Unmarshal(t.Data, &out); err != nil {
		return nil, t.decodeError("strings", err)
	}
	return out, nil
}

func (t OutputTensor) decodeError(want string, err error) error {
	return fmt.Errorf("output %q (%s): the data are not %s: %w", t.Name, t.Datatype, want, err)
}

func decodeFloats[T float32 | float64](t OutputTensor, bits int) ([]T, error) {
	var out []T
	if err := json.Unmarshal(t.Data, &out); err == nil {
		return out, nil
	}
	// Some values are strings: NaN or infinities.
	var raw []json.RawMessage
	if err := json.Unmarshal(t.Data, &raw); err != nil {
		return nil, t.decodeError("numbers", err)
	}
	out = make([]T, len(raw))
	for i, r := range raw {
		var s string
		if json.Unmarshal(r, &s) == nil {
			switch s {
			case nanString:
				out[i] = T(math.NaN())
			case infString, "Inf":
				out[i] = T(math.Inf(1))
			case negInfString, "-Inf":
				out[i] = T(math.Inf(-1))
			default:
				return nil, t.decodeError("numbers", fmt.Errorf("element %d is %s", i, r))
			}
			continue
		}
		f, err := strconv.ParseFloat(string(r), bits)
		if err != nil {
			return nil, t.decodeError("numbers", fmt.Errorf("element %d is %s", i, r))
		}
		out[i] = T(f)
	}
	return out, nil
}
