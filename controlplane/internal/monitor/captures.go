package monitor

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Captured predictions and feedback labels (TelemetryRecord.captures and
// .feedback) of records stored for the first time are kept, per model,
// under:
//
//	capture/meta/{model}                          captureMeta (JSON)
//	capture/row/{model}/{n, 16 hex}/{version}/{device}  CapturedRow (protobuf)
//	capture/label/{model}/{prediction id}         the label
//
// n counts the model's rows as they arrive, so rows scan oldest first. A
// model keeps its newest MaxCapturedRows rows: older ones are deleted with
// their labels. A model keeps at most MaxCapturedRows labels; one more
// (e.g. labels of predictions never captured) is dropped. The record
// itself is stored without them, so a batch costs its bytes once.
const (
	MaxCapturedRows = 100_000
	capturePrefix   = "capture/"
)

// captureMeta counts a model's captured rows and labels.
type captureMeta struct {
	Next   uint64 `json:"next"`   // n of the next row
	Rows   uint64 `json:"rows"`   // rows kept
	Labels uint64 `json:"labels"` // labels kept
}

func captureMetaKey(model string) []byte { return []byte(capturePrefix + "meta/" + model) }
func captureRowPrefix(model string) []byte {
	return []byte(capturePrefix + "row/" + model + "/")
}
func captureLabelKey(model, id string) []byte {
	return []byte(capturePrefix + "label/" + model + "/" + id)
}

func hasCaptures(r *shoalv1.TelemetryRecord) bool {
	return len(r.GetCaptures())+len(r.GetFeedback()) > 0
}

// withoutCaptures returns r as stored under monitor/rec: without its
// captures and feedback, which are stored under capture/.
func withoutCaptures(r *shoalv1.TelemetryRecord) *shoalv1.TelemetryRecord {
	if !hasCaptures(r) {
		return r
	}
	c := proto.Clone(r).(*shoalv1.TelemetryRecord)
	c.Captures, c.Feedback = nil, nil
	return c
}

var errStopScan = errors.New("stop scan")

// storeCaptures stores the captures and feedback of a new record of device
// with a valid model name and version, evicting the model's oldest rows
// over MaxCapturedRows. It returns the labels dropped.
func storeCaptures(tx store.Tx, device string, r *shoalv1.TelemetryRecord) (dropped uint64, err error) {
	model, version := r.GetModelName(), r.GetModelVersion()
	var meta captureMeta
	if _, err := store.GetJSON(tx, captureMetaKey(model), &meta); err != nil {
		return 0, err
	}
	for _, row := range r.GetCaptures() {
		v, err := proto.Marshal(row)
		if err != nil {
			return 0, fmt.Errorf("encode captured row %q: %w", row.GetId(), err)
		}
		key := fmt.Appendf(captureRowPrefix(model), "%016x/%s/%s", meta.Next, version, device)
		if err := tx.Set(key, v); err != nil {
			return 0, fmt.Errorf("write captured row %q: %w", row.GetId(), err)
		}
		meta.Next++
		meta.Rows++
	}
	for _, fb := range r.GetFeedback() {
		id := fb.GetPredictionId()
		if id == "" {
			dropped++
			continue
		}
		key := captureLabelKey(model, id)
		if _, err := tx.Get(key); errors.Is(err, store.ErrNotFound) {
			if meta.Labels >= MaxCapturedRows {
				dropped++
				continue
			}
			meta.Labels++
		} else if err != nil {
			return 0, fmt.Errorf("read label of %q: %w", id, err)
		}
		if err := tx.Set(key, []byte(fb.GetLabel())); err != nil {
			return 0, fmt.Errorf("write label of %q: %w", id, err)
		}
	}
	if meta.Rows > MaxCapturedRows {
		evict := meta.Rows - MaxCapturedRows
		var keys [][]byte
		var ids []string
		err := tx.Scan(captureRowPrefix(model), func(k, v []byte) error {
			if uint64(len(keys)) == evict {
				return errStopScan
			}
			var row shoalv1.CapturedRow
			if err := proto.Unmarshal(v, &row); err == nil {
				ids = append(ids, row.GetId())
			}
			keys = append(keys, append([]byte(nil), k...))
			return nil
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return 0, fmt.Errorf("scan captured rows of %s: %w", model, err)
		}
		for _, k := range keys {
			if err := tx.Delete(k); err != nil {
				return 0, err
			}
		}
		for _, id := range ids {
			key := captureLabelKey(model, id)
			if _, err := tx.Get(key); err == nil {
				if err := tx.Delete(key); err != nil {
					return 0, err
				}
				meta.Labels--
			}
		}
		meta.Rows -= uint64(len(keys))
	}
	return dropped, store.PutJSON(tx, captureMetaKey(model), meta)
}
