package agent

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/shoaltest"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// TestDataStatsRideInTelemetry: a manifest with a reference profile makes
// the agent send, in its telemetry records, the statistics of the inputs
// and outputs it predicted on: as many rows as it predicted.
func TestDataStatsRideInTelemetry(t *testing.T) {
	broker := startBroker(t)
	cp := startCP(t, "tcp://"+broker.addr, "tok")
	in := datastats.Table{Name: "input_vectors"}
	for j := range 10 {
		in.Columns = append(in.Columns, datastats.Column{Name: "x" + strconv.Itoa(j)})
	}
	out := datastats.Table{Name: "output_scalars", Columns: []datastats.Column{{Name: "y"}}}
	for i := range 8 {
		row := make([]float64, 10)
		for j := range row {
			row[j] = float64(i + j)
		}
		in.Rows = append(in.Rows, row)
		out.Rows = append(out.Rows, []float64{float64(i)})
	}
	p, err := datastats.NewProfile(in, out, datastats.ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	profile, err := datastats.EncodeProfile(p)
	if err != nil {
		t.Fatal(err)
	}
	ds := cp.desiredWith("m", "1", modelBytes(t), 1, 1, func(m *shoalv1.DeploymentManifest) { m.ReferenceProfile = profile })
	if err := broker.Publish(scheme.Device(dev, topics.Desired), ds, true, 1); err != nil {
		t.Fatal(err)
	}
	telemetry := broker.subscribe(t, scheme.Device(dev, topics.Telemetry))
	a, _ := runAgent(t, Config{
		DataDir: t.TempDir(), ServerURL: cp.URL, DeviceID: dev, EnrollToken: "tok", APIAddr: "127.0.0.1:0",
		TelemetryWindow: 50 * time.Millisecond, StatsWindow: 100 * time.Millisecond, Logger: testLogger(t),
	})
	shoaltest.Eventually(t, "the model serves with its statistics", func() error {
		m, release, ok := a.models.Acquire("m")
		if !ok {
			return errors.New("model m does not serve")
		}
		defer release()
		if m.Stats() == nil {
			return errors.New("model m serves without statistics")
		}
		return nil
	})
	const rows = 7
	for range rows {
		if _, err := predict(a.APIAddr(), "m"); err != nil {
			t.Fatalf("predict: %v", err)
		}
	}

	// Sum the statistics over the records (each once, by sequence) until
	// every row is in; then they must be exactly the rows predicted.
	seen := map[uint64]bool{}
	var predictions, inRows, outRows uint64
	var first *shoalv1.TelemetryRecord
	waitFor(t, telemetry, "the data statistics of every prediction", func(p []byte) (bool, bool) {
		var b shoalv1.TelemetryBatch
		if proto.Unmarshal(p, &b) != nil {
			return false, false
		}
		for _, r := range b.GetRecords() {
			if seen[r.GetSeq()] || r.GetModelName() != "m" {
				continue
			}
			seen[r.GetSeq()] = true
			predictions += r.GetPredictions()
			if len(r.GetInputStats()) > 0 {
				if first == nil {
					first = r
				}
				inRows += r.GetInputStats()[0].GetCount()
				outRows += r.GetOutputStats()[0].GetCount()
			}
		}
		return true, predictions >= rows && inRows >= rows
	})
	if predictions != rows || inRows != rows || outRows != rows {
		t.Errorf("telemetry counted %d predictions, statistics of %d input and %d output rows; want %d of each", predictions, inRows, outRows, rows)
	}
	if len(first.GetInputStats()) != 10 || first.GetInputStats()[3].GetName() != "x3" || len(first.GetOutputStats()) != 1 ||
		first.GetStatsWindowStartUnixMs() == 0 || first.GetStatsWindowStartUnixMs() >= first.GetWindowEndUnixMs() {
		t.Errorf("a record with statistics = %v", first)
	}
}
