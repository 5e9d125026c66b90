package telemetry

import (
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Captures and feedback ride in their version's record, within the record
// count and byte bounds; the rest are dropped and counted.
func TestCapturesBounded(t *testing.T) {
	sink := newSink()
	const maxBytes = 4 << 10
	a := NewAggregator(Config{StatsWindow: -1, MaxRecordBytes: maxBytes}, sink, nil)
	row := func() *shoalv1.CapturedRow {
		return &shoalv1.CapturedRow{Id: "0123456789abcdef", Inputs: make([]float32, 10), Outputs: []float32{1}}
	}
	a.Feedback("m", "1", &shoalv1.Feedback{PredictionId: "x", Label: "cat"})
	for range MaxCapturesPerRecord + 5 {
		a.Capture("m", "1", row())
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 1 {
		t.Fatalf("%d records; want 1", len(recs))
	}
	r := recs[0]
	if len(r.GetFeedback()) != 1 || len(r.GetCaptures()) == 0 || len(r.GetCaptures()) >= MaxCapturesPerRecord {
		t.Fatalf("%d feedback, %d captures; want 1 and some under %d (byte bound)", len(r.GetFeedback()), len(r.GetCaptures()), MaxCapturesPerRecord)
	}
	if size := encodedSize(r); size > maxBytes {
		t.Fatalf("record is %d bytes; the bound is %d", size, maxBytes)
	}
	if got, want := a.CapturesDropped(), uint64(MaxCapturesPerRecord+5-len(r.GetCaptures())); got != want {
		t.Fatalf("CapturesDropped = %d; want %d", got, want)
	}
	if proto.Size(r) == 0 {
		t.Fatal("empty record")
	}
	// The next window carries nothing left over.
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if recs := sink.take(); len(recs) != 0 {
		t.Fatalf("%d records after an empty window; want 0", len(recs))
	}
}
