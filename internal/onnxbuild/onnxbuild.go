// Package onnxbuild writes ONNX models from Go, using the ONNX protobuf
// types of github.com/advancedclimatesystems/gonnx/onnx (generated from the
// ONNX schema) — never hand-encoded bytes. The demo's example model, test
// models and (later) the built-in trainers are written with it.
package onnxbuild

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// Opset is the ONNX operator set the builder targets; ONNX Runtime 1.24
// supports it fully.
const Opset = 17

// irVersion matches opset 17 (ONNX 1.12).
const irVersion = 8

// Graph accumulates a model's inputs, weights, nodes and outputs.
type Graph struct {
	name    string
	g       *onnx.GraphProto
	meta    map[string]string
	counter int
}

// New starts a graph called name.
func New(name string) *Graph {
	return &Graph{name: name, g: &onnx.GraphProto{Name: name}, meta: map[string]string{}}
}

// Dim is a dimension: a size ≥ 0, or -1 for a dynamic (batch) dimension.
type Dim = int64

func valueInfo(name string, elem onnx.TensorProto_DataType, shape []Dim) *onnx.ValueInfoProto {
	dims := make([]*onnx.TensorShapeProto_Dimension, len(shape))
	for i, d := range shape {
		if d < 0 {
			dims[i] = &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimParam{DimParam: fmt.Sprintf("d%d", i)}}
		} else {
			dims[i] = &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimValue{DimValue: d}}
		}
	}
	return &onnx.ValueInfoProto{
		Name: name,
		Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: &onnx.TypeProto_Tensor{
			ElemType: int32(elem),
			Shape:    &onnx.TensorShapeProto{Dim: dims},
		}}},
	}
}

// InputFloat declares an FP32 input.
func (b *Graph) InputFloat(name string, shape ...Dim) string {
	b.g.Input = append(b.g.Input, valueInfo(name, onnx.TensorProto_FLOAT, shape))
	return name
}

// OutputFloat declares an FP32 output.
func (b *Graph) OutputFloat(name string, shape ...Dim) {
	b.g.Output = append(b.g.Output, valueInfo(name, onnx.TensorProto_FLOAT, shape))
}

// InputString declares a STRING input.
func (b *Graph) InputString(name string, shape ...Dim) string {
	b.g.Input = append(b.g.Input, valueInfo(name, onnx.TensorProto_STRING, shape))
	return name
}

// OutputString declares a STRING output.
func (b *Graph) OutputString(name string, shape ...Dim) {
	b.g.Output = append(b.g.Output, valueInfo(name, onnx.TensorProto_STRING, shape))
}

// OutputInt64 declares an INT64 output.
func (b *Graph) OutputInt64(name string, shape ...Dim) {
	b.g.Output = append(b.g.Output, valueInfo(name, onnx.TensorProto_INT64, shape))
}

// Weight adds an FP32 initializer and returns its name.
func (b *Graph) Weight(name string, data []float32, dims ...int64) string {
	b.g.Initializer = append(b.g.Initializer, &onnx.TensorProto{
		Name: name, DataType: int32(onnx.TensorProto_FLOAT), Dims: dims, FloatData: append([]float32(nil), data...),
	})
	return name
}

// WeightInt64 adds an INT64 initializer and returns its name.
func (b *Graph) WeightInt64(name string, data []int64, dims ...int64) string {
	b.g.Initializer = append(b.g.Initializer, &onnx.TensorProto{
		Name: name, DataType: int32(onnx.TensorProto_INT64), Dims: dims, Int64Data: append([]int64(nil), data...),
	})
	return name
}

// Attr is a node attribute.
type Attr = *onnx.AttributeProto

// AttrInt is an integer attribute.
func AttrInt(name string, v int64) Attr {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INT, I: v}
}

// AttrFloat is a float attribute.
func AttrFloat(name string, v float32) Attr {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_FLOAT, F: v}
}

// AttrString is a string attribute.
func AttrString(name, v string) Attr {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_STRING, S: []byte(v)}
}

// Node adds an operator node; when output is "" a fresh name is made. It
// returns the output name.
func (b *Graph) Node(op string, inputs []string, output string, attrs ...Attr) string {
	b.counter++
	if output == "" {
		output = fmt.Sprintf("%s_%d", op, b.counter)
	}
	b.g.Node = append(b.g.Node, &onnx.NodeProto{
		Name: fmt.Sprintf("%s_n%d", op, b.counter), OpType: op, Input: inputs, Output: []string{output}, Attribute: attrs,
	})
	return output
}

// Meta sets a metadata property stored in the model.
func (b *Graph) Meta(key, value string) { b.meta[key] = value }

// Bytes serialises the model.
func (b *Graph) Bytes() ([]byte, error) {
	m := &onnx.ModelProto{
		IrVersion:       irVersion,
		OpsetImport:     []*onnx.OperatorSetIdProto{{Domain: "", Version: Opset}},
		ProducerName:    "shoal",
		ProducerVersion: "1",
		Graph:           b.g,
	}
	for k, v := range b.meta {
		m.MetadataProps = append(m.MetadataProps, &onnx.StringStringEntryProto{Key: k, Value: v})
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode model %s: %w", b.name, err)
	}
	return out, nil
}

// Dense is one fully connected layer: y = x·W + B, W is In×Out row-major.
type Dense struct {
	In, Out int
	W       []float32
	B       []float32
}

// Activation names the non-linearity between hidden layers.
type Activation string

// Activations.
const (
	ReLU Activation = "Relu"
	Tanh Activation = "Tanh"
)

// MLPSpec describes a multi-layer perceptron model.
type MLPSpec struct {
	Name       string
	Input      string // input name; default "input"
	Layers     []Dense
	Activation Activation // between layers; default ReLU
	// Mean and Std, when set, standardise the input inside the graph:
	// x' = (x - Mean) / Std.
	Mean, Std []float32
	// Classifier adds Softmax "probabilities" [-1, classes] and ArgMax
	// "label" [-1] outputs; otherwise the output is "output" [-1, out].
	Classifier bool
}

// MLP writes an MLP model.
func MLP(s MLPSpec) ([]byte, error) {
	if len(s.Layers) == 0 {
		return nil, fmt.Errorf("mlp %s: no layers", s.Name)
	}
	for i, l := range s.Layers {
		if len(l.W) != l.In*l.Out || len(l.B) != l.Out {
			return nil, fmt.Errorf("mlp %s: layer %d is %dx%d but has %d weights and %d biases", s.Name, i, l.In, l.Out, len(l.W), len(l.B))
		}
		if i > 0 && l.In != s.Layers[i-1].Out {
			return nil, fmt.Errorf("mlp %s: layer %d takes %d inputs; layer %d gives %d", s.Name, i, l.In, i-1, s.Layers[i-1].Out)
		}
	}
	in := s.Input
	if in == "" {
		in = "input"
	}
	act := s.Activation
	if act == "" {
		act = ReLU
	}
	g := New(s.Name)
	x := g.InputFloat(in, -1, int64(s.Layers[0].In))
	if len(s.Mean) > 0 {
		n := s.Layers[0].In
		if len(s.Mean) != n || len(s.Std) != n {
			return nil, fmt.Errorf("mlp %s: standardisation needs %d means and stds", s.Name, n)
		}
		inv := make([]float32, n)
		for i, sd := range s.Std {
			if sd == 0 {
				sd = 1
			}
			inv[i] = 1 / sd
		}
		x = g.Node("Sub", []string{x, g.Weight("mean", s.Mean, int64(n))}, "")
		x = g.Node("Mul", []string{x, g.Weight("inv_std", inv, int64(n))}, "")
	}
	for i, l := range s.Layers {
		w := g.Weight(fmt.Sprintf("W%d", i), l.W, int64(l.In), int64(l.Out))
		bias := g.Weight(fmt.Sprintf("B%d", i), l.B, int64(l.Out))
		x = g.Node("Gemm", []string{x, w, bias}, "")
		if i < len(s.Layers)-1 {
			x = g.Node(string(act), []string{x}, "")
		}
	}
	out := s.Layers[len(s.Layers)-1].Out
	if s.Classifier {
		g.Node("Softmax", []string{x}, "probabilities", AttrInt("axis", -1))
		g.Node("ArgMax", []string{x}, "label", AttrInt("axis", 1), AttrInt("keepdims", 0))
		g.OutputFloat("probabilities", -1, int64(out))
		g.OutputInt64("label", -1)
	} else {
		g.Node("Identity", []string{x}, "output")
		g.OutputFloat("output", -1, int64(out))
	}
	return g.Bytes()
}

// RandomLayers makes layers of the given sizes with Glorot-uniform weights
// and zero biases, deterministic for seed.
func RandomLayers(seed uint64, sizes ...int) []Dense {
	r := rand.New(rand.NewPCG(seed, seed+1))
	var layers []Dense
	for i := 0; i+1 < len(sizes); i++ {
		in, out := sizes[i], sizes[i+1]
		limit := math.Sqrt(6 / float64(in+out))
		w := make([]float32, in*out)
		for j := range w {
			w[j] = float32((r.Float64()*2 - 1) * limit)
		}
		b := make([]float32, out)
		for j := range b {
			b[j] = float32((r.Float64()*2 - 1) * 0.1)
		}
		layers = append(layers, Dense{In: in, Out: out, W: w, B: b})
	}
	return layers
}

// Forward runs an MLP spec in Go (float64 accumulation) on one input row:
// the reference the ONNX Runtime output is checked against.
func Forward(s MLPSpec, x []float32) []float32 {
	cur := make([]float64, len(x))
	for i, v := range x {
		cur[i] = float64(v)
		if len(s.Mean) > 0 {
			sd := float64(s.Std[i])
			if sd == 0 {
				sd = 1
			}
			cur[i] = (cur[i] - float64(s.Mean[i])) * float64(float32(1/sd))
		}
	}
	for li, l := range s.Layers {
		next := make([]float64, l.Out)
		for o := 0; o < l.Out; o++ {
			sum := float64(l.B[o])
			for i := 0; i < l.In; i++ {
				sum += cur[i] * float64(l.W[i*l.Out+o])
			}
			if li < len(s.Layers)-1 {
				switch s.Activation {
				case Tanh:
					sum = math.Tanh(sum)
				default:
					sum = math.Max(0, sum)
				}
			}
			next[o] = sum
		}
		cur = next
	}
	out := make([]float32, len(cur))
	if s.Classifier {
		maxv := math.Inf(-1)
		for _, v := range cur {
			maxv = math.Max(maxv, v)
		}
		var z float64
		for _, v := range cur {
			z += math.Exp(v - maxv)
		}
		for i, v := range cur {
			out[i] = float32(math.Exp(v-maxv) / z)
		}
		return out
	}
	for i, v := range cur {
		out[i] = float32(v)
	}
	return out
}

// Lowercaser is a model that lower-cases the strings of "text" [n] into
// "lower" [n] with ONNX Runtime's StringNormalizer under the given locale
// (the exporter's choice; ONNX Runtime needs the machine to have it).
func Lowercaser(locale string) ([]byte, error) {
	g := New("lowercaser")
	x := g.InputString("text", -1)
	g.Node("StringNormalizer", []string{x}, "lower",
		AttrString("case_change_action", "LOWER"), AttrString("locale", locale))
	g.OutputString("lower", -1)
	return g.Bytes()
}
