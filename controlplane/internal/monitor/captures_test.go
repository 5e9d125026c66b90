package monitor

import (
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
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
