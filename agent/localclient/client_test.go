package localclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/localapi"
	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The client is tested against the agent's own handler, so that the two
// cannot drift apart.

var classifierSpec = onnxbuild.MLPSpec{Name: "clf", Input: "sensor values", Layers: onnxbuild.RandomLayers(1, 4, 8, 3), Classifier: true}

func classifier(t *testing.T) []byte {
	t.Helper()
	data, err := onnxbuild.MLP(classifierSpec)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// identity passes an FP32 vector of any length through.
func identity(t *testing.T) []byte {
	t.Helper()
	g := onnxbuild.New("identity")
	g.Node("Identity", []string{g.InputFloat("x", -1)}, "y")
	g.OutputFloat("y", -1)
	data, err := g.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type capturer struct {
	mu        sync.Mutex
	feedbacks []*shoalv1.Feedback
}

func (c *capturer) Capture(model, version string, row *shoalv1.CapturedRow) {}

func (c *capturer) Feedback(model, version string, fb *shoalv1.Feedback) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.feedbacks = append(c.feedbacks, fb)
}

// serve starts the agent's local API on loopback with the given models
// (name → ONNX bytes, each as version "1").
func serve(t *testing.T, capt localapi.Capturer, models map[string][]byte) *localclient.Client {
	t.Helper()
	set := inference.NewSet()
	t.Cleanup(set.Close)
	for name, data := range models {
		m, err := inference.Open(data, inference.Ref{Name: name, Version: "1"}, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		m.SetCaptureShare(1)
		set.Swap(m)
	}
	srv := httptest.NewServer(localapi.New(set, nil, localapi.Config{Version: "9.9", Capture: capt}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	c, err := localclient.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInferMatchesONNXRuntime(t *testing.T) {
	onnxrt.MustInitForTest(t)
	data := classifier(t)
	c := serve(t, nil, map[string][]byte{"clf": data})
	sess, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ctx := context.Background()

	x := []float32{0.1, -2.5, 3.25, 1e-7, 4, 5, 6, 7}
	out, err := c.Infer(ctx, localclient.InferRequest{Model: "clf", ID: "req-1", Inputs: []localclient.Tensor{localclient.NewTensor("sensor values", []int64{2, 4}, x)}})
	if err != nil {
		t.Fatal(err)
	}
	if out.ModelName != "clf" || out.ModelVersion != "1" || out.ID != "req-1" {
		t.Errorf("response = %s v%s id %q; want clf v1 id req-1", out.ModelName, out.ModelVersion, out.ID)
	}
	want, err := sess.Run([]onnxrt.Tensor{{Name: "sensor values", DataType: onnxrt.FP32, Shape: []int64{2, 4}, Data: x}})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		o, ok := out.Output(w.Name)
		if !ok {
			t.Fatalf("output %q missing from %+v", w.Name, out.Outputs)
		}
		if o.Datatype != string(w.DataType) || !slices.Equal(o.Shape, w.Shape) {
			t.Errorf("output %q: %s %v; ORT gives %s %v", w.Name, o.Datatype, o.Shape, w.DataType, w.Shape)
		}
		switch wd := w.Data.(type) {
		case []float32:
			got, err := o.Float32s()
			if err != nil || !slices.Equal(got, wd) {
				t.Errorf("output %q = %v (%v); ORT gives %v", w.Name, got, err, wd)
			}
		case []int64:
			got, err := o.Int64s()
			if err != nil || !slices.Equal(got, wd) {
				t.Errorf("output %q = %v (%v); ORT gives %v", w.Name, got, err, wd)
			}
		}
	}

	// Only the outputs asked for, in that order.
	out, err = c.Infer(ctx, localclient.InferRequest{Model: "clf", Version: "1", Outputs: []string{"label"},
		Inputs: []localclient.Tensor{localclient.NewTensor("sensor values", []int64{1, 4}, x[:4])}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Outputs) != 1 || out.Outputs[0].Name != "label" {
		t.Errorf("outputs = %+v; want label alone", out.Outputs)
	}
	if out.ID == "" {
		t.Error("no prediction id in a response to a request without one")
	}
}

// TestFloatsRoundTrip: every float32, NaN and the infinities included
// (JSON has no numbers for them), comes back as it was sent.
func TestFloatsRoundTrip(t *testing.T) {
	onnxrt.MustInitForTest(t)
	c := serve(t, nil, map[string][]byte{"id": identity(t)})
	x := []float32{0, float32(math.Copysign(0, -1)), 1, -1.5, 1e-7, 1.17549435e-38, 1e-45, math.MaxFloat32, 16777217, 0.1,
		float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	out, err := c.Infer(context.Background(), localclient.InferRequest{Model: "id", Inputs: []localclient.Tensor{localclient.NewTensor("x", nil, x)}})
	if err != nil {
		t.Fatal(err)
	}
	o, ok := out.Output("y")
	if !ok {
		t.Fatalf("no output y in %+v", out.Outputs)
	}
	got, err := o.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(x) {
		t.Fatalf("got %v; want %v", got, x)
	}
	for i := range x {
		if math.Float32bits(got[i]) != math.Float32bits(x[i]) && !(math.IsNaN(float64(got[i])) && math.IsNaN(float64(x[i]))) {
			t.Errorf("[%d] = %v; sent %v", i, got[i], x[i])
		}
	}
	g64, err := o.Float64s()
	if err != nil || len(g64) != len(x) || !math.IsInf(g64[len(g64)-1], -1) {
		t.Errorf("Float64s = %v, %v", g64, err)
	}
	if _, err := o.Strings(); err == nil {
		t.Error("Strings of an FP32 output: no error")
	}
}

func TestHealthAndMetadata(t *testing.T) {
	onnxrt.MustInitForTest(t)
	ctx := context.Background()
	empty := serve(t, nil, nil)
	if err := empty.Live(ctx); err != nil {
		t.Errorf("Live = %v", err)
	}
	if ready, err := empty.Ready(ctx); err != nil || ready {
		t.Errorf("Ready with no model = %v, %v; want false, nil", ready, err)
	}
	_, err := empty.Infer(ctx, localclient.InferRequest{Model: "clf"})
	if localclient.StatusOf(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "no model is loaded yet") {
		t.Errorf("Infer with no model = %v; want a 503 that says no model is loaded", err)
	}

	c := serve(t, nil, map[string][]byte{"clf": classifier(t)})
	if ready, err := c.Ready(ctx); err != nil || !ready {
		t.Errorf("Ready = %v, %v; want true", ready, err)
	}
	sm, err := c.ServerMetadata(ctx)
	if err != nil || sm.Name != localapi.ServerName || sm.Version != "9.9" {
		t.Errorf("ServerMetadata = %+v, %v", sm, err)
	}
	mm, err := c.ModelMetadata(ctx, "clf", "")
	if err != nil || mm.Name != "clf" || !slices.Equal(mm.Versions, []string{"1"}) || mm.Platform != localapi.Platform || len(mm.Inputs) != 1 || len(mm.Outputs) != 2 {
		t.Fatalf("ModelMetadata = %+v, %v", mm, err)
	}
	if in := mm.Inputs[0]; in.Name != "sensor values" || in.Datatype != "FP32" || !slices.Equal(in.Shape, []int64{-1, 4}) {
		t.Errorf("ModelMetadata input = %+v; want \"sensor values\" FP32 [-1 4]", in)
	}
	st, err := c.ModelReady(ctx, "clf", "")
	if err != nil || st != (localclient.ModelStatus{Name: "clf", Version: "1", Ready: true}) {
		t.Errorf("ModelReady = %+v, %v", st, err)
	}
	for _, v := range []string{"2"} {
		if _, err := c.ModelReady(ctx, "clf", v); localclient.StatusOf(err) != http.StatusNotFound {
			t.Errorf("ModelReady of version %s = %v; want a 404", v, err)
		}
		if _, err := c.ModelMetadata(ctx, "clf", v); localclient.StatusOf(err) != http.StatusNotFound {
			t.Errorf("ModelMetadata of version %s = %v; want a 404", v, err)
		}
	}
	if _, err := c.ModelReady(ctx, "other", ""); localclient.StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), `"clf"`) {
		t.Errorf("ModelReady of an unknown model = %v; want a 404 naming the loaded ones", err)
	}
}

// TestInferErrors: the agent's refusals are *Errors with its status and
// message.
func TestInferErrors(t *testing.T) {
	onnxrt.MustInitForTest(t)
	c := serve(t, nil, map[string][]byte{"clf": classifier(t)})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		req    localclient.InferRequest
		status int
		want   string
	}{
		{"wrong input", localclient.InferRequest{Model: "clf", Inputs: []localclient.Tensor{localclient.NewTensor("nope", []int64{1, 4}, []float32{1, 2, 3, 4})}}, 400, `"nope"`},
		{"wrong type", localclient.InferRequest{Model: "clf", Inputs: []localclient.Tensor{localclient.NewTensor("sensor values", []int64{1, 4}, []int64{1, 2, 3, 4})}}, 400, "FP32"},
		{"wrong shape", localclient.InferRequest{Model: "clf", Inputs: []localclient.Tensor{localclient.NewTensor("sensor values", []int64{1, 3}, []float32{1, 2, 3})}}, 400, "dimension 1"},
		{"no inputs", localclient.InferRequest{Model: "clf"}, 400, "sensor values"},
		{"unknown output", localclient.InferRequest{Model: "clf", Outputs: []string{"nope"}, Inputs: []localclient.Tensor{localclient.NewTensor("sensor values", []int64{1, 4}, []float32{1, 2, 3, 4})}}, 400, `"nope"`},
		{"unknown model", localclient.InferRequest{Model: "other"}, 404, `"other"`},
		{"other version", localclient.InferRequest{Model: "clf", Version: "7"}, 404, `"7"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Infer(ctx, tc.req)
			var e *localclient.Error
			if !errors.As(err, &e) || e.Status != tc.status || !strings.Contains(e.Message, tc.want) {
				t.Fatalf("Infer = %v; want a %d naming %s", err, tc.status, tc.want)
			}
			if !strings.Contains(err.Error(), "POST /v2/models/") || !strings.Contains(err.Error(), http.StatusText(tc.status)) {
				t.Errorf("error %q does not say which request and status", err)
			}
		})
	}
	if _, err := c.Infer(ctx, localclient.InferRequest{}); err == nil {
		t.Error("Infer of no model: no error")
	}
}

func TestFeedback(t *testing.T) {
	onnxrt.MustInitForTest(t)
	ctx := context.Background()
	capt := &capturer{}
	c := serve(t, capt, map[string][]byte{"clf": classifier(t)})
	in := []localclient.Tensor{localclient.NewTensor("sensor values", []int64{2, 4}, []float32{1, 2, 3, 4, 5, 6, 7, 8})}
	if _, err := c.Infer(ctx, localclient.InferRequest{Model: "clf", ID: "p1", Inputs: in}); err != nil {
		t.Fatal(err)
	}
	n, err := c.Feedback(ctx, localclient.Feedback{ID: "p1:0", Label: "worn"}, localclient.Feedback{ID: "p1:1", Label: "normal"})
	if err != nil || n != 2 {
		t.Fatalf("Feedback = %d, %v; want 2 accepted", n, err)
	}
	if n, err := c.Feedback(ctx, localclient.Feedback{ID: "elsewhere", Label: "worn", Model: "clf"}); err != nil || n != 1 {
		t.Errorf("Feedback naming the model = %d, %v; want 1 accepted", n, err)
	}
	capt.mu.Lock()
	got := len(capt.feedbacks)
	capt.mu.Unlock()
	if got != 3 {
		t.Errorf("the agent queued %d labels; want 3", got)
	}
	if _, err := c.Feedback(ctx, localclient.Feedback{ID: "unknown", Label: "worn"}); localclient.StatusOf(err) != http.StatusNotFound {
		t.Errorf("Feedback for an unknown id = %v; want a 404", err)
	}
	if _, err := c.Feedback(ctx); err == nil {
		t.Error("Feedback of nothing: no error")
	}
	none := serve(t, nil, map[string][]byte{"clf": classifier(t)})
	if _, err := none.Feedback(ctx, localclient.Feedback{ID: "p1", Label: "worn"}); localclient.StatusOf(err) != http.StatusServiceUnavailable {
		t.Errorf("Feedback to an agent without telemetry = %v; want a 503", err)
	}
}

func TestTensorJSON(t *testing.T) {
	for _, tc := range []struct {
		t    localclient.Tensor
		want string
	}{
		{localclient.NewTensor("a", []int64{5}, []float32{1.5, float32(math.NaN()), 1e-7, 1e6, 0.1}), `{"name":"a","datatype":"FP32","shape":[5],"data":[1.5,"NaN",1e-7,1000000,0.1]}`},
		{localclient.NewTensor("b", nil, []float64{0.1, math.Inf(1), math.Inf(-1)}), `{"name":"b","datatype":"FP64","shape":[3],"data":[0.1,"Infinity","-Infinity"]}`},
		{localclient.NewTensor("c", []int64{1, 2}, []uint8{0, 255}), `{"name":"c","datatype":"UINT8","shape":[1,2],"data":[0,255]}`},
		{localclient.NewTensor("d", nil, []string{"x\"y"}), `{"name":"d","datatype":"BYTES","shape":[1],"data":["x\"y"]}`},
		{localclient.NewTensor("e", nil, []bool{true}), `{"name":"e","datatype":"BOOL","shape":[1],"data":[true]}`},
		{localclient.Tensor{Name: "f", Data: []int64{-3}}, `{"name":"f","datatype":"INT64","shape":[1],"data":[-3]}`},
		{localclient.Tensor{Name: "g", Datatype: "FP32", Shape: []int64{1}, Data: []float64{2}}, `{"name":"g","datatype":"FP32","shape":[1],"data":[2]}`},
	} {
		got, err := json.Marshal(tc.t)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.t.Name, got, err, tc.want)
		}
	}
	if _, err := json.Marshal(localclient.Tensor{Name: "h", Data: []any{1}}); err == nil || !strings.Contains(err.Error(), `"h"`) {
		t.Errorf("data of no datatype: %v; want an error naming the input", err)
	}
	req, err := json.Marshal(localclient.InferRequest{Model: "m", Version: "2", ID: "x", Outputs: []string{"o"}})
	if err != nil || string(req) != `{"id":"x","inputs":[],"outputs":[{"name":"o"}]}` {
		t.Errorf("request = %s, %v", req, err)
	}
}

// TestErrorAnswers: an answer that is not the agent's JSON still says
// what came back; an agent that is not there says where it was looked for.
func TestErrorAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream gone", http.StatusBadGateway)
	}))
	c, err := localclient.New(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Live(context.Background())
	if localclient.StatusOf(err) != http.StatusBadGateway || !strings.Contains(err.Error(), "upstream gone") {
		t.Errorf("Live = %v; want the 502 and its body", err)
	}
	srv.Close()
	err = c.Live(context.Background())
	if err == nil || localclient.StatusOf(err) != 0 || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("Live of a closed server = %v; want an error naming %s", err, srv.URL)
	}
	for _, bad := range []string{"", "127.0.0.1:8081", "ftp://host", "http://"} {
		if _, err := localclient.New(bad); err == nil {
			t.Errorf("New(%q): no error", bad)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Ready(ctx); err == nil {
		t.Error("Ready with a cancelled context: no error")
	}
}
