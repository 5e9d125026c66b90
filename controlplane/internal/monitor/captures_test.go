package monitor

import (
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Captures and labels of a new record are stored once under capture/, and
// not again when the batch is sent again; the stored record leaves them out.
func TestCapturesStoredOnce(t *testing.T) {
	e := newEnv(t)
	b := batch("dev-1", 1, 1, 2, 0)
	b.Records[0].Captures = []*shoalv1.CapturedRow{{Id: "a", Inputs: []float32{1, 2}}, {Id: "b", Inputs: []float32{3, 4}}}
	b.Records[0].Feedback = []*shoalv1.Feedback{{PredictionId: "a", Label: "cat"}}
	e.send(t, b)
	e.send(t, b)
	var keys []string
	err := e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(capturePrefix), func(k, v []byte) error {
			keys = append(keys, string(k)+"="+strings.TrimSpace(string(v[:min(len(v), 40)])))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, labels := 0, 0
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "capture/row/m1/") && strings.Contains(k, "/1/dev-1="):
			rows++
		case k == "capture/label/m1/a=cat":
			labels++
		case strings.HasPrefix(k, "capture/meta/m1="):
			if !strings.Contains(k, `"rows":2`) || !strings.Contains(k, `"labels":1`) {
				t.Errorf("meta %s; want 2 rows, 1 label", k)
			}
		default:
			t.Errorf("unexpected key %s", k)
		}
	}
	if rows != 2 || labels != 1 {
		t.Fatalf("%d rows, %d labels stored; want 2 and 1: %q", rows, labels, keys)
	}
	err = e.st.View(func(tx store.Tx) error {
		v, err := tx.Get(recordKey("dev-1", 1))
		if err == nil && strings.Contains(string(v), "cat") {
			t.Error("the stored record keeps its feedback")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The export joins each captured row with its label by prediction id,
// oldest first, across records and versions; it leaves out rows with no
// label and rows of another width; the counts see every row.
func TestExportCaptures(t *testing.T) {
	e := newEnv(t)
	b := batch("dev-1", 1, 2, 3, 0)
	b.Records[0].Captures = []*shoalv1.CapturedRow{
		{Id: "a", Inputs: []float32{1, 2.5}},
		{Id: "b", Inputs: []float32{3, 4}}, // never labelled
		{Id: "c", Inputs: []float32{5, 6, 7}},
	}
	b.Records[1].ModelVersion = "2"
	b.Records[1].Captures = []*shoalv1.CapturedRow{{Id: "d", Inputs: []float32{-1, 0.125}}}
	// Labels arrive later than their rows, and one for a row never captured.
	b.Records[1].Feedback = []*shoalv1.Feedback{
		{PredictionId: "d", Label: "dog"}, {PredictionId: "a", Label: "cat, tabby"},
		{PredictionId: "c", Label: "cat"}, {PredictionId: "zz", Label: "cat"},
	}
	e.send(t, b)

	rows, labelled, byVersion, err := e.mon.CaptureCounts(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if rows != 4 || labelled != 3 || byVersion["1"] != 3 || byVersion["2"] != 1 || len(byVersion) != 2 {
		t.Errorf("CaptureCounts = %d rows, %d labelled, %v; want 4, 3, map[1:3 2:1]", rows, labelled, byVersion)
	}

	for _, tc := range []struct {
		name   string
		header []string
		want   string
		rows   int
	}{
		{"width of the first row", nil, "f0,f1,label\n1,2.5,\"cat, tabby\"\n-1,0.125,dog\n", 2},
		{"named", []string{"x", "y"}, "x,y,label\n1,2.5,\"cat, tabby\"\n-1,0.125,dog\n", 2},
		{"other width", []string{"x", "y", "z"}, "x,y,z,label\n5,6,7,cat\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			n, err := e.mon.ExportCaptures(ctx, "m1", &buf, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.rows || buf.String() != tc.want {
				t.Errorf("ExportCaptures = %d rows\n%s\nwant %d rows\n%s", n, buf.String(), tc.rows, tc.want)
			}
		})
	}
	if n := e.logs.count("captured rows left out of export"); n != 3 {
		t.Errorf("%d exports logged rows left out; want 3 (a row of another width each time)", n)
	}

	var buf strings.Builder
	if n, err := e.mon.ExportCaptures(ctx, "m2", &buf, nil); n != 0 || err != nil || buf.Len() != 0 {
		t.Errorf("ExportCaptures of a model with no captures = %d, %v, %q; want 0 rows and nothing written", n, err, buf.String())
	}
	if _, err := e.mon.ExportCaptures(ctx, "m1", &buf, []string{"x", "label"}); !shoalerr.Is(err, shoalerr.Invalid) {
		t.Errorf("a feature named label: err = %v; want Invalid", err)
	}
	if _, _, _, err := e.mon.CaptureCounts(ctx, "a/b"); !shoalerr.Is(err, shoalerr.Invalid) {
		t.Errorf("CaptureCounts(a/b): err = %v; want Invalid", err)
	}
}
