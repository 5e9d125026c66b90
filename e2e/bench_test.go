package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/agent/localclient"
	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/onnxbuild"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// BenchmarkInferOverhead measures, side by side in one run, the p50 of an
// Open Inference Protocol infer call to a real agent over loopback against
// its floor: a bare net/http loopback echo of the same JSON body plus a
// direct ONNX Runtime run of the same model on the same input. It reports
// p50s in µs and ratio = agent / (echo + ort); target ≤ 1.25.
func BenchmarkInferOverhead(b *testing.B) {
	onnxrt.MustInitForTest(b)
	cp := controltest.Start(b, controltest.WithLogger(testLogger(nil)))
	models := []struct {
		name  string
		input string
		width int
		spec  onnxbuild.MLPSpec
	}{
		{"tiny", "x", 4, onnxbuild.MLPSpec{Name: "tiny", Input: "x", Layers: onnxbuild.RandomLayers(1, 4, 8, 3), Classifier: true}},
		{"mnist", "pixels", 784, onnxbuild.MLPSpec{Name: "mnist", Input: "pixels", Layers: onnxbuild.RandomLayers(2, 784, 128, 64, 10), Classifier: true}},
	}
	sessions := map[string]*onnxrt.Session{}
	for _, m := range models {
		data, err := onnxbuild.MLP(m.spec)
		if err != nil {
			b.Fatal(err)
		}
		cp.PushModel(b, m.name, "1", data)
		s, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		sessions[m.name] = s
	}
	tok := cp.Token(b)
	fa := benchAgent(b, cp, tok)
	for _, m := range models {
		cp.Deploy(b, m.name, "1")
	}
	for _, m := range models {
		waitServing(b, fa, m.name)
	}

	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(data)
	}))
	defer echo.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	for _, m := range models {
		b.Run(m.name, func(b *testing.B) {
			x := make([]float32, m.width)
			for i := range x {
				x[i] = float32(i%255) / 255
			}
			req := localclient.InferRequest{Model: m.name, Inputs: []localclient.Tensor{localclient.NewTensor(m.input, []int64{1, int64(m.width)}, x)}}
			in := []onnxrt.Tensor{{Name: m.input, DataType: onnxrt.FP32, Shape: []int64{1, int64(m.width)}, Data: x}}
			// The agent answers through the client as it should...
			if out, err := fa.Infer(context.Background(), req); err != nil || len(out.Outputs) != 2 {
				b.Fatalf("infer %s: %+v, %v; want its two outputs", m.name, out, err)
			}
			// ...and the timed loop posts the client's body as it is, to the
			// agent and to the echo alike: the encoding and decoding are the
			// app's cost, not the agent's, and would blur the comparison.
			body, err := json.Marshal(req)
			if err != nil {
				b.Fatal(err)
			}
			url := fa.BaseURL() + "/v2/models/" + m.name + "/infer"
			post := func(u string) time.Duration {
				start := time.Now()
				resp, err := client.Post(u, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %s", u, resp.Status)
				}
				return time.Since(start)
			}
			run := func() time.Duration {
				start := time.Now()
				if _, err := sessions[m.name].Run(in); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			for i := 0; i < 200; i++ { // warm up connections and ORT
				post(url)
				post(echo.URL)
				run()
			}
			var agentD, echoD, ortD []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				agentD = append(agentD, post(url))
				echoD = append(echoD, post(echo.URL))
				ortD = append(ortD, run())
			}
			b.StopTimer()
			pa, pe, po := p50(agentD), p50(echoD), p50(ortD)
			b.ReportMetric(us(pa), "agent-p50-µs")
			b.ReportMetric(us(pe), "echo-p50-µs")
			b.ReportMetric(us(po), "ort-p50-µs")
			b.ReportMetric(float64(pa)/float64(pe+po), "ratio")
			b.ReportMetric(float64(len(body)), "body-bytes")
		})
	}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func p50(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// benchAgent starts an in-process agent and returns a client of its API.
func benchAgent(b *testing.B, cp *controltest.Server, tok string) *localclient.Client {
	b.Helper()
	dir := b.TempDir()
	a, err := newBenchAgent(dir, cp.URL(), tok)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done; a.Close() })
	c, err := localclient.New("http://" + a.APIAddr())
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func waitServing(b *testing.B, c *localclient.Client, model string) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.ModelReady(context.Background(), model, "")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("model %s not ready on the agent: %v", model, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
