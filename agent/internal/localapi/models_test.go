package localapi

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// Test models: an MNIST-sized MLP, one Identity model per datatype (names
// with spaces), a Reshape that fails at run time for the wrong size, and
// models from onnxruntime_go's test data.

var onnxTypes = map[onnxrt.DataType]onnx.TensorProto_DataType{
	onnxrt.FP32: onnx.TensorProto_FLOAT, onnxrt.FP64: onnx.TensorProto_DOUBLE,
	onnxrt.INT8: onnx.TensorProto_INT8, onnxrt.INT16: onnx.TensorProto_INT16,
	onnxrt.INT32: onnx.TensorProto_INT32, onnxrt.INT64: onnx.TensorProto_INT64,
	onnxrt.UINT8: onnx.TensorProto_UINT8, onnxrt.UINT16: onnx.TensorProto_UINT16,
	onnxrt.UINT32: onnx.TensorProto_UINT32, onnxrt.UINT64: onnx.TensorProto_UINT64,
	onnxrt.BOOL: onnx.TensorProto_BOOL, onnxrt.BYTES: onnx.TensorProto_STRING,
}

func valueInfo(name string, dt onnxrt.DataType, shape []int64) *onnx.ValueInfoProto {
	dims := make([]*onnx.TensorShapeProto_Dimension, len(shape))
	for i, d := range shape {
		if d < 0 {
			dims[i] = &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "n" + string(rune('0'+i))}}
		} else {
			dims[i] = &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimValue{DimValue: d}}
		}
	}
	return &onnx.ValueInfoProto{Name: name, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: &onnx.TypeProto_Tensor{
		ElemType: int32(onnxTypes[dt]), Shape: &onnx.TensorShapeProto{Dim: dims},
	}}}}
}

// identityModel passes input in (of dt and shape) to output out unchanged.
func identityModel(t testing.TB, dt onnxrt.DataType, shape []int64, in, out string) []byte {
	t.Helper()
	m := &onnx.ModelProto{
		IrVersion:   8,
		OpsetImport: []*onnx.OperatorSetIdProto{{Version: onnxbuild.Opset}},
		Graph: &onnx.GraphProto{
			Name:   "identity",
			Node:   []*onnx.NodeProto{{OpType: "Identity", Input: []string{in}, Output: []string{out}}},
			Input:  []*onnx.ValueInfoProto{valueInfo(in, dt, shape)},
			Output: []*onnx.ValueInfoProto{valueInfo(out, dt, shape)},
		},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reshapeModel reshapes x [-1] to [2,2]: it fails at run time unless x has
// 4 values.
func reshapeModel(t testing.TB) []byte {
	g := onnxbuild.New("reshape")
	x := g.InputFloat("x", -1)
	g.Node("Reshape", []string{x, g.WeightInt64("to", []int64{2, 2}, 2)}, "y")
	g.OutputFloat("y", 2, 2)
	b, err := g.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var mnistSpec = onnxbuild.MLPSpec{Name: "mnist", Layers: onnxbuild.RandomLayers(7, 784, 32, 10), Classifier: true}

func mnistModel(t testing.TB) []byte {
	b, err := onnxbuild.MLP(mnistSpec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ortTestData(t testing.TB, name string) []byte {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locate onnxruntime_go module: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "test_data", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func load(t testing.TB, data []byte, name, version string) *inference.Model {
	t.Helper()
	onnxrt.MustInitForTest(t)
	m, err := inference.Open(data, inference.Ref{Name: name, Version: version}, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return m
}

// echoName is the model echoing dt; its input is "in <dt>", its output
// "out <dt>".
func echoName(dt onnxrt.DataType) string { return "echo " + string(dt) }

var echoTypes = []onnxrt.DataType{onnxrt.FP32, onnxrt.FP64, onnxrt.INT8, onnxrt.INT16, onnxrt.INT32, onnxrt.INT64,
	onnxrt.UINT8, onnxrt.UINT16, onnxrt.UINT32, onnxrt.UINT64, onnxrt.BOOL, onnxrt.BYTES}

// testSet loads every test model. The tests share one set for the whole
// run (loading takes a while); nothing closes it. The string model takes
// the C.UTF-8 locale, and is left out on a machine without it (TestInferStrings
// skips there), so that no other test depends on the machine's locales.
func testSet(t testing.TB) (*inference.Set, error) {
	t.Helper()
	onnxrt.MustInitForTest(t)
	s := inference.NewSet()
	var errs []error
	add := func(data []byte, name string) {
		m, err := inference.Open(data, inference.Ref{Name: name, Version: "1"}, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", name, err))
			return
		}
		s.Swap(m)
	}
	add(mnistModel(t), "mnist")
	for _, dt := range echoTypes {
		add(identityModel(t, dt, []int64{-1}, "in "+string(dt), "out "+string(dt)), echoName(dt))
	}
	add(identityModel(t, onnxrt.FP32, []int64{2, -1, 3}, "grid", "grid out"), "grid")
	add(identityModel(t, onnxrt.FP32, []int64{}, "x", "y"), "scalar")
	add(reshapeModel(t), "reshape")
	add(ortTestData(t, "example_multitype.onnx"), "multi")
	add(ortTestData(t, "example_float16.onnx"), "fp16")
	if onnxrt.HasLocale(stringsLocale) {
		data, err := onnxbuild.Lowercaser(stringsLocale)
		if err != nil {
			return nil, err
		}
		add(data, "strings")
	}
	add(identityModel(t, onnxrt.FP32, []int64{-1}, "x y", "y z"), "odd/name é")
	return s, errors.Join(errs...)
}

// stringsLocale is the locale of the "strings" test model: glibc has it
// built in from 2.35.
const stringsLocale = "C.UTF-8"
