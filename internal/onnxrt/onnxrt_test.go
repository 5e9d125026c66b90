package onnxrt

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
)

// ortTestData returns a model from the onnxruntime_go module's test data
// (models exported by PyTorch and onnx.helper).
func ortTestData(t *testing.T, name string) []byte {
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

func open(t *testing.T, name string) *Session {
	t.Helper()
	return openData(t, name, ortTestData(t, name))
}

func openData(t *testing.T, name string, data []byte) *Session {
	t.Helper()
	MustInitForTest(t)
	s, err := Open(data, Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lowercaser is a string model under the C.UTF-8 locale, which every
// glibc from 2.35 has built in (unlike en_US.UTF-8, the exporters'
// default, which a stock Debian lacks).
func lowercaser(t *testing.T) []byte {
	t.Helper()
	RequireLocaleForTest(t, "C.UTF-8")
	data, err := onnxbuild.Lowercaser("C.UTF-8")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDynamicAxes(t *testing.T) {
	s := open(t, "example_dynamic_axes.onnx")
	if got := s.Inputs(); len(got) != 1 || got[0].Name != "input_vectors" || got[0].DataType != FP32 || got[0].Shape[0] != -1 || got[0].Shape[1] != 10 {
		t.Fatalf("Inputs = %+v", got)
	}
	in := make([]float32, 20)
	for i := range in {
		in[i] = float32(i + 1)
	}
	out, err := s.Run([]Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{2, 10}, Data: in}})
	if err != nil {
		t.Fatal(err)
	}
	got := out[0].Data.([]float32)
	if out[0].Name != "output_scalars" || len(got) != 2 || got[0] != 55 || got[1] != 155 {
		t.Fatalf("outputs = %+v", out)
	}
}

func TestMultiType(t *testing.T) {
	s := open(t, "example_multitype.onnx")
	out, err := s.Run([]Tensor{
		{Name: "InputA", DataType: UINT8, Shape: []int64{1, 1, 1}, Data: []uint8{3}},
		{Name: "InputB", DataType: FP64, Shape: []int64{1, 2, 2}, Data: []float64{1, 2, 3, 4}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// As onnxruntime_go's own test: OutputA = int16(B*A - 512), OutputB = A*1234.
	a := out[0].Data.([]int16)
	b := out[1].Data.([]int64)
	if out[0].DataType != INT16 || a[0] != -509 || a[3] != -500 || out[1].DataType != INT64 || b[0] != 3702 {
		t.Fatalf("outputs = %+v", out)
	}
}

func TestStrings(t *testing.T) {
	s := openData(t, "lowercaser", lowercaser(t))
	out, err := s.Run([]Tensor{{Name: "text", DataType: BYTES, Shape: []int64{3}, Data: []string{"HeLLo", "ÀÉ", ""}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(out[0].Data.([]string), ","); out[0].DataType != BYTES || got != "hello,àé," {
		t.Fatalf("outputs = %+v; want hello,àé,", out)
	}
}

// TestStringsExported runs a string model as exporters write it: its
// StringNormalizer asks for en_US.UTF-8.
func TestStringsExported(t *testing.T) {
	RequireLocaleForTest(t, "en_US.UTF-8")
	s := open(t, "example_strings.onnx")
	spec := s.Inputs()[0]
	if spec.DataType != BYTES {
		t.Fatalf("input = %+v", spec)
	}
	out, err := s.Run([]Tensor{{Name: spec.Name, DataType: BYTES, Shape: []int64{2}, Data: []string{"Hello", "World"}}})
	if err != nil {
		t.Fatal(err)
	}
	joined := ""
	for _, o := range out {
		joined += strings.Join(o.Data.([]string), ",") + ";"
	}
	if !strings.Contains(joined, "hello,world") || !strings.Contains(joined, "HELLO,WORLD") {
		t.Fatalf("outputs = %q", joined)
	}
}

func TestNamesWithSpaces(t *testing.T) {
	s := open(t, "example_several_inputs_and_outputs.onnx")
	names := []string{}
	for _, in := range s.Inputs() {
		names = append(names, in.Name)
	}
	if strings.Join(names, "|") != "input 1|input 2|input 3" {
		t.Fatalf("inputs = %v", names)
	}
	// input 3 is BF16: Shoal must say so clearly rather than fail obscurely.
	ins, err := SampleInputs(s.Inputs()[:2], 1)
	if err != nil {
		t.Fatal(err)
	}
	ins = append(ins, Tensor{Name: "input 3", DataType: FP32, Shape: []int64{9}, Data: make([]float32, 9)})
	_, err = s.Run(ins)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Input != "input 3" || !strings.Contains(ie.Reason, "BF16") {
		t.Fatalf("err = %v; want an InputError naming input 3 and BF16", err)
	}
}

func TestFloat16IsAClearError(t *testing.T) {
	s := open(t, "example_float16.onnx")
	_, err := s.Run([]Tensor{{Name: "InputA", DataType: FP32, Shape: []int64{1, 2, 2, 2}, Data: make([]float32, 8)}})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "FP16") {
		t.Fatalf("err = %v", err)
	}
}

func TestInputErrors(t *testing.T) {
	s := open(t, "example_dynamic_axes.onnx")
	cases := []struct {
		name string
		in   []Tensor
		want string
	}{
		{"missing", nil, "missing"},
		{"wrong type", []Tensor{{Name: "input_vectors", DataType: INT64, Shape: []int64{1, 10}, Data: make([]int64, 10)}}, "datatype is INT64"},
		{"wrong rank", []Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{10}, Data: make([]float32, 10)}}, "dimensions"},
		{"wrong dim", []Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{1, 9}, Data: make([]float32, 9)}}, "dimension 1 is 9"},
		{"short data", []Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{2, 10}, Data: make([]float32, 10)}}, "needs 20 elements"},
		{"negative dim", []Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{-2, 10}, Data: make([]float32, 10)}}, "≥ 0"},
		{"extra input", []Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{1, 10}, Data: make([]float32, 10)}, {Name: "zzz", DataType: FP32, Shape: []int64{1}, Data: []float32{1}}}, "no such input"},
		{"duplicate", []Tensor{{Name: "input_vectors", DataType: FP32, Shape: []int64{1, 10}, Data: make([]float32, 10)}, {Name: "input_vectors", DataType: FP32, Shape: []int64{1, 10}, Data: make([]float32, 10)}}, "more than once"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.Run(c.in)
			var ie *InputError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v; want InputError containing %q", err, c.want)
			}
		})
	}
}

func TestNotAModel(t *testing.T) {
	MustInitForTest(t)
	for _, data := range [][]byte{nil, []byte("junk\n"), ortTestData(t, "example_dynamic_axes.onnx")[:100]} {
		_, err := Open(data, Options{})
		var me *ModelError
		if !errors.As(err, &me) {
			t.Errorf("Open(%d bytes) err = %v; want ModelError", len(data), err)
		}
	}
}

func TestSklearnZipMapOutputSkipped(t *testing.T) {
	s := open(t, "sklearn_randomforest.onnx")
	if len(s.SkippedOutputs()) == 0 {
		t.Skip("model has no non-tensor outputs")
	}
	ins, err := SampleInputs(s.Inputs(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(ins); err != nil {
		t.Fatal(err)
	}
}

// TestMissingLocale: a model whose StringNormalizer asks for a locale the
// machine lacks is refused with Shoal's error, which names the locale and
// the ways out, not with ONNX Runtime's internal text.
func TestMissingLocale(t *testing.T) {
	MustInitForTest(t)
	const missing = "xx_NOWHERE.UTF-8"
	if HasLocale(missing) {
		t.Fatalf("HasLocale(%q) = true", missing)
	}
	if !HasLocale("C") {
		t.Fatal(`HasLocale("C") = false; every C library has it`)
	}
	data, err := onnxbuild.Lowercaser(missing)
	if err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func() (*Session, error){
		"Open":    func() (*Session, error) { return Open(data, Options{IntraOpThreads: 1}) },
		"Inspect": func() (*Session, error) { _, _, err := Inspect(data); return nil, err },
	} {
		s, err := open()
		var le *LocaleError
		if !errors.As(err, &le) || le.Locale != missing {
			if s != nil {
				s.Close()
			}
			t.Fatalf("%s: err = %v; want a *LocaleError for %s", name, err, missing)
		}
		msg := err.Error()
		for _, want := range []string{`locale "` + missing + `"`, "locale-gen", "C.UTF-8", "locale -a"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: message %q does not say %q", name, msg, want)
			}
		}
		if strings.Contains(msg, "onnxruntime_src") {
			t.Errorf("%s: message %q carries ONNX Runtime's internal text", name, msg)
		}
		var me *ModelError
		if errors.As(err, &me) {
			t.Errorf("%s: a missing locale is reported as a broken model: %v", name, err)
		}
	}
}

func TestSelfTestRoundTrip(t *testing.T) {
	for _, name := range []string{"example_dynamic_axes.onnx", "example_multitype.onnx", "lowercaser"} {
		t.Run(name, func(t *testing.T) {
			var s *Session
			if name == "lowercaser" {
				s = openData(t, name, lowercaser(t))
			} else {
				s = open(t, name)
			}
			st, err := MakeSelfTest(s, 42)
			if err != nil {
				t.Fatal(err)
			}
			if err := RunSelfTest(s, st); err != nil {
				t.Fatalf("self-test of the same model fails: %v", err)
			}
			// Tamper with an expected value: the self-test must fail.
			p := st.ExpectedOutputs[0]
			if len(p.RawData) > 0 {
				p.RawData[len(p.RawData)-1] ^= 0x40
			} else {
				p.StringData[0] += "x"
			}
			if err := RunSelfTest(s, st); err == nil {
				t.Fatal("self-test passed against a wrong expected output")
			}
		})
	}
}

func TestProtoRoundTrip(t *testing.T) {
	tensors := []Tensor{
		{Name: "f", DataType: FP32, Shape: []int64{2}, Data: []float32{1.5, -2}},
		{Name: "d", DataType: FP64, Shape: []int64{1}, Data: []float64{3.25}},
		{Name: "i", DataType: INT64, Shape: []int64{2}, Data: []int64{-1, 1 << 40}},
		{Name: "b", DataType: BOOL, Shape: []int64{3}, Data: []bool{true, false, true}},
		{Name: "s", DataType: BYTES, Shape: []int64{1}, Data: []string{"x y"}},
		{Name: "u", DataType: UINT8, Shape: []int64{2}, Data: []uint8{0, 255}},
	}
	for _, tt := range tensors {
		p, err := ToProto(tt)
		if err != nil {
			t.Fatal(err)
		}
		back, err := FromProto(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := Compare([]Tensor{back}, []Tensor{tt}, 0); err != nil {
			t.Errorf("%s: %v", tt.Name, err)
		}
	}
	p, _ := ToProto(tensors[0])
	p.RawData = p.RawData[:5]
	if _, err := FromProto(p); err == nil {
		t.Error("truncated raw data accepted")
	}
}

func TestInitErrorListsPaths(t *testing.T) {
	// A fresh process is needed to see the failure path; run this test's
	// binary again with no library anywhere.
	if os.Getenv("ONNXRT_CHILD") == "1" {
		_, err := Init("/nonexistent/flag/libonnxruntime.so.1")
		if err == nil {
			os.Exit(3)
		}
		os.Stderr.WriteString(err.Error())
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitErrorListsPaths$")
	cmd.Env = append(os.Environ(), "ONNXRT_CHILD=1", "ONNXRUNTIME_LIB=/nonexistent/env/lib.so", "XDG_CACHE_HOME=/nonexistent/cache", "LD_LIBRARY_PATH=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"/nonexistent/flag/libonnxruntime.so.1", "/nonexistent/env/lib.so", "/nonexistent/cache", "make ort", "--onnxruntime-lib"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error does not mention %q:\n%s", want, out)
		}
	}
}
