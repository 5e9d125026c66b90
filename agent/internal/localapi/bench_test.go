package localapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// The benchmarks compare an inference call over loopback HTTP with its
// floor: a bare net/http echo of the same JSON body plus a direct ONNX
// Runtime run of the same model. Each reports its median latency as
// p50-ns; BenchmarkInferVsFloor interleaves the three and reports the ratio
// infer / (echo + direct). The model is an MNIST-sized MLP (784-128-10 with
// softmax and argmax), one intra-op thread.

type benchEnv struct {
	inferURL, echoURL string
	client            *http.Client
	body              []byte
	model             *inference.Model
	input             []onnxrt.Tensor
	set               *inference.Set
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	spec := onnxbuild.MLPSpec{Name: "mnist", Layers: onnxbuild.RandomLayers(11, 784, 128, 10), Classifier: true}
	data, err := onnxbuild.MLP(spec)
	if err != nil {
		b.Fatal(err)
	}
	set := inference.NewSet()
	b.Cleanup(set.Close)
	set.Swap(load(b, data, "mnist", "1"))
	m := load(b, data, "mnist", "direct")
	b.Cleanup(func() { m.Close() })

	x := pixels(784)
	// As a Python client sends float32 pixels: json.dumps(arr.tolist()).
	body := []byte(`{"inputs":[{"name":"input","shape":[1,784],"datatype":"FP32","data":[`)
	for i, v := range x {
		if i > 0 {
			body = append(body, ", "...)
		}
		body = strconv.AppendFloat(body, float64(v), 'g', -1, 64)
	}
	body = append(body, "]}]}"...)

	api := httptest.NewServer(New(set, nopRecorder{}, Config{}, nil))
	b.Cleanup(api.Close)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(p)))
		w.Write(p)
	}))
	b.Cleanup(echo.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	b.Cleanup(client.CloseIdleConnections)
	return &benchEnv{
		inferURL: api.URL + "/v2/models/mnist/infer", echoURL: echo.URL + "/", client: client, body: body, model: m,
		input: []onnxrt.Tensor{{Name: "input", DataType: onnxrt.FP32, Shape: []int64{1, 784}, Data: x}},
		set:   set,
	}
}

type nopRecorder struct{}

func (nopRecorder) Observe(string, string, time.Duration, bool) {}

func (e *benchEnv) post(b *testing.B, url string) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(e.body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("POST %s: %d %v", url, resp.StatusCode, err)
	}
}

func (e *benchEnv) direct(b *testing.B) {
	if _, err := e.model.Run(e.input); err != nil {
		b.Fatal(err)
	}
}

// timed runs op b.N times and reports its median as p50-ns.
func timed(b *testing.B, op func()) {
	op() // warm up connections and the session
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		op()
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	b.ReportMetric(float64(median(lat).Nanoseconds()), "p50-ns")
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

func BenchmarkInfer(b *testing.B) {
	e := newBenchEnv(b)
	b.SetBytes(int64(len(e.body)))
	timed(b, func() { e.post(b, e.inferURL) })
}

func BenchmarkEcho(b *testing.B) {
	e := newBenchEnv(b)
	b.SetBytes(int64(len(e.body)))
	timed(b, func() { e.post(b, e.echoURL) })
}

func BenchmarkDirectORT(b *testing.B) {
	e := newBenchEnv(b)
	timed(b, func() { e.direct(b) })
}

// BenchmarkInferVsFloor runs echo, direct run and infer in turn, so that
// all three see the same machine state, and reports each median and the
// ratio infer / (echo + direct); the target is ≤ 1.25.
func BenchmarkInferVsFloor(b *testing.B) {
	e := newBenchEnv(b)
	e.vsFloor(b)
}

// BenchmarkInferVsFloorWithStats is BenchmarkInferVsFloor with the served
// model keeping data statistics of its 784 inputs and its label (a profile
// of DefaultBins bins a feature).
func BenchmarkInferVsFloorWithStats(b *testing.B) {
	e := newBenchEnv(b)
	m, release, _ := e.set.Acquire("mnist")
	st, err := inference.NewDataStats(profileOf(b, "input", 784, "label", 10), m)
	if err != nil {
		b.Fatal(err)
	}
	m.SetStats(st)
	release()
	e.vsFloor(b)
	if ins, _ := st.Snapshot(); ins[0].GetCount() == 0 {
		b.Fatal("the predictions were not observed")
	}
}

func (e *benchEnv) vsFloor(b *testing.B) {
	e.post(b, e.echoURL)
	e.post(b, e.inferURL)
	e.direct(b)
	var echo, direct, infer []time.Duration
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		e.post(b, e.echoURL)
		t1 := time.Now()
		e.direct(b)
		t2 := time.Now()
		e.post(b, e.inferURL)
		t3 := time.Now()
		echo, direct, infer = append(echo, t1.Sub(t)), append(direct, t2.Sub(t1)), append(infer, t3.Sub(t2))
	}
	b.StopTimer()
	pe, pd, pi := median(echo), median(direct), median(infer)
	b.ReportMetric(float64(pe.Nanoseconds()), "echo-p50-ns")
	b.ReportMetric(float64(pd.Nanoseconds()), "direct-p50-ns")
	b.ReportMetric(float64(pi.Nanoseconds()), "infer-p50-ns")
	b.ReportMetric(float64(pi)/float64(pe+pd), "ratio")
}

// BenchmarkDecode measures parsing the request alone.
func BenchmarkDecode(b *testing.B) {
	e := newBenchEnv(b)
	b.SetBytes(int64(len(e.body)))
	b.ReportAllocs()
	for range b.N {
		if _, err := parseRequest(e.body, e.model); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkObserveStats measures the data statistics of one 784-pixel
// prediction and its label alone.
func BenchmarkObserveStats(b *testing.B) {
	e := newBenchEnv(b)
	st, err := inference.NewDataStats(profileOf(b, "input", 784, "label", 10), e.model)
	if err != nil {
		b.Fatal(err)
	}
	outs, err := e.model.Run(e.input)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := st.Observe(e.input, outs); err != nil {
			b.Fatal(err)
		}
	}
}
