package localapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/telemetry"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// The aggregator is the recorder the agent wires in.
var _ Recorder = (*telemetry.Aggregator)(nil)

type observation struct {
	model, version string
	latency        time.Duration
	failed         bool
}

type fakeRecorder struct {
	mu  sync.Mutex
	obs []observation
}

func (r *fakeRecorder) Observe(model, version string, latency time.Duration, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, observation{model, version, latency, failed})
}

func (r *fakeRecorder) take() []observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.obs
	r.obs = nil
	return o
}

var (
	setOnce   sync.Once
	sharedSet *inference.Set
	sharedErr error
)

// sharedModels returns the test models, loaded once for all tests. A model
// that fails to load fails every test that uses the set, with the reason.
func sharedModels(t testing.TB) *inference.Set {
	t.Helper()
	setOnce.Do(func() {
		sharedErr = errors.New("the shared test models did not load: see the first test that tried")
		sharedSet, sharedErr = testSet(t)
	})
	if sharedErr != nil {
		t.Fatalf("shared test models: %v", sharedErr)
	}
	return sharedSet
}

// server serves the shared test models over loopback HTTP.
func server(t *testing.T, cfg Config) (*httptest.Server, *fakeRecorder) {
	t.Helper()
	rec := &fakeRecorder{}
	srv := httptest.NewServer(New(sharedModels(t), rec, cfg, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv, rec
}

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func do(t *testing.T, srv *httptest.Server, method, path, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q; body %s", method, path, ct, raw)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&r.body); err != nil {
		t.Fatalf("%s %s: response is not a JSON object: %v\n%s", method, path, err, raw)
	}
	return r
}

func (r response) errMsg() string { s, _ := r.body["error"].(string); return s }

func TestHealthAndMetadata(t *testing.T) {
	srv, _ := server(t, Config{Version: "9.9"})
	for _, c := range []struct {
		method, path string
		status       int
		want         string // JSON the response must equal, or a substring of its error
	}{
		{"GET", "/v2/health/live", 200, `{"live":true}`},
		{"GET", "/v2/health/ready", 200, `{"ready":true}`},
		{"GET", "/v2", 200, `{"name":"shoal-agent","version":"9.9","extensions":[]}`},
		{"GET", "/v2/models/mnist", 200, `{"name":"mnist","versions":["1"],"platform":"onnxruntime_onnx",
			"inputs":[{"name":"input","datatype":"FP32","shape":[-1,784]}],
			"outputs":[{"name":"probabilities","datatype":"FP32","shape":[-1,10]},{"name":"label","datatype":"INT64","shape":[-1]}]}`},
		{"GET", "/v2/models/mnist/versions/1", 200, `{"name":"mnist","versions":["1"],"platform":"onnxruntime_onnx",
			"inputs":[{"name":"input","datatype":"FP32","shape":[-1,784]}],
			"outputs":[{"name":"probabilities","datatype":"FP32","shape":[-1,10]},{"name":"label","datatype":"INT64","shape":[-1]}]}`},
		{"GET", "/v2/models/mnist/ready", 200, `{"name":"mnist","version":"1","ready":true}`},
		{"GET", "/v2/models/mnist/versions/1/ready", 200, `{"name":"mnist","version":"1","ready":true}`},
		{"GET", "/v2/models/echo%20BYTES", 200, `{"name":"echo BYTES","versions":["1"],"platform":"onnxruntime_onnx",
			"inputs":[{"name":"in BYTES","datatype":"BYTES","shape":[-1]}],"outputs":[{"name":"out BYTES","datatype":"BYTES","shape":[-1]}]}`},
		{"GET", "/v2/models/odd%2Fname%20%C3%A9", 200, `{"name":"odd/name é","versions":["1"],"platform":"onnxruntime_onnx",
			"inputs":[{"name":"x y","datatype":"FP32","shape":[-1]}],"outputs":[{"name":"y z","datatype":"FP32","shape":[-1]}]}`},
		{"GET", "/v2/models/mnist/versions/2", 404, `model "mnist" version "2" is not loaded; the active version is "1"`},
		{"GET", "/v2/models/mnist/versions/2/ready", 404, `version "2" is not loaded`},
		{"POST", "/v2/models/mnist/versions/2/infer", 404, `version "2" is not loaded`},
		{"GET", "/v2/models/nope", 404, `model "nope" is not loaded; loaded models: "echo BOOL"`},
		{"GET", "/v2/models/nope/ready", 404, `model "nope" is not loaded`},
		{"POST", "/v2/models/nope/infer", 404, `model "nope" is not loaded`},
		{"GET", "/v2/models/mnist/infer", 405, "GET is not allowed on /v2/models/mnist/infer; use POST"},
		{"POST", "/v2/health/live", 405, "use GET"},
		{"GET", "/v3/whatever", 404, "no such endpoint"},
	} {
		t.Run(c.method+c.path, func(t *testing.T) {
			r := do(t, srv, c.method, c.path, "")
			if r.status != c.status {
				t.Fatalf("status %d; want %d; body %s", r.status, c.status, r.raw)
			}
			if c.status == 200 {
				var got, want any
				json.Unmarshal(r.raw, &got)
				if err := json.Unmarshal([]byte(c.want), &want); err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("body %s\nwant %s", r.raw, c.want)
				}
			} else if !strings.Contains(r.errMsg(), c.want) {
				t.Fatalf("error %q; want it to contain %q", r.errMsg(), c.want)
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	empty := inference.NewSet()
	srv := httptest.NewServer(New(empty, nil, Config{}, nil))
	defer srv.Close()
	if r := do(t, srv, "GET", "/v2/health/ready", ""); r.status != 503 {
		t.Errorf("ready with no model: %d", r.status)
	}
	if r := do(t, srv, "GET", "/v2/health/live", ""); r.status != 200 {
		t.Errorf("live: %d", r.status)
	}
	r := do(t, srv, "POST", "/v2/models/mnist/infer", `{"inputs":[]}`)
	if r.status != 503 || !strings.Contains(r.errMsg(), "no model is loaded") {
		t.Errorf("infer with no model: %d %s", r.status, r.raw)
	}
	ready := false
	srv2 := httptest.NewServer(New(empty, nil, Config{Ready: func() bool { return ready }}, nil))
	defer srv2.Close()
	if r := do(t, srv2, "GET", "/v2/health/ready", ""); r.status != 503 {
		t.Errorf("Ready false: %d", r.status)
	}
	ready = true
	if r := do(t, srv2, "GET", "/v2/health/ready", ""); r.status != 200 {
		t.Errorf("Ready true: %d", r.status)
	}
}

func pixels(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(math.Abs(math.Sin(float64(i) * 0.37)))
	}
	return x
}

func floatsJSON(x []float32) string {
	b := []byte{}
	for i, v := range x {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(v), 'g', -1, 64)
	}
	return string(b)
}

func nestedJSON(x []float32, rows int) string {
	cols := len(x) / rows
	parts := make([]string, rows)
	for r := range parts {
		parts[r] = "[" + floatsJSON(x[r*cols:(r+1)*cols]) + "]"
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func outputs(t *testing.T, r response) map[string]map[string]any {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	out := map[string]map[string]any{}
	list, _ := r.body["outputs"].([]any)
	for _, o := range list {
		m := o.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

func numbers(t *testing.T, v any) []float64 {
	t.Helper()
	var out []float64
	for _, x := range v.([]any) {
		f, err := x.(json.Number).Float64()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

func TestInferMLP(t *testing.T) {
	srv, rec := server(t, Config{})
	x := pixels(2 * 784)
	want := [][]float32{onnxbuild.Forward(mnistSpec, x[:784]), onnxbuild.Forward(mnistSpec, x[784:])}
	for _, data := range []string{"[" + floatsJSON(x) + "]", nestedJSON(x, 2)} {
		body := `{"id": "req-7", "parameters": {"a": [1, {"b": null}]}, "inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": ` + data + `}]}`
		r := do(t, srv, "POST", "/v2/models/mnist/infer", body)
		outs := outputs(t, r)
		if r.body["model_name"] != "mnist" || r.body["model_version"] != "1" || r.body["id"] != "req-7" {
			t.Fatalf("header fields: %s", r.raw[:min(len(r.raw), 120)])
		}
		p := outs["probabilities"]
		if p["datatype"] != "FP32" || fmt.Sprint(p["shape"]) != "[2 10]" {
			t.Fatalf("probabilities = %v %v", p["datatype"], p["shape"])
		}
		probs := numbers(t, p["data"])
		labels := numbers(t, outs["label"]["data"])
		for row := range 2 {
			best := 0
			for i, w := range want[row] {
				if math.Abs(probs[row*10+i]-float64(w)) > 1e-4 {
					t.Fatalf("row %d probability %d = %g; want %g", row, i, probs[row*10+i], w)
				}
				if w > want[row][best] {
					best = i
				}
			}
			if int(labels[row]) != best {
				t.Fatalf("row %d label %v; want %d", row, labels[row], best)
			}
		}
	}
	// Only the output asked for, and the same version route.
	body := `{"outputs":[{"name":"label","parameters":{"binary_data":false}}],"inputs":[{"data":[` + floatsJSON(x[:784]) + `],"datatype":"FP32","shape":[1,784],"name":"input"}]}`
	r := do(t, srv, "POST", "/v2/models/mnist/versions/1/infer", body)
	outs := outputs(t, r)
	// A request with no id gets one, for feedback.
	if id, _ := r.body["id"].(string); len(outs) != 1 || outs["label"] == nil || len(id) != 16 {
		t.Fatalf("outputs = %s", r.raw)
	}
	obs := rec.take()
	if len(obs) != 3 {
		t.Fatalf("%d observations; want 3", len(obs))
	}
	for _, o := range obs {
		if o.model != "mnist" || o.version != "1" || o.failed || o.latency <= 0 {
			t.Errorf("observation %+v", o)
		}
	}
}

// TestInferDatatypes sends values of every datatype through an Identity
// model and checks they come back exactly.
func TestInferDatatypes(t *testing.T) {
	srv, rec := server(t, Config{})
	for _, c := range []struct {
		dt        string
		data, out string // out "" means the same as data
	}{
		{"FP32", `[0.1, -0, 3.4028235e38, 1e-45, 1E+2, "NaN", "Infinity", "-Infinity", 16777217, 0.30000001192092896]`,
			`[0.1,-0,3.4028235e+38,1e-45,100,"NaN","Infinity","-Infinity",16777216,0.3]`},
		{"FP64", `[0.1, -2.5e-300, 1.7976931348623157e308, 5e-324, "NaN", 9007199254740993, 1e21, 123456789012, 0.000001, 1e-7]`,
			`[0.1,-2.5e-300,1.7976931348623157e+308,5e-324,"NaN",9007199254740992,1e+21,123456789012,0.000001,1e-7]`},
		{"INT8", `[-128, 127, 0, -0, 5.0, 1e2]`, `[-128,127,0,0,5,100]`},
		{"INT16", `[-32768, 32767]`, `[-32768,32767]`},
		{"INT32", `[-2147483648, 2147483647, 2.5e3]`, `[-2147483648,2147483647,2500]`},
		{"INT64", `[-9223372036854775808, 9223372036854775807]`, `[-9223372036854775808,9223372036854775807]`},
		{"UINT8", `[0, 255, -0]`, `[0,255,0]`},
		{"UINT16", `[65535]`, `[65535]`},
		{"UINT32", `[4294967295]`, `[4294967295]`},
		{"UINT64", `[18446744073709551615, 0]`, `[18446744073709551615,0]`},
		{"BOOL", `[true, false]`, `[true,false]`},
		{"BYTES", `["plain", "a \"quoted\" \\ word", "é\u00e9 大", "\ud83d\ude00", "\ud800 lone", "tab\tnew\nline\u0001"]`,
			`["plain","a \"quoted\" \\ word","éé 大","😀","` + "\ufffd" + ` lone","tab\tnew\nline\u0001"]`},
		{"BYTES", `[]`, `[]`},
	} {
		t.Run(c.dt, func(t *testing.T) {
			var n []any
			json.Unmarshal([]byte(strings.ReplaceAll(c.data, `"NaN"`, `0`)), &n)
			body := fmt.Sprintf(`{"id":"r","inputs":[{"name":"in %s","datatype":"%s","shape":[%d],"data":%s}]}`, c.dt, c.dt, len(n), c.data)
			r := do(t, srv, "POST", "/v2/models/echo%20"+c.dt+"/infer", body)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			want := fmt.Sprintf(`{"model_name":"echo %s","model_version":"1","id":"r","outputs":[{"name":"out %s","datatype":"%s","shape":[%d],"data":%s}]}`,
				c.dt, c.dt, c.dt, len(n), c.out)
			if got := strings.TrimSpace(string(r.raw)); got != want {
				t.Fatalf("response\n%s\nwant\n%s", got, want)
			}
		})
	}
	rec.take()
}

func TestInferStrings(t *testing.T) {
	onnxrt.RequireLocaleForTest(t, stringsLocale)
	srv, _ := server(t, Config{})
	r := do(t, srv, "POST", "/v2/models/strings/infer", `{"inputs":[{"name":"text","datatype":"BYTES","shape":[2],"data":["Hello","WÖRLD"]}]}`)
	if got := fmt.Sprint(outputs(t, r)["lower"]["data"]); got != "[hello wörld]" {
		t.Errorf("strings = %s", r.raw)
	}
}

func TestInferOtherModels(t *testing.T) {
	srv, _ := server(t, Config{})
	// example_multitype: OutputA = int16(B*A - 512), OutputB = A*1234.
	r := do(t, srv, "POST", "/v2/models/multi/infer", `{"inputs":[
		{"name":"InputB","datatype":"FP64","shape":[1,2,2],"data":[[[1,2],[3,4]]]},
		{"name":"InputA","datatype":"UINT8","shape":[1,1,1],"data":[3]}]}`)
	outs := outputs(t, r)
	if a := numbers(t, outs["OutputA"]["data"]); fmt.Sprint(a) != "[-509 -506 -503 -500]" || outs["OutputA"]["datatype"] != "INT16" {
		t.Errorf("OutputA = %v", outs["OutputA"])
	}
	if b := numbers(t, outs["OutputB"]["data"]); fmt.Sprint(b) != "[3702]" {
		t.Errorf("OutputB = %v", outs["OutputB"])
	}
	// Nested data for a rank-3 input with a dynamic middle dimension.
	r = do(t, srv, "POST", "/v2/models/grid/infer", `{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,2,3],"data":[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]}]}`)
	if g := numbers(t, outputs(t, r)["grid out"]["data"]); fmt.Sprint(g) != "[1 2 3 4 5 6 7 8 9 10 11 12]" {
		t.Errorf("grid = %v", g)
	}
	// Escaped model name, names with spaces.
	r = do(t, srv, "POST", "/v2/models/odd%2Fname%20%C3%A9/versions/1/infer", `{"inputs":[{"name":"x y","datatype":"FP32","shape":[2],"data":[1,2]}],"outputs":[{"name":"y z"}]}`)
	if y := outputs(t, r)["y z"]; r.body["model_name"] != "odd/name é" || fmt.Sprint(numbers(t, y["data"])) != "[1 2]" {
		t.Errorf("odd name = %s", r.raw)
	}
	// onnxruntime_go cannot make a tensor of rank 0: a clear 400, not a 500.
	r = do(t, srv, "POST", "/v2/models/scalar/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[],"data":[2.5]}]}`)
	if r.status != 400 || !strings.Contains(r.errMsg(), `input "x"`) {
		t.Errorf("scalar: %d %s", r.status, r.raw)
	}
}

func TestModelFailureIsRecorded(t *testing.T) {
	srv, rec := server(t, Config{})
	r := do(t, srv, "POST", "/v2/models/reshape/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,2,3]}]}`)
	if r.status != 500 || !strings.Contains(r.errMsg(), "model reshape@1 failed") {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	if r := do(t, srv, "POST", "/v2/models/reshape/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[4],"data":[1,2,3,4]}]}`); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	obs := rec.take()
	if len(obs) != 2 || !obs[0].failed || obs[1].failed || obs[0].model != "reshape" {
		t.Fatalf("observations = %+v", obs)
	}
}

func in784(data string) string {
	return `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,784],"data":` + data + `}]}`
}

func TestInferBadRequests(t *testing.T) {
	srv, rec := server(t, Config{})
	ok784 := "[" + floatsJSON(pixels(784)) + "]"
	echo := func(dt, data string, n int) string {
		return fmt.Sprintf(`{"inputs":[{"name":"in %s","datatype":"%s","shape":[%d],"data":%s}]}`, dt, dt, n, data)
	}
	deep := `{"parameters":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"inputs":[]}`
	for _, c := range []struct {
		name, model, body string
		status            int
		want              string
	}{
		{"empty body", "mnist", ``, 400, "must be a JSON object"},
		{"not an object", "mnist", `[1]`, 400, "must be a JSON object"},
		{"truncated", "mnist", `{"inputs":[{"name":"input"`, 400, "malformed JSON: the body ends"},
		{"bad separator", "mnist", `{"inputs" [] }`, 400, `malformed JSON at byte 10: expected ':'`},
		{"trailing data", "mnist", `{"inputs":[]} {}`, 400, "more data after"},
		{"no inputs", "mnist", `{"id":"x"}`, 400, `no "inputs"; the model needs "input" FP32 [-1,784]`},
		{"inputs not array", "mnist", `{"inputs":{}}`, 400, `"inputs" must be an array`},
		{"input not object", "mnist", `{"inputs":[5]}`, 400, `inputs[0] must be an object`},
		{"id not string", "mnist", `{"id":5,"inputs":[]}`, 400, `"id" must be a string`},
		{"empty inputs", "mnist", `{"inputs":[]}`, 400, `input "input": missing`},
		{"unknown input", "mnist", `{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1],"data":[1]}]}`, 400, `input "pixels": the model has no such input; its inputs are "input" FP32 [-1,784]`},
		{"no name", "mnist", `{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}`, 400, `inputs[0] has no "name"`},
		{"name not string", "mnist", `{"inputs":[{"name":1}]}`, 400, `"name" must be a string`},
		{"no datatype", "mnist", `{"inputs":[{"name":"input","shape":[1,784],"data":[]}]}`, 400, `has no "datatype"; the model needs FP32`},
		{"no shape", "mnist", `{"inputs":[{"name":"input","datatype":"FP32","data":[]}]}`, 400, `has no "shape"; the model needs [-1,784]`},
		{"no data", "mnist", `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,784]}]}`, 400, `input "input" has no "data"`},
		{"wrong datatype", "mnist", `{"inputs":[{"name":"input","datatype":"INT64","shape":[1,784],"data":[]}]}`, 400, `input "input": datatype is INT64; the model needs FP32`},
		{"unknown datatype", "mnist", `{"inputs":[{"name":"input","datatype":"FLOAT","shape":[1,784],"data":[]}]}`, 400, `datatype "FLOAT" is not an Open Inference Protocol type`},
		{"FP16 request", "mnist", `{"inputs":[{"name":"input","datatype":"FP16","shape":[1,784],"data":[]}]}`, 400, `datatype FP16 is not supported; the model needs FP32`},
		{"FP16 model", "fp16", `{"inputs":[{"name":"InputA","datatype":"FP16","shape":[1,2,2,2],"data":[1,2,3,4,5,6,7,8]}]}`, 400, `the model takes FP16, which Shoal cannot pass yet`},
		{"too few values", "mnist", in784("[1,2,3]"), 400, `input "input": shape [1,784] needs 784 values; got 3`},
		{"too many values", "mnist", in784(ok784[:len(ok784)-1] + ",1]"), 400, `needs 784 values; got 785`},
		{"shape and data", "echo FP32", echo("FP32", "[1,2,3,4,5]", 6), 400, `input "in FP32": shape [6] needs 6 values; got 5`},
		{"far too few", "echo FP32", echo("FP32", "[1]", 1<<30), 400, `shape [1073741824] needs 1073741824 values; got 1`},
		{"wrong rank", "mnist", `{"inputs":[{"name":"input","datatype":"FP32","shape":[784],"data":[]}]}`, 400, `shape [784] has 1 dimensions; the model needs 2 ([-1,784])`},
		{"wrong dim", "mnist", `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,783],"data":[]}]}`, 400, `dimension 1 is 783; the model needs 784`},
		{"negative dim", "mnist", `{"inputs":[{"name":"input","datatype":"FP32","shape":[-1,784],"data":[]}]}`, 400, `shape dimension -1 is not a size`},
		{"fractional dim", "mnist", `{"inputs":[{"name":"input","datatype":"FP32","shape":[1.5,784],"data":[]}]}`, 400, `"shape" must hold whole numbers; found 1.5`},
		{"huge shape", "grid", `{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,4000000000,3],"data":[]}]}`, 400, `too many elements`},
		{"nested short row", "grid", `{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,1,3],"data":[[[1,2,3]],[[4,5]]]}]}`, 400, `data does not match shape [2,1,3]: an array at depth 2 has 2 elements; the shape says 3`},
		{"nested long row", "grid", `{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,1,3],"data":[[[1,2,3]],[[4,5,6],[7,8,9]]]}]}`, 400, `an array at depth 1 has more than 1 elements`},
		{"nested too shallow", "grid", `{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,1,3],"data":[[1,2,3],[4,5,6]]}]}`, 400, `expected an array at depth 2`},
		{"nested too deep", "echo FP32", echo("FP32", "[[1]]", 1), 400, `data nests arrays deeper than its shape [1]`},
		{"nested mixed", "grid", `{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,1,3],"data":[1,2,3,[4,5,6]]}]}`, 400, `data nests arrays deeper`},
		{"data not array", "echo FP32", echo("FP32", "5", 1), 400, `data must be a JSON array; found 5`},
		{"not a number", "echo FP32", echo("FP32", `[1, "abc"]`, 2), 400, `input "in FP32": value 1 ("abc") is not a number; FP32 needs numbers`},
		{"bool for float", "echo FP32", echo("FP32", `[true]`, 1), 400, `value 0 (true) is not a number`},
		{"null for float", "echo FP64", echo("FP64", `[null]`, 1), 400, `value 0 (null) is not a number`},
		{"bad number", "echo FP32", echo("FP32", `[01]`, 1), 400, `malformed JSON`},
		{"FP32 overflow", "echo FP32", echo("FP32", `[1e39]`, 1), 400, `value 0 (1e39) is out of range for FP32`},
		{"UINT8 overflow", "echo UINT8", echo("UINT8", `[1, 256]`, 2), 400, `value 1 (256) is out of range for UINT8 (0 to 255)`},
		{"UINT64 negative", "echo UINT64", echo("UINT64", `[-1]`, 1), 400, `out of range for UINT64 (0 to 18446744073709551615)`},
		{"INT8 underflow", "echo INT8", echo("INT8", `[-129]`, 1), 400, `out of range for INT8 (-128 to 127)`},
		{"INT64 overflow", "echo INT64", echo("INT64", `[9223372036854775808]`, 1), 400, `out of range for INT64`},
		{"INT32 float overflow", "echo INT32", echo("INT32", `[3e9]`, 1), 400, `out of range for INT32`},
		{"fractional int", "echo INT32", echo("INT32", `[1.5]`, 1), 400, `value 0 (1.5) is not a whole number; INT32 needs whole numbers`},
		{"number for bool", "echo BOOL", echo("BOOL", `[1]`, 1), 400, `is not true or false; BOOL needs true or false`},
		{"number for bytes", "echo BYTES", echo("BYTES", `[5]`, 1), 400, `value 0 (5) is not a string; BYTES needs strings`},
		{"bad escape", "echo BYTES", echo("BYTES", `["\x"]`, 1), 400, `bad escape`},
		{"control character", "echo BYTES", echo("BYTES", "[\"a\x01\"]", 1), 400, `control character`},
		{"unclosed string", "echo BYTES", `{"inputs":[{"name":"in BYTES","datatype":"BYTES","shape":[1],"data":["abc`, 400, `not closed`},
		{"deep nesting", "mnist", deep, 400, `nest deeper than 64`},
		{"duplicate input", "echo FP32", `{"inputs":[{"name":"in FP32","datatype":"FP32","shape":[1],"data":[1]},{"name":"in FP32","datatype":"FP32","shape":[1],"data":[1]}]}`, 400, `given more than once`},
		{"missing input", "multi", `{"inputs":[{"name":"InputA","datatype":"UINT8","shape":[1,1,1],"data":[3]}]}`, 400, `input "InputB": missing; the model needs FP64 [1 2 2]`},
		{"unknown output", "mnist", `{"outputs":[{"name":"logits"}],"inputs":[]}`, 400, `output "logits": the model has no such output; its outputs are "probabilities" FP32 [-1,10], "label" INT64 [-1]`},
		{"duplicate output", "mnist", `{"outputs":[{"name":"label"},{"name":"label"}],"inputs":[]}`, 400, `output "label" is requested more than once`},
		{"output without name", "mnist", `{"outputs":[{}],"inputs":[]}`, 400, `outputs[0] has no "name"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, srv, "POST", "/v2/models/"+strings.ReplaceAll(c.model, " ", "%20")+"/infer", c.body)
			if r.status != c.status || !strings.Contains(r.errMsg(), c.want) {
				t.Fatalf("status %d, error %q\nwant %d, error containing %q", r.status, r.errMsg(), c.status, c.want)
			}
		})
	}
	if obs := rec.take(); len(obs) != 0 {
		t.Errorf("bad requests were recorded as predictions: %+v", obs)
	}
}

func TestBodyLimits(t *testing.T) {
	srv, _ := server(t, Config{MaxBodyBytes: 1000})
	big := in784("[" + floatsJSON(pixels(784)) + "]")
	if r := do(t, srv, "POST", "/v2/models/mnist/infer", big); r.status != 413 || !strings.Contains(r.errMsg(), "limit is 1000") {
		t.Errorf("with Content-Length: %d %s", r.status, r.raw)
	}
	// Chunked, so the length is not known up front.
	req, _ := http.NewRequest("POST", srv.URL+"/v2/models/mnist/infer", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(raw), "over the 1000-byte limit") {
		t.Errorf("chunked: %d %s", resp.StatusCode, raw)
	}
	req, _ = http.NewRequest("POST", srv.URL+"/v2/models/mnist/infer", strings.NewReader("{}"))
	req.Header.Set("Inference-Header-Content-Length", "10")
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("binary extension: %d", resp.StatusCode)
	}
}

// TestInferWhileSwapping serves predictions while the model is swapped:
// none may fail.
func TestInferWhileSwapping(t *testing.T) {
	set := inference.NewSet()
	defer set.Close()
	data := mnistModel(t)
	set.Swap(load(t, data, "mnist", "0"))
	srv := httptest.NewServer(New(set, nil, Config{}, nil))
	defer srv.Close()
	body := in784("[" + floatsJSON(pixels(784)) + "]")
	stop := make(chan struct{})
	errs := make(chan error, 4)
	done := make(chan int, 4)
	for range 4 {
		go func() {
			n := 0
			defer func() { done <- n }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := srv.Client().Post(srv.URL+"/v2/models/mnist/infer", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d: %s", resp.StatusCode, raw)
					return
				}
				n++
			}
		}()
	}
	for v := 1; v <= 5; v++ {
		set.Swap(load(t, data, "mnist", strconv.Itoa(v)))
	}
	close(stop)
	total := 0
	for range 4 {
		total += <-done
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d predictions across 5 swaps", total)
}
