package loop

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
)

// addCaptures is a policy's Captures: it pushes ref (a version of the
// dataset r trains on) followed by r.Model's labelled captured rows as a
// new version of the dataset and returns it, counting the rows in
// r.CapturedRows. With no such rows, or when they cannot be added, it
// returns ref; either way it notes on r what it did.
func (s *Service) addCaptures(ctx context.Context, r *Run, ref dataset.Version) dataset.Version {
	v, n, err := s.pushCaptures(ctx, r.Model, ref)
	switch {
	case err != nil:
		r.notes = append(r.notes, fmt.Sprintf("captured rows: none added (%v); training on dataset %s v%d as it is", err, ref.Name, ref.Version))
		s.log.Warn("captured rows not added to the retraining data", "model", r.Model, "dataset", ref.Name, "version", ref.Version, "err", err)
		return ref
	case n == 0:
		r.notes = append(r.notes, fmt.Sprintf("captured rows: 0; model %s has no labelled captured rows (captures whose predictions got a label through POST /v1/feedback), so the job trains on dataset %s v%d as it is", r.Model, ref.Name, ref.Version))
		return ref
	}
	r.CapturedRows = n
	r.notes = append(r.notes, fmt.Sprintf("captured rows: %d; dataset %s v%d is v%d's %d rows followed by the labelled captured rows of model %s", n, v.Name, v.Version, ref.Version, ref.Rows, r.Model))
	return v
}

// pushCaptures does addCaptures' work; n is 0 when no version was pushed.
func (s *Service) pushCaptures(ctx context.Context, model string, ref dataset.Version) (_ dataset.Version, n int, _ error) {
	if s.captures == nil {
		return dataset.Version{}, 0, errors.New("this control plane has no capture store")
	}
	header := make([]string, len(ref.Features))
	for i, f := range ref.Features {
		if f.Categorical {
			return dataset.Version{}, 0, fmt.Errorf("feature %q of dataset %s is categorical, and a captured row holds its code, not its category, so captures are only added to datasets of numeric features", f.Name, ref.Name)
		}
		header[i] = f.Name
	}
	var exported bytes.Buffer
	n, err := s.captures.ExportCapturesAs(ctx, model, &exported, header, ref.Label)
	if err != nil || n == 0 {
		return dataset.Version{}, 0, err
	}
	f, opened, err := s.datasets.OpenCSV(ctx, ref.Name, ref.Version)
	if err != nil {
		return dataset.Version{}, 0, err
	}
	defer f.Close()
	rows, err := captureRows(f, &exported, opened.Label)
	if err != nil {
		return dataset.Version{}, 0, fmt.Errorf("dataset %s v%d: %w", ref.Name, ref.Version, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return dataset.Version{}, 0, err
	}
	v, _, err := s.datasets.Push(ctx, ref.Name, opened.Label, opened.Task, io.MultiReader(f, rows))
	if err != nil {
		return dataset.Version{}, 0, fmt.Errorf("push dataset %s with %d captured rows: %w", ref.Name, n, err)
	}
	return v, n, nil
}

// captureRows returns the rows of exported (a header, then features and
// the label last) without its header, with the label moved to its column
// in ref (the reference CSV, read from its start), and preceded by a line
// break if ref does not end in one.
func captureRows(ref *os.File, exported io.Reader, label string) (io.Reader, error) {
	cr := csv.NewReader(ref)
	cr.FieldsPerRecord = -1
	refHeader, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read the header: %w", err)
	}
	at := slices.IndexFunc(refHeader, func(h string) bool {
		return strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) == label
	})
	if at < 0 {
		return nil, fmt.Errorf("the header has no label column %q", label)
	}
	var out bytes.Buffer
	st, err := ref.Stat()
	if err != nil {
		return nil, err
	}
	if size := st.Size(); size > 0 {
		last := make([]byte, 1)
		if _, err := ref.ReadAt(last, size-1); err != nil {
			return nil, err
		}
		if last[0] != '\n' {
			out.WriteByte('\n')
		}
	}
	er := csv.NewReader(exported)
	if _, err := er.Read(); err != nil { // the header
		return nil, fmt.Errorf("read the captured rows: %w", err)
	}
	w := csv.NewWriter(&out)
	for {
		rec, err := er.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the captured rows: %w", err)
		}
		l := rec[len(rec)-1]
		rec = slices.Insert(rec[:len(rec)-1], min(at, len(rec)-1), l)
		if err := w.Write(rec); err != nil {
			return nil, err
		}
	}
	w.Flush()
	return &out, w.Error()
}
