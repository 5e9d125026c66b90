package monitor

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
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

// CaptureCounts returns how many captured rows model keeps, how many of
// them have a label, and the rows by model version. Errors: Invalid (model
// is not a valid name), Internal.
func (m *Monitor) CaptureCounts(ctx context.Context, model string) (rows, labelled uint64, byVersion map[string]uint64, err error) {
	const op = "monitor.CaptureCounts"
	if err := ctx.Err(); err != nil {
		return 0, 0, nil, err
	}
	if err := checkName("model name", model); err != nil {
		return 0, 0, nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "captures of a model")
	}
	byVersion = map[string]uint64{}
	err = m.st.View(func(tx store.Tx) error {
		return scanCaptured(tx, model, func(version string, row *shoalv1.CapturedRow, label []byte, hasLabel bool) error {
			rows++
			byVersion[version]++
			if hasLabel {
				labelled++
			}
			return ctx.Err()
		})
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, nil, ctx.Err()
		}
		return 0, 0, nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read captures of model %q", model)
	}
	return rows, labelled, byVersion, nil
}

// ExportCaptures writes model's labelled captured rows, oldest first, to w
// as CSV: one column per input, then "label". header names the inputs; if
// it is empty they are f0..fn-1, n the width of the first labelled row.
// It returns the rows written. Rows without a label are left out, and so
// are rows whose inputs are not header's width or not finite (logged with
// their count). Errors: Invalid (model is not a valid name; a header name
// is "label" or repeated), Internal, and w's.
func (m *Monitor) ExportCaptures(ctx context.Context, model string, w io.Writer, header []string) (rows int, err error) {
	return m.ExportCapturesAs(ctx, model, w, header, "label")
}

// ExportCapturesAs is ExportCaptures with the label column named
// labelColumn.
func (m *Monitor) ExportCapturesAs(ctx context.Context, model string, w io.Writer, header []string, labelColumn string) (rows int, err error) {
	const op = "monitor.ExportCaptures"
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkName("model name", model); err != nil {
		return 0, shoalerr.Wrap(err, shoalerr.Invalid, op, "captures of a model")
	}
	if labelColumn == "" {
		labelColumn = "label"
	}
	seen := map[string]bool{labelColumn: true}
	for _, h := range header {
		if seen[h] {
			return 0, shoalerr.E(shoalerr.Invalid, op, "feature name %q of model %s is repeated or is the label column's; name each feature once, and not %q", h, model, labelColumn)
		}
		seen[h] = true
	}
	cw := csv.NewWriter(w)
	width := len(header)
	var skipped int
	var rec []string
	var wErr error
	err = m.st.View(func(tx store.Tx) error {
		return scanCaptured(tx, model, func(_ string, row *shoalv1.CapturedRow, label []byte, hasLabel bool) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !hasLabel || len(label) == 0 {
				return nil
			}
			in := row.GetInputs()
			if width == 0 && len(in) > 0 {
				width = len(in)
				header = make([]string, width)
				clash := false
				for i := range header {
					header[i] = "f" + strconv.Itoa(i)
					clash = clash || seen[header[i]]
				}
				if clash { // labelColumn is one of the f names
					for i := range header {
						header[i] = "input_" + header[i]
					}
				}
			}
			if len(in) != width || width == 0 || !finite(in) {
				skipped++
				return nil
			}
			if rows == 0 {
				if wErr = cw.Write(append(append([]string(nil), header...), labelColumn)); wErr != nil {
					return wErr
				}
			}
			rec = rec[:0]
			for _, f := range in {
				rec = append(rec, strconv.FormatFloat(float64(f), 'g', -1, 32))
			}
			if wErr = cw.Write(append(rec, string(label))); wErr != nil {
				return wErr
			}
			rows++
			return nil
		})
	})
	if err == nil {
		cw.Flush()
		err = cw.Error()
		wErr = err
	}
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case err != nil && errors.Is(err, wErr):
		return 0, fmt.Errorf("monitor: write captures of model %s: %w", model, err)
	case err != nil:
		return 0, shoalerr.Wrap(err, shoalerr.Internal, op, "read captures of model %q", model)
	}
	if skipped > 0 {
		m.log.Warn("captured rows left out of export: their inputs are not the header's width or not finite",
			"model", model, "skipped", skipped, "width", width, "exported", rows)
	}
	return rows, nil
}

func finite(fs []float32) bool {
	for _, f := range fs {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return false
		}
	}
	return true
}

// scanCaptured calls fn for each of model's captured rows, oldest first,
// with its version and its label, if it has one.
func scanCaptured(tx store.Tx, model string, fn func(version string, row *shoalv1.CapturedRow, label []byte, hasLabel bool) error) error {
	prefix := captureRowPrefix(model)
	return tx.Scan(prefix, func(k, v []byte) error {
		// k is prefix + {n}/{version}/{device}.
		rest := k[len(prefix):]
		_, rest, _ = bytes.Cut(rest, []byte("/"))
		version, _, _ := bytes.Cut(rest, []byte("/"))
		var row shoalv1.CapturedRow
		if err := proto.Unmarshal(v, &row); err != nil {
			return fmt.Errorf("decode captured row %s: %w", k, err)
		}
		var label []byte
		hasLabel := false
		if id := row.GetId(); id != "" {
			l, err := tx.Get(captureLabelKey(model, id))
			switch {
			case err == nil:
				label, hasLabel = l, true
			case !errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("read label of %q: %w", id, err)
			}
		}
		return fn(string(version), &row, label, hasLabel)
	})
}
