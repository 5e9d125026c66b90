package localapi

import (
	"fmt"
	"math"
	"strconv"

	"github.com/shoalfleet/shoal/agent/internal/jsonfloat"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// A parser reads one element of a tensor's data at s.i. why is "" on
// success, else says what is wrong with the value ("is not a number").
type parser[T any] func(s *scanner) (v T, why string)

const (
	notNumber  = "is not a number"
	notInteger = "is not a whole number"
	notBool    = "is not true or false"
	notString  = "is not a string"
)

// The special float values JSON has no numbers for, as strings.
const (
	nanString    = jsonfloat.NaN
	infString    = jsonfloat.Inf
	negInfString = jsonfloat.NegInf
)

// floatSpecial reads "NaN", "Infinity" or "-Infinity" (also "Inf" and
// "-Inf").
func floatSpecial(s *scanner) (float64, bool) {
	raw, escaped, err := s.rawString()
	if err != nil || escaped {
		return 0, false
	}
	switch string(raw) {
	case nanString:
		return math.NaN(), true
	case infString, "Inf":
		return math.Inf(1), true
	case negInfString, "-Inf":
		return math.Inf(-1), true
	}
	return 0, false
}

func parseFloat[T float32 | float64](bits int, conv func(*number) (T, bool)) parser[T] {
	tooBig := fmt.Sprintf("is out of range for FP%d", bits)
	return func(s *scanner) (T, string) {
		if s.peek() == '"' {
			if f, ok := floatSpecial(s); ok {
				return T(f), ""
			}
			return 0, notNumber
		}
		var n number
		if !s.number(&n) {
			return 0, notNumber
		}
		f, ok := conv(&n)
		if !ok {
			return 0, tooBig
		}
		return f, ""
	}
}

func parseSigned[T int8 | int16 | int32 | int64](dt onnxrt.DataType, bits int) parser[T] {
	lo, hi := int64(-1)<<(bits-1), int64(1)<<(bits-1)-1
	tooBig := fmt.Sprintf("is out of range for %s (%d to %d)", dt, lo, hi)
	return func(s *scanner) (T, string) {
		var n number
		switch {
		case !s.number(&n):
			return 0, notNumber
		case n.integer && n.fits:
			if n.neg {
				if n.m > uint64(hi)+1 {
					return 0, tooBig
				}
				return T(-int64(n.m)), "" // -2^63 wraps to itself
			}
			if n.m > uint64(hi) {
				return 0, tooBig
			}
			return T(n.m), ""
		case n.integer:
			return 0, tooBig // 20 digits or more
		}
		f, err := strconv.ParseFloat(unsafeString(n.tok), 64)
		switch {
		case err != nil || f < float64(lo) || f >= -float64(lo):
			return 0, tooBig
		case f != math.Trunc(f):
			return 0, notInteger
		}
		return T(f), ""
	}
}

func parseUnsigned[T uint8 | uint16 | uint32 | uint64](dt onnxrt.DataType, bits int) parser[T] {
	hi := uint64(1)<<(bits-1)<<1 - 1
	tooBig := fmt.Sprintf("is out of range for %s (0 to %d)", dt, hi)
	return func(s *scanner) (T, string) {
		var n number
		switch {
		case !s.number(&n):
			return 0, notNumber
		case n.integer && n.neg:
			if n.m == 0 && n.fits {
				return 0, "" // -0
			}
			return 0, tooBig
		case n.integer && n.fits:
			if n.m > hi {
				return 0, tooBig
			}
			return T(n.m), ""
		case n.integer:
			v, err := strconv.ParseUint(unsafeString(n.tok), 10, bits)
			if err != nil {
				return 0, tooBig
			}
			return T(v), ""
		}
		f, err := strconv.ParseFloat(unsafeString(n.tok), 64)
		switch {
		case err != nil || f < 0 || f >= 2*float64(uint64(1)<<(bits-1)):
			return 0, tooBig
		case f != math.Trunc(f):
			return 0, notInteger
		}
		return T(f), ""
	}
}

func parseBool(s *scanner) (bool, string) {
	switch {
	case s.literal("true") == nil:
		return true, ""
	case s.literal("false") == nil:
		return false, ""
	}
	return false, notBool
}

func parseString(s *scanner) (string, string) {
	if s.peek() != '"' {
		return "", notString
	}
	v, err := s.str()
	if err != nil {
		return "", err.Error()
	}
	return v, ""
}

// Parsers made once per type.
var (
	fp32Parser   = parseFloat(32, parseFloat32)
	fp64Parser   = parseFloat(64, parseFloat64)
	int8Parser   = parseSigned[int8](onnxrt.INT8, 8)
	int16Parser  = parseSigned[int16](onnxrt.INT16, 16)
	int32Parser  = parseSigned[int32](onnxrt.INT32, 32)
	int64Parser  = parseSigned[int64](onnxrt.INT64, 64)
	uint8Parser  = parseUnsigned[uint8](onnxrt.UINT8, 8)
	uint16Parser = parseUnsigned[uint16](onnxrt.UINT16, 16)
	uint32Parser = parseUnsigned[uint32](onnxrt.UINT32, 32)
	uint64Parser = parseUnsigned[uint64](onnxrt.UINT64, 64)
)

// decodeData reads the JSON array at s.i as the data of input in: n values
// of its datatype, flat, or nested to match its shape (row-major).
func decodeData(s *scanner, in *inputReq, n int) (any, error) {
	switch in.datatype {
	case onnxrt.FP32:
		if out, ok := fastFP32(s, n); ok {
			return out, nil
		}
		return decodeTyped(s, in, n, fp32Parser)
	case onnxrt.FP64:
		return decodeTyped(s, in, n, fp64Parser)
	case onnxrt.INT8:
		return decodeTyped(s, in, n, int8Parser)
	case onnxrt.INT16:
		return decodeTyped(s, in, n, int16Parser)
	case onnxrt.INT32:
		return decodeTyped(s, in, n, int32Parser)
	case onnxrt.INT64:
		return decodeTyped(s, in, n, int64Parser)
	case onnxrt.UINT8:
		return decodeTyped(s, in, n, uint8Parser)
	case onnxrt.UINT16:
		return decodeTyped(s, in, n, uint16Parser)
	case onnxrt.UINT32:
		return decodeTyped(s, in, n, uint32Parser)
	case onnxrt.UINT64:
		return decodeTyped(s, in, n, uint64Parser)
	case onnxrt.BOOL:
		return decodeTyped(s, in, n, parseBool)
	case onnxrt.BYTES:
		return decodeTyped(s, in, n, parseString)
	}
	return nil, badRequest("input %q: datatype %s cannot be decoded", in.name, in.datatype)
}

// fastFP32 decodes a flat array of exactly n plain numbers, the common
// request, without the generic decoder's indirect calls. On anything else
// it leaves s where it was and returns false, and the generic decoder
// takes over (and words any error).
func fastFP32(s *scanner, n int) ([]float32, bool) {
	save := s.i
	if s.peek() != '[' || n > (len(s.b)-s.i+1)/2 {
		return nil, false
	}
	s.i++
	s.ws()
	out := make([]float32, n)
	count := 0
	var num number
	if s.peek() == ']' {
		s.i++
	} else {
		for {
			ok := s.number(&num)
			if !ok || count == n {
				s.i = save
				return nil, false
			}
			f, ok := fastFloat32(&num)
			if !ok {
				if f, ok = parseFloat32(&num); !ok {
					s.i = save
					return nil, false
				}
			}
			out[count] = f
			count++
			s.ws()
			if c := s.peek(); c == ',' {
				s.i++
				s.ws()
				continue
			} else if c == ']' {
				s.i++
				break
			}
			s.i = save
			return nil, false
		}
	}
	if count != n {
		s.i = save
		return nil, false
	}
	return out, true
}

// decoder fills out with the values of one tensor.
type decoder[T any] struct {
	s     *scanner
	in    *inputReq
	parse parser[T]
	out   []T // nil when only counting (more values than the body can hold)
	count int
}

func decodeTyped[T any](s *scanner, in *inputReq, n int, parse parser[T]) (any, error) {
	d := decoder[T]{s: s, in: in, parse: parse}
	// Each value takes at least two bytes ("0,"), so more than that cannot
	// be in the body: count them instead of allocating for them.
	if n <= (len(s.b)-s.i+1)/2 {
		d.out = make([]T, n)
	}
	if s.peek() != '[' {
		return nil, badRequest("input %q: data must be a JSON array; found %s", in.name, snippet(s.b[s.i:]))
	}
	save := s.i
	s.i++
	nested := s.consume('[')
	s.i = save
	var err error
	if nested {
		if len(in.shape) < 2 {
			return nil, badRequest("input %q: data nests arrays deeper than its shape %s", in.name, shapeString(in.shape))
		}
		err = d.nested(0)
	} else {
		err = d.flat()
	}
	if err != nil {
		return nil, err
	}
	if d.count != n {
		return nil, badRequest("input %q: shape %s needs %d values; got %d", in.name, shapeString(in.shape), n, d.count)
	}
	return d.out, nil
}

func (d *decoder[T]) value() error {
	s := d.s
	s.ws()
	at := s.i
	if s.peek() == '[' {
		return badRequest("input %q: data nests arrays deeper than its shape %s", d.in.name, shapeString(d.in.shape))
	}
	v, why := d.parse(s)
	if why != "" {
		if at >= len(s.b) {
			return s.errExpected("a value")
		}
		return badRequest("input %q: value %d (%s) %s; %s needs %s", d.in.name, d.count, snippet(s.b[at:]), why, d.in.datatype, needs(d.in.datatype))
	}
	if d.count < len(d.out) {
		d.out[d.count] = v
	}
	d.count++
	return nil
}

func needs(dt onnxrt.DataType) string {
	switch dt {
	case onnxrt.FP32, onnxrt.FP64:
		return `numbers (or "NaN", "Infinity", "-Infinity")`
	case onnxrt.BOOL:
		return "true or false"
	case onnxrt.BYTES:
		return "strings"
	}
	return "whole numbers"
}

// flat reads [v, v, ...].
func (d *decoder[T]) flat() error {
	s := d.s
	s.i++ // '['
	if s.consume(']') {
		return nil
	}
	for {
		if err := d.value(); err != nil {
			return err
		}
		if more, err := s.sepOrEnd(']'); err != nil || !more {
			return err
		}
	}
}

// nested reads an array at depth of the shape: shape[depth] elements, each
// an array one level deeper, or a value at the last level.
func (d *decoder[T]) nested(depth int) error {
	s := d.s
	if !s.consume('[') {
		return badRequest("input %q: data does not match shape %s: expected an array at depth %d, found %s", d.in.name, shapeString(d.in.shape), depth, snippet(s.b[s.i:]))
	}
	want := d.in.shape[depth]
	elems := int64(0)
	if !s.consume(']') {
		for {
			if elems == want {
				return badRequest("input %q: data does not match shape %s: an array at depth %d has more than %d elements", d.in.name, shapeString(d.in.shape), depth, want)
			}
			var err error
			if depth == len(d.in.shape)-1 {
				err = d.value()
			} else {
				err = d.nested(depth + 1)
			}
			if err != nil {
				return err
			}
			elems++
			more, err := s.sepOrEnd(']')
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	if elems != want {
		return badRequest("input %q: data does not match shape %s: an array at depth %d has %d elements; the shape says %d", d.in.name, shapeString(d.in.shape), depth, elems, want)
	}
	return nil
}

func shapeString(shape []int64) string {
	b := []byte{'['}
	for i, d := range shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	return string(append(b, ']'))
}
