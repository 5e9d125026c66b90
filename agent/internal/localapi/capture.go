package localapi

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Capturer queues captured predictions and feedback for telemetry;
// *telemetry.Aggregator satisfies it.
type Capturer interface {
	Capture(model, version string, row *shoalv1.CapturedRow)
	Feedback(model, version string, fb *shoalv1.Feedback)
}

// Bounds of POST /v1/feedback.
const (
	maxFeedbackBody   = 1 << 20
	maxFeedbackItems  = 1000
	maxPredictionID   = 128
	maxFeedbackLabel  = 256
	recentCapturedIDs = 1 << 16
)

// newPredictionID returns a random 16-hex-digit id. math/rand/v2's
// top-level source is seeded per process and costs no lock.
func newPredictionID() string {
	var b [8]byte
	v := rand.Uint64()
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return hex.EncodeToString(b[:])
}

// recentIDs remembers which model version the latest captured predictions
// were of, so that feedback need not name the model. It is a ring: the
// oldest id is forgotten first.
type recentIDs struct {
	mu   sync.Mutex
	refs map[string]inference.Ref
	ring []string
	next int
}

func (r *recentIDs) add(id string, ref inference.Ref) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refs == nil {
		r.refs = make(map[string]inference.Ref)
		r.ring = make([]string, recentCapturedIDs)
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.refs, old)
	}
	r.ring[r.next] = id
	r.refs[id] = ref
	r.next = (r.next + 1) % len(r.ring)
}

func (r *recentIDs) get(id string) (inference.Ref, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ref, ok := r.refs[id]
	return ref, ok
}

// capture samples a successful prediction with m's capture share and, if
// sampled, queues one CapturedRow per row of its input: the input the
// reference profile names, else the model's first. A batch's row i gets
// the id "{id}:{i}"; a single row the prediction's id.
func (h *handler) capture(m *inference.Model, id string, inputs, outputs []onnxrt.Tensor) {
	share := m.CaptureShare()
	if share <= 0 || h.capt == nil || (share < 1 && rand.Float64() >= share) {
		return
	}
	ref := m.Ref()
	name := ""
	if st := m.Stats(); st != nil {
		name = st.InputName()
	}
	if name == "" {
		if names := m.InputNames(); len(names) > 0 {
			name = names[0]
		}
	}
	in := tensorNamed(inputs, name)
	if in == nil {
		return
	}
	nIn := numericLen(*in)
	rows := 1
	if len(in.Shape) >= 2 && in.Shape[0] > 0 {
		rows = int(in.Shape[0])
	}
	if rows <= 0 || nIn%rows != 0 {
		return
	}
	var out *onnxrt.Tensor
	if len(outputs) > 0 {
		out = &outputs[0]
	}
	nOut := 0
	if out != nil {
		nOut = numericLen(*out)
		if nOut%rows != 0 {
			out, nOut = nil, 0
		}
	}
	now := time.Now().UnixMilli()
	w, wo := nIn/rows, nOut/rows
	for i := range rows {
		row := &shoalv1.CapturedRow{Id: id, AtUnixMs: now, InputName: name, Inputs: floats(in.Data, i*w, (i+1)*w)}
		if rows > 1 {
			row.Id = id + ":" + strconv.Itoa(i)
		}
		if out != nil {
			row.Outputs = floats(out.Data, i*wo, (i+1)*wo)
		}
		h.recent.add(row.Id, ref)
		h.capt.Capture(ref.Name, ref.Version, row)
	}
}

func tensorNamed(ts []onnxrt.Tensor, name string) *onnxrt.Tensor {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

// numericLen is t's element count (onnxrt.Tensor.Len), or 0 for string
// tensors, which are not captured.
func numericLen(t onnxrt.Tensor) int {
	if _, text := t.Data.([]string); text {
		return 0
	}
	return t.Len()
}

func floats(data any, from, to int) []float32 {
	out := make([]float32, 0, to-from)
	for i := from; i < to; i++ {
		var v float32
		switch d := data.(type) {
		case []float32:
			v = d[i]
		case []float64:
			v = float32(d[i])
		case []int8:
			v = float32(d[i])
		case []int16:
			v = float32(d[i])
		case []int32:
			v = float32(d[i])
		case []int64:
			v = float32(d[i])
		case []uint8:
			v = float32(d[i])
		case []uint16:
			v = float32(d[i])
		case []uint32:
			v = float32(d[i])
		case []uint64:
			v = float32(d[i])
		case []bool:
			if d[i] {
				v = 1
			}
		}
		out = append(out, v)
	}
	return out
}

// feedbackItem is one element of a POST /v1/feedback body.
type feedbackItem struct {
	ID    *string `json:"id"`
	Label *string `json:"label"`
	// Model names the prediction's model when the agent no longer
	// remembers the id (it keeps the latest 65,536 captured ids).
	Model string `json:"model"`
}

// feedback handles POST /v1/feedback: {"id": ..., "label": ...} or a list
// of them. Each label is queued for the telemetry of its prediction's
// model version; 202 once all are queued.
func (h *handler) feedback(w http.ResponseWriter, r *http.Request) {
	if h.capt == nil {
		writeError(w, http.StatusServiceUnavailable, "this agent does not take feedback: it sends no telemetry")
		return
	}
	body, err := readBody(w, r, nil, maxFeedbackBody)
	if err != nil {
		h.writeErr(w, err)
		return
	}
	var items []feedbackItem
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(trimmed, &items)
	} else {
		var one feedbackItem
		err = json.Unmarshal(trimmed, &one)
		items = []feedbackItem{one}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "the body must be a JSON object {\"id\": \"...\", \"label\": \"...\"} or a list of them: "+err.Error())
		return
	}
	if len(items) == 0 || len(items) > maxFeedbackItems {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("the body has %d feedback items; send 1 to %d", len(items), maxFeedbackItems))
		return
	}
	type queued struct {
		ref inference.Ref
		fb  *shoalv1.Feedback
	}
	now := time.Now().UnixMilli()
	q := make([]queued, len(items))
	for i, it := range items {
		at := ""
		if len(items) > 1 {
			at = fmt.Sprintf("[%d]", i)
		}
		switch {
		case it.ID == nil || *it.ID == "":
			writeError(w, http.StatusBadRequest, at+`"id" is missing: give the "id" of the inference response`)
			return
		case len(*it.ID) > maxPredictionID:
			writeError(w, http.StatusBadRequest, fmt.Sprintf(`%s"id" is %d bytes; at most %d`, at, len(*it.ID), maxPredictionID))
			return
		case it.Label == nil:
			writeError(w, http.StatusBadRequest, at+`"label" is missing: give the ground truth as a string`)
			return
		case len(*it.Label) > maxFeedbackLabel:
			writeError(w, http.StatusBadRequest, fmt.Sprintf(`%s"label" is %d bytes; at most %d`, at, len(*it.Label), maxFeedbackLabel))
			return
		}
		ref, ok := h.recent.get(*it.ID)
		if !ok && it.Model != "" {
			if m, release, loaded := h.models.Acquire(it.Model); loaded {
				ref, ok = m.Ref(), true
				release()
			}
		}
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf(`%sprediction %q is not among the recently captured ones; name its loaded model in "model"`, at, *it.ID))
			return
		}
		q[i] = queued{ref, &shoalv1.Feedback{PredictionId: *it.ID, Label: *it.Label, AtUnixMs: now}}
	}
	for _, e := range q {
		h.capt.Feedback(e.ref.Name, e.ref.Version, e.fb)
	}
	writeJSON(w, http.StatusAccepted, fmt.Appendf(nil, `{"accepted":%d}`+"\n", len(q)))
}
