package onnxrt

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"

	ort "github.com/yalue/onnxruntime_go"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// DataType is a tensor element type, named as in the Open Inference
// Protocol (KServe v2): FP32, INT64, BYTES, ...
type DataType string

// The data types Shoal handles. FP16 and BF16 are recognised so that errors
// can name them, but values of those types are not converted.
const (
	FP32   DataType = "FP32"
	FP64   DataType = "FP64"
	INT8   DataType = "INT8"
	INT16  DataType = "INT16"
	INT32  DataType = "INT32"
	INT64  DataType = "INT64"
	UINT8  DataType = "UINT8"
	UINT16 DataType = "UINT16"
	UINT32 DataType = "UINT32"
	UINT64 DataType = "UINT64"
	BOOL   DataType = "BOOL"
	BYTES  DataType = "BYTES"
	FP16   DataType = "FP16"
	BF16   DataType = "BF16"
)

// Supported reports whether values of t can be passed to and from a model.
func (t DataType) Supported() bool {
	switch t {
	case FP32, FP64, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, BOOL, BYTES:
		return true
	}
	return false
}

// ElemSize is the size in bytes of one element in raw (little-endian) form,
// or 0 for BYTES and unsupported types.
func (t DataType) ElemSize() int {
	switch t {
	case INT8, UINT8, BOOL:
		return 1
	case INT16, UINT16, FP16, BF16:
		return 2
	case FP32, INT32, UINT32:
		return 4
	case FP64, INT64, UINT64:
		return 8
	}
	return 0
}

// TensorSpec describes a model input or output; -1 marks a dynamic dimension.
type TensorSpec struct {
	Name     string   `json:"name"`
	DataType DataType `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// Tensor is a value. Data holds a flat slice whose Go type matches DataType:
// []float32 (FP32), []float64 (FP64), []int8, []int16, []int32, []int64,
// []uint8, []uint16, []uint32, []uint64, []bool (BOOL) or []string (BYTES).
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	Data     any
}

// Len returns the number of elements in t.Data.
func (t Tensor) Len() int {
	switch d := t.Data.(type) {
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []int8:
		return len(d)
	case []int16:
		return len(d)
	case []int32:
		return len(d)
	case []int64:
		return len(d)
	case []uint8:
		return len(d)
	case []uint16:
		return len(d)
	case []uint32:
		return len(d)
	case []uint64:
		return len(d)
	case []bool:
		return len(d)
	case []string:
		return len(d)
	}
	return -1
}

// ShapeSize returns the element count a shape implies, or an error for
// negative dimensions or overflow.
func ShapeSize(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is %d; dimensions must be ≥ 0", i, d)
		}
		if d != 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that t's data type is supported, its Data has the Go type
// of its DataType, and its element count matches its shape.
func (t Tensor) Validate() error {
	if !t.DataType.Supported() {
		return fmt.Errorf("datatype %s is not supported", t.DataType)
	}
	if want := goTypeOf(t.DataType); fmt.Sprintf("%T", t.Data) != want {
		return fmt.Errorf("data is %T; datatype %s needs %s", t.Data, t.DataType, want)
	}
	n, err := ShapeSize(t.Shape)
	if err != nil {
		return err
	}
	if int64(t.Len()) != n {
		return fmt.Errorf("shape %v needs %d elements; got %d", t.Shape, n, t.Len())
	}
	return nil
}

func goTypeOf(t DataType) string {
	switch t {
	case FP32:
		return "[]float32"
	case FP64:
		return "[]float64"
	case INT8:
		return "[]int8"
	case INT16:
		return "[]int16"
	case INT32:
		return "[]int32"
	case INT64:
		return "[]int64"
	case UINT8:
		return "[]uint8"
	case UINT16:
		return "[]uint16"
	case UINT32:
		return "[]uint32"
	case UINT64:
		return "[]uint64"
	case BOOL:
		return "[]bool"
	case BYTES:
		return "[]string"
	}
	return "(unsupported)"
}

func fromORTType(t ort.TensorElementDataType) DataType {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return FP32
	case ort.TensorElementDataTypeDouble:
		return FP64
	case ort.TensorElementDataTypeInt8:
		return INT8
	case ort.TensorElementDataTypeInt16:
		return INT16
	case ort.TensorElementDataTypeInt32:
		return INT32
	case ort.TensorElementDataTypeInt64:
		return INT64
	case ort.TensorElementDataTypeUint8:
		return UINT8
	case ort.TensorElementDataTypeUint16:
		return UINT16
	case ort.TensorElementDataTypeUint32:
		return UINT32
	case ort.TensorElementDataTypeUint64:
		return UINT64
	case ort.TensorElementDataTypeBool:
		return BOOL
	case ort.TensorElementDataTypeString:
		return BYTES
	case ort.TensorElementDataTypeFloat16:
		return FP16
	case ort.TensorElementDataTypeBFloat16:
		return BF16
	}
	return DataType(fmt.Sprintf("UNSUPPORTED(%s)", t))
}

// toORT makes an ORT value from t. The value must be destroyed by the caller.
func toORT(t Tensor) (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	switch d := t.Data.(type) {
	case []float32:
		return ort.NewTensor(shape, d)
	case []float64:
		return ort.NewTensor(shape, d)
	case []int8:
		return ort.NewTensor(shape, d)
	case []int16:
		return ort.NewTensor(shape, d)
	case []int32:
		return ort.NewTensor(shape, d)
	case []int64:
		return ort.NewTensor(shape, d)
	case []uint8:
		return ort.NewTensor(shape, d)
	case []uint16:
		return ort.NewTensor(shape, d)
	case []uint32:
		return ort.NewTensor(shape, d)
	case []uint64:
		return ort.NewTensor(shape, d)
	case []bool:
		return ort.NewTensor(shape, d)
	case []string:
		// ONNX strings are UTF-8, and ONNX Runtime 1.24's StringNormalizer
		// never returns on a truncated UTF-8 sequence (found by FuzzInfer).
		for i, s := range d {
			if !utf8.ValidString(s) {
				return nil, fmt.Errorf("string %d is not valid UTF-8", i)
			}
		}
		st, err := ort.NewStringTensor(shape)
		if err != nil {
			return nil, err
		}
		if err := st.SetContents(d); err != nil {
			st.Destroy()
			return nil, err
		}
		return st, nil
	}
	return nil, fmt.Errorf("cannot pass %T to ONNX Runtime", t.Data)
}

// fromORT copies an ORT value into a Tensor.
func fromORT(name string, v ort.Value) (Tensor, error) {
	shape := []int64(v.GetShape().Clone())
	out := Tensor{Name: name, Shape: shape}
	switch tv := v.(type) {
	case *ort.Tensor[float32]:
		out.DataType, out.Data = FP32, tv.GetData()
	case *ort.Tensor[float64]:
		out.DataType, out.Data = FP64, tv.GetData()
	case *ort.Tensor[int8]:
		out.DataType, out.Data = INT8, tv.GetData()
	case *ort.Tensor[int16]:
		out.DataType, out.Data = INT16, tv.GetData()
	case *ort.Tensor[int32]:
		out.DataType, out.Data = INT32, tv.GetData()
	case *ort.Tensor[int64]:
		out.DataType, out.Data = INT64, tv.GetData()
	case *ort.Tensor[uint8]:
		out.DataType, out.Data = UINT8, tv.GetData()
	case *ort.Tensor[uint16]:
		out.DataType, out.Data = UINT16, tv.GetData()
	case *ort.Tensor[uint32]:
		out.DataType, out.Data = UINT32, tv.GetData()
	case *ort.Tensor[uint64]:
		out.DataType, out.Data = UINT64, tv.GetData()
	case *ort.Tensor[bool]:
		out.DataType, out.Data = BOOL, tv.GetData()
	case *ort.StringTensor:
		s, err := tv.GetContents()
		if err != nil {
			return Tensor{}, fmt.Errorf("output %q: read strings: %w", name, err)
		}
		out.DataType, out.Data = BYTES, s
	default:
		return Tensor{}, fmt.Errorf("output %q has element type %s, which Shoal cannot return", name, fromORTType(ort.TensorElementDataType(v.DataType())))
	}
	return out, nil
}

// SpecToProto converts a spec to its wire form.
func SpecToProto(s TensorSpec) *shoalv1.TensorSpec {
	return &shoalv1.TensorSpec{Name: s.Name, Datatype: string(s.DataType), Shape: append([]int64(nil), s.Shape...)}
}

// SpecFromProto converts a wire spec.
func SpecFromProto(p *shoalv1.TensorSpec) TensorSpec {
	return TensorSpec{Name: p.GetName(), DataType: DataType(p.GetDatatype()), Shape: append([]int64(nil), p.GetShape()...)}
}

// ToProto converts a tensor to its wire form (little-endian raw data).
func ToProto(t Tensor) (*shoalv1.Tensor, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	p := &shoalv1.Tensor{Name: t.Name, Datatype: string(t.DataType), Shape: append([]int64(nil), t.Shape...)}
	if s, ok := t.Data.([]string); ok {
		p.StringData = append([]string(nil), s...)
		return p, nil
	}
	p.RawData = encodeRaw(t.Data)
	return p, nil
}

// FromProto converts a wire tensor, checking its size against its shape.
func FromProto(p *shoalv1.Tensor) (Tensor, error) {
	t := Tensor{Name: p.GetName(), DataType: DataType(p.GetDatatype()), Shape: append([]int64(nil), p.GetShape()...)}
	if !t.DataType.Supported() {
		return Tensor{}, fmt.Errorf("tensor %q: datatype %q is not supported", t.Name, t.DataType)
	}
	n, err := ShapeSize(t.Shape)
	if err != nil {
		return Tensor{}, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.DataType == BYTES {
		if int64(len(p.GetStringData())) != n {
			return Tensor{}, fmt.Errorf("tensor %q: shape %v needs %d strings; got %d", t.Name, t.Shape, n, len(p.GetStringData()))
		}
		t.Data = append([]string(nil), p.GetStringData()...)
		return t, nil
	}
	raw := p.GetRawData()
	if int64(len(raw)) != n*int64(t.DataType.ElemSize()) {
		return Tensor{}, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes; got %d", t.Name, t.Shape, t.DataType, n*int64(t.DataType.ElemSize()), len(raw))
	}
	t.Data = decodeRaw(t.DataType, raw, int(n))
	return t, nil
}

func encodeRaw(data any) []byte {
	le := binary.LittleEndian
	switch d := data.(type) {
	case []float32:
		b := make([]byte, 4*len(d))
		for i, v := range d {
			le.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	case []float64:
		b := make([]byte, 8*len(d))
		for i, v := range d {
			le.PutUint64(b[8*i:], math.Float64bits(v))
		}
		return b
	case []int8:
		b := make([]byte, len(d))
		for i, v := range d {
			b[i] = byte(v)
		}
		return b
	case []int16:
		b := make([]byte, 2*len(d))
		for i, v := range d {
			le.PutUint16(b[2*i:], uint16(v))
		}
		return b
	case []int32:
		b := make([]byte, 4*len(d))
		for i, v := range d {
			le.PutUint32(b[4*i:], uint32(v))
		}
		return b
	case []int64:
		b := make([]byte, 8*len(d))
		for i, v := range d {
			le.PutUint64(b[8*i:], uint64(v))
		}
		return b
	case []uint8:
		return append([]byte(nil), d...)
	case []uint16:
		b := make([]byte, 2*len(d))
		for i, v := range d {
			le.PutUint16(b[2*i:], v)
		}
		return b
	case []uint32:
		b := make([]byte, 4*len(d))
		for i, v := range d {
			le.PutUint32(b[4*i:], v)
		}
		return b
	case []uint64:
		b := make([]byte, 8*len(d))
		for i, v := range d {
			le.PutUint64(b[8*i:], v)
		}
		return b
	case []bool:
		b := make([]byte, len(d))
		for i, v := range d {
			if v {
				b[i] = 1
			}
		}
		return b
	}
	return nil
}

func decodeRaw(t DataType, b []byte, n int) any {
	le := binary.LittleEndian
	switch t {
	case FP32:
		d := make([]float32, n)
		for i := range d {
			d[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return d
	case FP64:
		d := make([]float64, n)
		for i := range d {
			d[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return d
	case INT8:
		d := make([]int8, n)
		for i := range d {
			d[i] = int8(b[i])
		}
		return d
	case INT16:
		d := make([]int16, n)
		for i := range d {
			d[i] = int16(le.Uint16(b[2*i:]))
		}
		return d
	case INT32:
		d := make([]int32, n)
		for i := range d {
			d[i] = int32(le.Uint32(b[4*i:]))
		}
		return d
	case INT64:
		d := make([]int64, n)
		for i := range d {
			d[i] = int64(le.Uint64(b[8*i:]))
		}
		return d
	case UINT8:
		return append([]uint8(nil), b[:n]...)
	case UINT16:
		d := make([]uint16, n)
		for i := range d {
			d[i] = le.Uint16(b[2*i:])
		}
		return d
	case UINT32:
		d := make([]uint32, n)
		for i := range d {
			d[i] = le.Uint32(b[4*i:])
		}
		return d
	case UINT64:
		d := make([]uint64, n)
		for i := range d {
			d[i] = le.Uint64(b[8*i:])
		}
		return d
	case BOOL:
		d := make([]bool, n)
		for i := range d {
			d[i] = b[i] != 0
		}
		return d
	}
	return nil
}
