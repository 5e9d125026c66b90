// Package localapi serves the Open Inference Protocol (KServe v2 REST) to
// apps on the device: health, server and model metadata, and inference on
// the agent's active models; and GET /metrics, the agent process's metrics
// in the Prometheus text format. It uses net/http alone.
//
// Inference requests are decoded in one pass over the body, with each
// input's "data" parsed straight into the typed slice the model takes, and
// responses are written with strconv into a pooled buffer: the JSON costs
// little next to the model.
package localapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/buildinfo"
	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/procstats"
)

// DefaultMaxBodyBytes is Config.MaxBodyBytes when 0.
const DefaultMaxBodyBytes = 64 << 20

// ServerName is the name in the server metadata.
const ServerName = "shoal-agent"

// Platform is the platform in model metadata.
const Platform = "onnxruntime_onnx"

// ModelSource gives the active models; *inference.Set satisfies it.
type ModelSource interface {
	// Acquire returns the active model called name and a func to call
	// when done with it.
	Acquire(name string) (m *inference.Model, release func(), ok bool)
	// Names lists the active models.
	Names() []string
}

// Recorder counts predictions; *telemetry.Aggregator satisfies it.
type Recorder interface {
	Observe(model, version string, latency time.Duration, failed bool)
}

var _ ModelSource = (*inference.Set)(nil)

// Config configures the handler.
type Config struct {
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Ready reports readiness; nil means ready while at least one model is
	// loaded.
	Ready func() bool
	// Version is the server version in its metadata; "" means the build's.
	Version string
	// Metrics, if set, returns metrics that GET /metrics adds to the
	// process's own and the handler's prediction counters. It is called
	// once per scrape.
	Metrics func() []procstats.Metric
	// Capture, if set, takes the sampled predictions of models with a
	// capture share and the labels POST /v1/feedback gives; without it
	// nothing is captured and /v1/feedback answers 503.
	Capture Capturer
}

type handler struct {
	models ModelSource
	rec    Recorder
	cfg    Config
	log    *slog.Logger
	logs   *lograte.Limiter // for "model failed"
	// statsLogs is for data statistics refused: one line a minute.
	statsLogs *lograte.Limiter
	mux       *http.ServeMux
	capt      Capturer
	recent    recentIDs // ids of captured predictions, for feedback

	// Predictions counted as the Recorder counts them: each prediction a
	// model ran (or failed to run), not the requests refused before.
	predictions, failures atomic.Uint64
	// statsRejected counts the predictions left out of their model's data
	// statistics because their tensors do not fit its reference profile.
	statsRejected atomic.Uint64
}

// New returns the Open Inference Protocol handler. rec may be nil; a nil
// log discards.
func New(models ModelSource, rec Recorder, cfg Config, log *slog.Logger) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Version == "" {
		cfg.Version = buildinfo.Version
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A model failing on every request is logged once a minute.
	h := &handler{models: models, rec: rec, cfg: cfg, log: log, logs: lograte.New(time.Minute, 1, nil), statsLogs: lograte.New(time.Minute, 1, nil), mux: http.NewServeMux(), capt: cfg.Capture}
	route := func(method, path string, f http.HandlerFunc) {
		h.mux.HandleFunc(method+" "+path, f)
		// Any other method on the path: 405 with a JSON body.
		h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use "+method)
		})
	}
	route("GET", "/v2/health/live", h.live)
	route("GET", "/v2/health/ready", h.ready)
	route("GET", "/v2", h.serverMetadata)
	route("GET", "/v2/models/{name}", h.modelMetadata)
	route("GET", "/v2/models/{name}/ready", h.modelReady)
	route("POST", "/v2/models/{name}/infer", h.infer)
	route("GET", "/v2/models/{name}/versions/{version}", h.modelMetadata)
	route("GET", "/v2/models/{name}/versions/{version}/ready", h.modelReady)
	route("POST", "/v2/models/{name}/versions/{version}/infer", h.infer)
	route("POST", "/v1/feedback", h.feedback)
	route("GET", "/metrics", procstats.Handler(h.metrics).ServeHTTP)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path+"; see /v2/models/{name}/infer")
	})
	return h.mux
}

func (h *handler) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"live":true}`+"\n"))
}

func (h *handler) isReady() bool {
	if h.cfg.Ready != nil {
		return h.cfg.Ready()
	}
	return len(h.models.Names()) > 0
}

func (h *handler) ready(w http.ResponseWriter, r *http.Request) {
	if h.isReady() {
		writeJSON(w, http.StatusOK, []byte(`{"ready":true}`+"\n"))
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, []byte(`{"ready":false}`+"\n"))
}

func (h *handler) serverMetadata(w http.ResponseWriter, r *http.Request) {
	h.writeValue(w, map[string]any{"name": ServerName, "version": h.cfg.Version, "extensions": []string{}})
}

type tensorMetadata struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type modelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []tensorMetadata `json:"inputs"`
	Outputs  []tensorMetadata `json:"outputs"`
}

func tensorsMetadata(specs []onnxrt.TensorSpec) []tensorMetadata {
	out := make([]tensorMetadata, len(specs))
	for i, s := range specs {
		out[i] = tensorMetadata{s.Name, string(s.DataType), s.Shape}
	}
	return out
}

func (h *handler) modelMetadata(w http.ResponseWriter, r *http.Request) {
	m, release, err := h.acquire(r)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	defer release()
	ref := m.Ref()
	h.writeValue(w, modelMetadata{
		Name: ref.Name, Versions: []string{ref.Version}, Platform: Platform,
		Inputs: tensorsMetadata(m.Inputs()), Outputs: tensorsMetadata(m.Outputs()),
	})
}

func (h *handler) modelReady(w http.ResponseWriter, r *http.Request) {
	m, release, err := h.acquire(r)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	defer release()
	h.writeValue(w, map[string]any{"name": m.Ref().Name, "version": m.Ref().Version, "ready": true})
}

func (h *handler) writeValue(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, append(b, '\n'))
}

func (h *handler) writeErr(w http.ResponseWriter, err error) {
	var re *requestError
	if errors.As(err, &re) {
		writeError(w, re.status, re.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

// acquire returns the model the request names (and the version, if it names
// one): a 404 if it is not active, a 503 if no model is.
func (h *handler) acquire(r *http.Request) (*inference.Model, func(), error) {
	name := r.PathValue("name")
	m, release, ok := h.models.Acquire(name)
	if !ok {
		names := h.models.Names()
		if len(names) == 0 {
			return nil, nil, statusError(http.StatusServiceUnavailable, "no model is loaded yet; try again once the agent has activated one")
		}
		return nil, nil, statusError(http.StatusNotFound, "model %q is not loaded; loaded models: %s", name, quoteList(names))
	}
	if v := r.PathValue("version"); v != "" && v != m.Ref().Version {
		active := m.Ref().Version
		release()
		return nil, nil, statusError(http.StatusNotFound, "model %q version %q is not loaded; the active version is %q", name, v, active)
	}
	return m, release, nil
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return strings.Join(q, ", ")
}

// Buffers for request bodies and responses. Large ones are not kept, so a
// single big request does not pin its memory.
const maxPooled = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// readBody reads the request body into buf, up to limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, statusError(http.StatusRequestEntityTooLarge, "the body is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	if r.ContentLength > int64(cap(buf)) {
		// Trust the header only so far: a client that announces 60 MB
		// must send them before it gets that much memory.
		buf = make([]byte, 0, min(r.ContentLength+1, maxPooled))
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, statusError(http.StatusRequestEntityTooLarge, "the body is over the %d-byte limit", limit)
			}
			return nil, statusError(http.StatusBadRequest, "read the body: %v", err)
		}
	}
}

func (h *handler) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Header.Get("Inference-Header-Content-Length") != "" {
		writeError(w, http.StatusBadRequest, "the binary tensor data extension is not supported; send JSON data")
		return
	}
	m, release, err := h.acquire(r)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	defer release()
	ref := m.Ref()

	bp := getBuf()
	defer putBuf(bp)
	body, err := readBody(w, r, *bp, h.cfg.MaxBodyBytes)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	if cap(body) <= maxPooled {
		*bp = body // keep the grown buffer
	}
	req, err := parseRequest(body, m)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	outs, err := m.Run(req.inputs)
	if err != nil {
		var ie *onnxrt.InputError
		if errors.As(err, &ie) {
			writeError(w, http.StatusBadRequest, ie.Error())
			return
		}
		h.observe(ref, start, true)
		h.logs.Log(h.log, slog.LevelWarn, "", "model failed", "model", ref.Name, "version", ref.Version, "err", err)
		writeError(w, http.StatusInternalServerError, "model "+ref.String()+" failed: "+err.Error())
		return
	}
	if st := m.Stats(); st != nil {
		h.observeStats(st, ref, req.inputs, outs)
	}
	// Every prediction has an id, for feedback: the request's, else a
	// random one.
	if !req.hasID {
		req.id, req.hasID = newPredictionID(), true
	}
	h.capture(m, req.id, req.inputs, outs)
	if req.outputs != nil {
		outs = selectOutputs(outs, req.outputs)
	}
	// The response reuses the body's buffer: the request is decoded.
	resp := appendResponse(body[:0], ref.Name, ref.Version, req, outs)
	if cap(resp) <= maxPooled {
		*bp = resp
	}
	h.observe(ref, start, false)
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) observe(ref inference.Ref, start time.Time, failed bool) {
	h.predictions.Add(1)
	if failed {
		h.failures.Add(1)
	}
	if h.rec != nil {
		h.rec.Observe(ref.Name, ref.Version, time.Since(start), failed)
	}
}

// observeStats adds a prediction to its model's data statistics. Tensors
// that do not fit the reference profile are the statistics' problem, not
// the caller's: they are counted and logged, and the prediction stands.
func (h *handler) observeStats(st *inference.DataStats, ref inference.Ref, inputs, outputs []onnxrt.Tensor) {
	if err := st.Observe(inputs, outputs); err != nil {
		h.statsRejected.Add(1)
		h.statsLogs.Log(h.log, slog.LevelWarn, "", "a prediction's tensors do not fit its model's reference profile; left out of its data statistics",
			"model", ref.Name, "version", ref.Version, "err", err)
	}
}

// metrics are the handler's counters and the Config's extra metrics.
func (h *handler) metrics() []procstats.Metric {
	m := []procstats.Metric{
		{Name: "shoal_agent_predictions_total", Help: "Predictions run by the active models since the agent started, failed ones included.", Kind: procstats.Counter, Value: float64(h.predictions.Load())},
		{Name: "shoal_agent_prediction_failures_total", Help: "Predictions whose model failed to run since the agent started.", Kind: procstats.Counter, Value: float64(h.failures.Load())},
		{Name: "shoal_agent_data_stats_rejected_total", Help: "Predictions left out of their model's data statistics because their tensors do not fit its reference profile.", Kind: procstats.Counter, Value: float64(h.statsRejected.Load())},
		{Name: "shoal_agent_models_loaded", Help: "Models loaded and served.", Kind: procstats.Gauge, Value: float64(len(h.models.Names()))},
	}
	if h.cfg.Metrics != nil {
		m = append(m, h.cfg.Metrics()...)
	}
	return m
}

// selectOutputs returns the named outputs in the order named.
func selectOutputs(outs []onnxrt.Tensor, names []string) []onnxrt.Tensor {
	sel := make([]onnxrt.Tensor, 0, len(names))
	for _, n := range names {
		for _, o := range outs {
			if o.Name == n {
				sel = append(sel, o)
				break
			}
		}
	}
	return sel
}
