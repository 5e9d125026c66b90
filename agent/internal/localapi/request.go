package localapi

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// maxRank bounds the dimensions of a request's shape.
const maxRank = 32

// inferRequest is a decoded Open Inference Protocol request.
type inferRequest struct {
	id      string
	hasID   bool
	inputs  []onnxrt.Tensor
	outputs []string // requested outputs, in order; nil means all
}

// inputReq collects the fields of one request input.
type inputReq struct {
	index    int
	name     string
	hasName  bool
	datatype onnxrt.DataType
	hasType  bool
	shape    []int64
	hasShape bool
	dataAt   int // where "data" starts when it came before the fields it needs; -1 if absent
	data     any
	decoded  bool
}

// label names the input in messages: by name once known, else by index.
func (in *inputReq) label() string {
	if in.hasName {
		return strconv.Quote(in.name)
	}
	return fmt.Sprintf("inputs[%d]", in.index)
}

// parseRequest decodes an inference request for m. Input data is decoded
// straight into typed slices, checked against the model's inputs first.
// Every error is a *requestError.
func parseRequest(body []byte, m *inference.Model) (*inferRequest, error) {
	s := &scanner{b: body}
	req := &inferRequest{}
	if !s.consume('{') {
		return nil, badRequest("the body must be a JSON object with \"inputs\"; found %s", snippet(body[min(s.i, len(body)):]))
	}
	hasInputs := false
	if !s.consume('}') {
		for {
			k, err := s.key()
			if err != nil {
				return nil, err
			}
			switch string(k) {
			case "id":
				if s.peek() != '"' {
					return nil, badRequest(`"id" must be a string; found %s`, snippet(body[s.i:]))
				}
				if req.id, err = s.str(); err != nil {
					return nil, err
				}
				req.hasID = true
			case "inputs":
				hasInputs = true
				if req.inputs, err = parseInputs(s, m); err != nil {
					return nil, err
				}
			case "outputs":
				if req.outputs, err = parseOutputs(s, m); err != nil {
					return nil, err
				}
			default: // "parameters", and anything a newer client adds
				if err := s.skip(0); err != nil {
					return nil, err
				}
			}
			more, err := s.sepOrEnd('}')
			if err != nil {
				return nil, err
			}
			if !more {
				break
			}
		}
	}
	s.ws()
	if s.i != len(body) {
		return nil, badRequest("malformed JSON at byte %d: more data after the request object", s.i)
	}
	if !hasInputs {
		return nil, badRequest(`the request has no "inputs"; the model needs %s`, specList(m.Inputs()))
	}
	return req, nil
}

func parseInputs(s *scanner, m *inference.Model) ([]onnxrt.Tensor, error) {
	if !s.consume('[') {
		return nil, badRequest(`"inputs" must be an array; found %s`, snippet(s.b[s.i:]))
	}
	var out []onnxrt.Tensor
	if s.consume(']') {
		return out, nil
	}
	for {
		t, err := parseInput(s, m, len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		more, err := s.sepOrEnd(']')
		if err != nil {
			return nil, err
		}
		if !more {
			return out, nil
		}
	}
}

func parseInput(s *scanner, m *inference.Model, index int) (onnxrt.Tensor, error) {
	in := inputReq{index: index, dataAt: -1}
	if !s.consume('{') {
		return onnxrt.Tensor{}, badRequest("inputs[%d] must be an object; found %s", index, snippet(s.b[s.i:]))
	}
	if !s.consume('}') {
		for {
			k, err := s.key()
			if err != nil {
				return onnxrt.Tensor{}, err
			}
			switch string(k) {
			case "name":
				if s.peek() != '"' {
					return onnxrt.Tensor{}, badRequest(`inputs[%d]: "name" must be a string; found %s`, index, snippet(s.b[s.i:]))
				}
				in.name, err = s.str()
				in.hasName = true
			case "datatype":
				if s.peek() != '"' {
					return onnxrt.Tensor{}, badRequest(`input %s: "datatype" must be a string; found %s`, in.label(), snippet(s.b[s.i:]))
				}
				var dt string
				dt, err = s.str()
				in.datatype, in.hasType = onnxrt.DataType(dt), true
			case "shape":
				in.shape, err = parseShape(s, &in)
				in.hasShape = true
			case "data":
				if in.hasName && in.hasType && in.hasShape {
					// The usual order: decode in this one pass.
					var n int
					if n, err = checkInput(&in, m); err == nil {
						in.data, err = decodeData(s, &in, n)
						in.decoded = true
					}
				} else {
					in.dataAt, in.decoded = s.i, false
					err = s.skip(0)
				}
			default: // "parameters"
				err = s.skip(0)
			}
			if err != nil {
				return onnxrt.Tensor{}, err
			}
			more, err := s.sepOrEnd('}')
			if err != nil {
				return onnxrt.Tensor{}, err
			}
			if !more {
				break
			}
		}
	}
	if !in.decoded {
		n, err := checkInput(&in, m)
		if err != nil {
			return onnxrt.Tensor{}, err
		}
		if in.dataAt < 0 {
			return onnxrt.Tensor{}, badRequest(`input %s has no "data"`, in.label())
		}
		if in.data, err = decodeData(&scanner{b: s.b, i: in.dataAt}, &in, n); err != nil {
			return onnxrt.Tensor{}, err
		}
	}
	return onnxrt.Tensor{Name: in.name, DataType: in.datatype, Shape: in.shape, Data: in.data}, nil
}

// parseShape reads an array of dimension sizes.
func parseShape(s *scanner, in *inputReq) ([]int64, error) {
	if !s.consume('[') {
		return nil, badRequest(`input %s: "shape" must be an array of sizes; found %s`, in.label(), snippet(s.b[s.i:]))
	}
	shape := make([]int64, 0, 4)
	if s.consume(']') {
		return shape, nil
	}
	for {
		s.ws()
		at := s.i
		var n number
		if !s.number(&n) || !n.integer {
			return nil, badRequest(`input %s: "shape" must hold whole numbers; found %s`, in.label(), snippet(s.b[at:]))
		}
		if n.neg || !n.fits || n.m > math.MaxInt64 {
			return nil, badRequest(`input %s: shape dimension %s is not a size; give each dimension's actual size (≥ 0)`, in.label(), string(n.tok))
		}
		d := int64(n.m)
		if len(shape) == maxRank {
			return nil, badRequest(`input %s: shape has more than %d dimensions`, in.label(), maxRank)
		}
		shape = append(shape, d)
		more, err := s.sepOrEnd(']')
		if err != nil {
			return nil, err
		}
		if !more {
			return shape, nil
		}
	}
}

// checkInput checks a request input's name, datatype and shape against the
// model and returns the number of values its data must hold.
func checkInput(in *inputReq, m *inference.Model) (int, error) {
	if !in.hasName {
		return 0, badRequest(`inputs[%d] has no "name"; the model's inputs are %s`, in.index, specList(m.Inputs()))
	}
	spec, ok := m.Input(in.name)
	if !ok {
		return 0, badRequest("input %q: the model has no such input; its inputs are %s", in.name, specList(m.Inputs()))
	}
	if !in.hasType {
		return 0, badRequest(`input %q has no "datatype"; the model needs %s`, in.name, spec.DataType)
	}
	if spec.DataType == onnxrt.FP16 || spec.DataType == onnxrt.BF16 {
		return 0, badRequest("input %q: the model takes %s, which Shoal cannot pass yet; export the model with FP32 inputs", in.name, spec.DataType)
	}
	if in.datatype != spec.DataType {
		switch {
		case in.datatype == onnxrt.FP16 || in.datatype == onnxrt.BF16:
			return 0, badRequest("input %q: datatype %s is not supported; the model needs %s", in.name, in.datatype, spec.DataType)
		case !in.datatype.Supported():
			return 0, badRequest("input %q: datatype %q is not an Open Inference Protocol type; the model needs %s", in.name, in.datatype, spec.DataType)
		}
		return 0, badRequest("input %q: datatype is %s; the model needs %s", in.name, in.datatype, spec.DataType)
	}
	if !in.hasShape {
		return 0, badRequest(`input %q has no "shape"; the model needs %s`, in.name, shapeString(spec.Shape))
	}
	if len(in.shape) != len(spec.Shape) {
		return 0, badRequest("input %q: shape %s has %d dimensions; the model needs %d (%s)", in.name, shapeString(in.shape), len(in.shape), len(spec.Shape), shapeString(spec.Shape))
	}
	for d, want := range spec.Shape {
		if want >= 0 && in.shape[d] != want {
			return 0, badRequest("input %q: shape %s: dimension %d is %d; the model needs %d (%s)", in.name, shapeString(in.shape), d, in.shape[d], want, shapeString(spec.Shape))
		}
	}
	n, err := onnxrt.ShapeSize(in.shape)
	if err != nil {
		return 0, badRequest("input %q: %v", in.name, err)
	}
	return int(n), nil
}

// parseOutputs reads [{"name": ...}, ...] and checks each name.
func parseOutputs(s *scanner, m *inference.Model) ([]string, error) {
	if !s.consume('[') {
		return nil, badRequest(`"outputs" must be an array; found %s`, snippet(s.b[s.i:]))
	}
	names := []string{}
	if s.consume(']') {
		return nil, nil // [] asks for nothing in particular: all
	}
	for {
		if !s.consume('{') {
			return nil, badRequest("outputs[%d] must be an object; found %s", len(names), snippet(s.b[s.i:]))
		}
		name, hasName := "", false
		if !s.consume('}') {
			for {
				k, err := s.key()
				if err != nil {
					return nil, err
				}
				if string(k) == "name" {
					if s.peek() != '"' {
						return nil, badRequest(`outputs[%d]: "name" must be a string; found %s`, len(names), snippet(s.b[s.i:]))
					}
					name, err = s.str()
					hasName = true
				} else {
					err = s.skip(0) // "parameters"
				}
				if err != nil {
					return nil, err
				}
				more, err := s.sepOrEnd('}')
				if err != nil {
					return nil, err
				}
				if !more {
					break
				}
			}
		}
		if !hasName {
			return nil, badRequest(`outputs[%d] has no "name"`, len(names))
		}
		if !contains(m.OutputNames(), name) {
			return nil, badRequest("output %q: the model has no such output; its outputs are %s", name, specList(m.Outputs()))
		}
		if contains(names, name) {
			return nil, badRequest("output %q is requested more than once", name)
		}
		names = append(names, name)
		more, err := s.sepOrEnd(']')
		if err != nil {
			return nil, err
		}
		if !more {
			return names, nil
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// specList describes tensors for messages: "a" FP32 [-1,4], "b" INT64 [1].
func specList(specs []onnxrt.TensorSpec) string {
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = fmt.Sprintf("%q %s %s", s.Name, s.DataType, shapeString(s.Shape))
	}
	return strings.Join(parts, ", ")
}
