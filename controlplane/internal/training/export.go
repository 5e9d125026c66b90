package training

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
)

// The built-in trainers' model input and outputs (onnxbuild.MLP's).
const (
	modelInput          = "input"
	outputProbabilities = "probabilities"
	outputLabel         = "label"
	outputValue         = "output"
)

// Metadata keys the built-in trainers set in the model.
const (
	MetaTrainer  = "shoal.trainer"
	MetaTask     = "shoal.task"
	MetaFeatures = "shoal.features" // JSON array of the input's column names
	MetaTarget   = "shoal.target"
	MetaClasses  = "shoal.classes" // JSON array: "label" i is class Classes[i]
)

// model is a trained network as exported: float32 weights with the target's
// scale folded into the last layer, and the scaler. Its outputs are the
// trainer's own forward pass, the reference ONNX Runtime must match.
type model struct {
	spec    onnxbuild.MLPSpec
	sc      scaler
	task    Task
	widened *network // spec's weights as float64
}

func newModel(n *network, sc scaler, task Task, shift, scale float64) *model {
	m := &model{sc: sc, task: task, spec: onnxbuild.MLPSpec{
		Name: "shoal", Input: modelInput, Activation: n.act,
		Mean: sc.mean, Std: sc.std, Classifier: task == Classification,
	}}
	m.widened = &network{sizes: n.sizes, act: n.act, params: make([]float64, len(n.params))}
	last := n.layers() - 1
	for l := range n.layers() {
		w, b := n.weights(l), n.biases(l)
		d := onnxbuild.Dense{In: n.sizes[l], Out: n.sizes[l+1], W: make([]float32, len(w)), B: make([]float32, len(b))}
		for i, v := range w {
			if l == last {
				v *= scale
			}
			d.W[i] = float32(v)
		}
		for i, v := range b {
			if l == last {
				v = v*scale + shift
			}
			d.B[i] = float32(v)
		}
		m.spec.Layers = append(m.spec.Layers, d)
		ww, wb := m.widened.weights(l), m.widened.biases(l)
		for i, v := range d.W {
			ww[i] = float64(v)
		}
		for i, v := range d.B {
			wb[i] = float64(v)
		}
	}
	return m
}

func (m *model) width() int { return m.widened.sizes[len(m.widened.sizes)-1] }

func (m *model) outputNames() []string {
	if m.task == Classification {
		return []string{outputProbabilities, outputLabel}
	}
	return []string{outputValue}
}

// outputs runs rows of raw features through the model: logits (one per
// class) for classification, the value for regression.
func (m *model) outputs(x [][]float64) []float64 {
	all := make([]int, len(x))
	for i := range all {
		all[i] = i
	}
	return evaluate(m.widened, m.sc.apply(x, all), len(x))
}

// onnx writes the model. Where the data set had missing values the graph
// first replaces NaN inputs with the training mean, as training did.
func (m *model) onnx(spec Spec, d checked) ([]byte, error) {
	data, err := onnxbuild.MLP(m.spec)
	if err != nil {
		return nil, err
	}
	var mp onnx.ModelProto
	if err := proto.Unmarshal(data, &mp); err != nil {
		return nil, fmt.Errorf("read back the model: %w", err)
	}
	g := mp.Graph
	if m.sc.impute {
		const imputed = modelInput + "_imputed"
		for _, n := range g.Node {
			for i, in := range n.Input {
				if in == modelInput {
					n.Input[i] = imputed
				}
			}
		}
		g.Node = append([]*onnx.NodeProto{
			{Name: "IsNaN_impute", OpType: "IsNaN", Input: []string{modelInput}, Output: []string{modelInput + "_missing"}},
			// "mean" is the initializer standardisation subtracts.
			{Name: "Where_impute", OpType: "Where", Input: []string{modelInput + "_missing", "mean", modelInput}, Output: []string{imputed}},
		}, g.Node...)
	}
	meta := map[string]string{MetaTrainer: spec.Trainer, MetaTask: string(spec.Task), MetaTarget: d.Target}
	features, _ := json.Marshal(d.Features)
	meta[MetaFeatures] = string(features)
	if spec.Task == Classification {
		classes, _ := json.Marshal(d.Classes)
		meta[MetaClasses] = string(classes)
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		mp.MetadataProps = append(mp.MetadataProps, &onnx.StringStringEntryProto{Key: k, Value: meta[k]})
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(&mp)
	if err != nil {
		return nil, fmt.Errorf("encode the model: %w", err)
	}
	return out, nil
}
