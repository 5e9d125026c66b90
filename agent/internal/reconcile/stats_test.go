package reconcile

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// testProfile returns the encoded reference profile of a few rows of the
// test model's input_vectors [-1,10] and output_scalars [-1].
func testProfile(t *testing.T) []byte {
	t.Helper()
	in := datastats.Table{Name: "input_vectors"}
	for j := range 10 {
		in.Columns = append(in.Columns, datastats.Column{Name: "x" + itoa(int64(j))})
	}
	out := datastats.Table{Name: "output_scalars", Columns: []datastats.Column{{Name: "y"}}}
	for i := range 6 {
		row := make([]float64, 10)
		for j := range row {
			row[j] = float64(i*j) / 10
		}
		in.Rows = append(in.Rows, row)
		out.Rows = append(out.Rows, []float64{float64(i)})
	}
	p, err := datastats.NewProfile(in, out, datastats.ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := datastats.EncodeProfile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// servingStats returns the data statistics of the model serving as name.
func (e *testEnv) servingStats(name string) *inference.DataStats {
	e.t.Helper()
	m, release, ok := e.set.Acquire(name)
	if !ok {
		e.t.Fatalf("no model %q serving", name)
	}
	defer release()
	return m.Stats()
}

func TestReferenceProfileGivesDataStats(t *testing.T) {
	e := newEnv(t, nil)
	plain := e.manifestFor("plain", "1", modelBytes(t), 1)
	profiled := e.manifestFor("profiled", "1", variant(t, "p"), 1)
	profiled.ReferenceProfile = testProfile(t)
	e.r.pass(context.Background(), desired(t, 1, e.seal(plain, nil), e.seal(profiled, nil)))
	if e.servingStats("plain") != nil {
		t.Error("a manifest without a reference profile gave its model data statistics")
	}
	st := e.servingStats("profiled")
	if st == nil {
		t.Fatal("a manifest with a reference profile gave its model no data statistics")
	}
	// They are the statistics of this model's predictions, binned with
	// the profile.
	in := onnxrt.Tensor{Name: "input_vectors", DataType: onnxrt.FP32, Shape: []int64{2, 10}, Data: make([]float32, 20)}
	out := onnxrt.Tensor{Name: "output_scalars", DataType: onnxrt.FP32, Shape: []int64{2}, Data: []float32{1, 2}}
	if err := st.Observe([]onnxrt.Tensor{in}, []onnxrt.Tensor{out}); err != nil {
		t.Fatal(err)
	}
	ins, outs := st.Snapshot()
	if len(ins) != 10 || len(outs) != 1 || ins[0].GetCount() != 2 || outs[0].GetCount() != 2 || outs[0].GetName() != "y" {
		t.Errorf("statistics = %v / %v; want 10 inputs and 1 output, 2 rows each", ins, outs)
	}

	// An upgrade starts the new version on statistics of its own.
	v2 := e.manifestFor("profiled", "2", variant(t, "p2"), 2)
	v2.ReferenceProfile = profiled.ReferenceProfile
	e.r.pass(context.Background(), desired(t, 2, e.seal(plain, nil), e.seal(v2, nil)))
	if st2 := e.servingStats("profiled"); st2 == nil || st2 == st {
		t.Fatalf("after the upgrade the statistics are %p (were %p); want new ones", st2, st)
	}
	if ins, _ := e.servingStats("profiled").Snapshot(); ins[0].GetCount() != 0 {
		t.Errorf("the new version starts with %d rows", ins[0].GetCount())
	}
}

// A version already serving (as when the agent starts with the models on
// disk) gets the statistics of the manifest that names it, once.
func TestServingModelGetsItsProfile(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if e.servingStats("m") != nil {
		t.Fatal("statistics without a profile")
	}
	withProfile := proto.Clone(m).(*shoalv1.DeploymentManifest)
	withProfile.ReferenceProfile = testProfile(t)
	reqs := len(e.srv.requests())
	e.r.pass(context.Background(), desired(t, 2, e.seal(withProfile, nil)))
	st := e.servingStats("m")
	if st == nil {
		t.Fatal("the serving version did not get the statistics of its manifest's profile")
	}
	if got := len(e.srv.requests()); got != reqs {
		t.Errorf("the profile made the reconciler download the model again (%d requests)", got-reqs)
	}
	e.r.pass(context.Background(), desired(t, 3, e.seal(withProfile, nil)))
	if e.servingStats("m") != st {
		t.Error("a redelivered manifest replaced the statistics")
	}
}

func TestBadProfileStillServes(t *testing.T) {
	wrongTensor, err := datastats.NewProfile(
		datastats.Table{Name: "pixels", Columns: []datastats.Column{{Name: "a"}}, Rows: [][]float64{{1}, {2}}},
		datastats.Table{}, datastats.ProfileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wrongTensorBytes, err := datastats.EncodeProfile(wrongTensor)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		profile []byte
	}{
		{"garbage", []byte("not a profile")},
		{"another model's input", wrongTensorBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			m := e.manifestFor("m", "1", modelBytes(t), 1)
			m.ReferenceProfile = tc.profile
			e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
			if ms := modelStatus(e.last(), "m"); ms.GetPhase() != shoalv1.Phase_PHASE_ACTIVE || ms.GetError() != "" {
				t.Errorf("model status = %v; want ACTIVE with no error", ms)
			}
			if e.servingStats("m") != nil {
				t.Error("a bad profile gave the model data statistics")
			}
			if err := e.predict("m"); err != nil {
				t.Errorf("predict: %v", err)
			}
		})
	}
}

func TestNoDataStats(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NoDataStats = true })
	m := e.manifestFor("m", "1", modelBytes(t), 1)
	m.ReferenceProfile = testProfile(t)
	e.r.pass(context.Background(), desired(t, 1, e.seal(m, nil)))
	if e.serving("m") != "1" || e.servingStats("m") != nil {
		t.Errorf("with NoDataStats: serving %q, statistics %v; want 1 and none", e.serving("m"), e.servingStats("m"))
	}
}
