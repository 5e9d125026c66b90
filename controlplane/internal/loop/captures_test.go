package loop

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// capture sends dev-0's telemetry for iris version 1 carrying rows and
// labels, as an agent and POST /v1/feedback would.
func (e *env) capture(rows []*shoalv1.CapturedRow, labels []*shoalv1.Feedback) {
	e.t.Helper()
	b := &shoalv1.TelemetryBatch{SchemaVersion: 1, DeviceId: "dev-0", FirstSeq: 1, LastSeq: 1, Records: []*shoalv1.TelemetryRecord{{
		Seq: 1, ModelName: "iris", ModelVersion: "1", Predictions: uint64(len(rows)),
		WindowStartUnixMs: 1000, WindowEndUnixMs: 1999, LatencyP95Us: 1200,
		Captures: rows, Feedback: labels,
	}}}
	payload, err := proto.Marshal(b)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mon.HandleTelemetry(topics.New("").Device("dev-0", topics.Telemetry), payload)
}

func hasEvent(r Run, s string) bool {
	for _, ev := range r.Events {
		if strings.Contains(ev.Message, s) {
			return true
		}
	}
	return false
}

// With Captures, the model's labelled captured rows follow the latest
// version's rows in a new version of the dataset, and the job trains on
// it; a reference CSV with no final line break still gets whole rows.
func TestCapturesAddedToTheLatestVersion(t *testing.T) {
	e := newEnv(t)
	e.pushIris(bytes.TrimRight(e.iris, "\n")) // v3: 150 rows, no final line break
	e.capture([]*shoalv1.CapturedRow{
		{Id: "a", Inputs: []float32{6.1, 2.8, 4.7, 1.2}},
		{Id: "b", Inputs: []float32{5, 3.4, 1.5, 0.2}},
		{Id: "c", Inputs: []float32{1, 2}}, // not the dataset's width
		{Id: "d", Inputs: []float32{7.7, 3, 6.1, 2.3}},
		{Id: "e", Inputs: []float32{6.3, 2.5, 5, 1.9}}, // never labelled
	}, []*shoalv1.Feedback{
		{PredictionId: "a", Label: "Iris-versicolor"}, {PredictionId: "b", Label: "Iris-setosa"},
		{PredictionId: "c", Label: "Iris-setosa"}, {PredictionId: "d", Label: "Iris-virginica"},
	})
	e.setPolicy(Policy{Retrain: true, Captures: true})

	r, err := e.loop.Start(ctx, alert("1"))
	if err != nil {
		t.Fatal(err)
	}
	if r.State != Training || r.DatasetVersion != 4 || r.CapturedRows != 3 || !hasEvent(r, "captured rows: 3") {
		t.Fatalf("run = %+v; want training on iris v4 with 3 captured rows", r)
	}
	v, err := e.datasets.Get(ctx, "iris", 0)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != 4 || v.Rows != 153 || v.Label != "Species" || v.Task != dataset.Classification || len(v.Features) != 4 {
		t.Errorf("latest version = %+v; want v4 with 150+3 rows, labelled Species", v)
	}
	f, _, err := e.datasets.OpenCSV(ctx, "iris", 4)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := string(bytes.TrimRight(e.iris, "\n")) + "\n6.1,2.8,4.7,1.2,Iris-versicolor\n5,3.4,1.5,0.2,Iris-setosa\n7.7,3,6.1,2.3,Iris-virginica\n"
	if string(body) != want {
		t.Errorf("v4 ends in\n%s\nwant\n%s", body[len(body)-150:], want[len(want)-150:])
	}
	j, err := e.runner.Get(ctx, r.Job)
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Dataset != "iris" || j.Spec.DatasetVersion != 4 {
		t.Errorf("job spec = %+v; want iris v4", j.Spec)
	}
	if r = e.finish(r); r.State != Candidate || r.CapturedRows != 3 {
		t.Errorf("run = %+v; want a candidate trained with the captured rows", r)
	}
	if j = e.wait(r.Job); j.Result == nil || j.Result.Lineage.DatasetVersion != 4 || j.Result.Lineage.DatasetRows != 153 {
		t.Errorf("job result = %+v; want trained on iris v4", j.Result)
	}
}

// With Captures and no labelled captured rows, the run trains on the
// latest version and says so; no version is pushed.
func TestCapturesNoneUsesTheLatestVersion(t *testing.T) {
	e := newEnv(t)
	e.capture([]*shoalv1.CapturedRow{{Id: "a", Inputs: []float32{6.1, 2.8, 4.7, 1.2}}}, nil) // no label
	e.setPolicy(Policy{Retrain: true, Captures: true})
	r, err := e.loop.Start(ctx, alert("1"))
	if err != nil {
		t.Fatal(err)
	}
	if r.State != Training || r.DatasetVersion != 2 || r.CapturedRows != 0 || !hasEvent(r, "captured rows: 0; model iris has no labelled captured rows") {
		t.Errorf("run = %+v; want training on iris v2, saying there were no captured rows", r)
	}
	if len(r.Events) != 2 || r.Events[0].State != Training || !strings.Contains(r.Events[1].Message, "iris v2") {
		t.Errorf("events = %+v; want the captures' then the training's", r.Events)
	}
	if v, err := e.datasets.Get(ctx, "iris", 0); err != nil || v.Version != 2 {
		t.Errorf("latest version = %+v, %v; want still v2", v, err)
	}
	e.wait(r.Job)
}

// A dataset with a categorical feature takes no captures: a captured row
// holds the category's code.
func TestCapturesSkipCategoricalFeatures(t *testing.T) {
	e := newEnv(t)
	e.capture([]*shoalv1.CapturedRow{{Id: "a", Inputs: []float32{1, 2}}}, []*shoalv1.Feedback{{PredictionId: "a", Label: "x"}})
	if _, _, err := e.datasets.Push(ctx, "cats", "y", "", strings.NewReader("colour,size,y\nred,1,x\nblue,2,z\n")); err != nil {
		t.Fatal(err)
	}
	ref, err := e.datasets.Get(ctx, "cats", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := Run{LoopRun: apiv1.LoopRun{Model: "iris"}}
	if v := e.loop.addCaptures(ctx, &r, ref); v.Version != 1 || r.CapturedRows != 0 || len(r.notes) != 1 || !strings.Contains(r.notes[0], `feature "colour" of dataset cats is categorical`) {
		t.Errorf("addCaptures = v%d, %+v %q; want v1 and a note on the categorical feature", v.Version, r, r.notes)
	}
}

// The captured rows' label goes to the reference's label column, wherever
// it is; a header's byte-order mark and spaces do not hide it.
func TestCaptureRowsLabelColumn(t *testing.T) {
	f, err := tempCSV(t, "\ufeff Species ,x,y\nA,1,2")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := captureRows(f, strings.NewReader("x,y,Species\n3,4,\"B, b\"\n"), "Species")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rows)
	if string(got) != "\n\"B, b\",3,4\n" {
		t.Errorf("captureRows = %q", got)
	}
}

func tempCSV(t *testing.T, content string) (*os.File, error) {
	f, err := os.CreateTemp(t.TempDir(), "ref.csv")
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(content); err != nil {
		return nil, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return f, err
}
