package inference

import (
	"fmt"

	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// DataStats keeps the data statistics (DESIGN §7) of one loaded model's
// predictions: the values of the input and output its manifest's reference
// profile names, binned with the profile's edges. Each loaded Model has its
// own, so a swap starts the new version on an empty one. Its methods may be
// called from many goroutines.
type DataStats struct {
	input, output string // tensor names; "" when the profile has no such side
	acc           *datastats.Accumulator
}

// NewDataStats returns empty statistics for the predictions of m, binned
// with profile p (decoded with datastats.DecodeProfile). It returns an
// error if p is invalid or names an input or output that m does not have.
func NewDataStats(p *shoalv1.ReferenceProfile, m *Model) (*DataStats, error) {
	acc, err := datastats.NewAccumulator(p)
	if err != nil {
		return nil, err
	}
	s := &DataStats{acc: acc}
	if len(p.GetInputs()) > 0 {
		if _, ok := m.Input(p.GetInputName()); !ok {
			return nil, fmt.Errorf("the reference profile is of input %q, but model %s has inputs %q", p.GetInputName(), m.ref, m.InputNames())
		}
		s.input = p.GetInputName()
	}
	if len(p.GetOutputs()) > 0 {
		if !hasSpec(m.outputs, p.GetOutputName()) {
			return nil, fmt.Errorf("the reference profile is of output %q, but model %s has outputs %q", p.GetOutputName(), m.ref, m.OutputNames())
		}
		s.output = p.GetOutputName()
	}
	return s, nil
}

// InputName returns the input tensor the profile is of; "" if none.
func (s *DataStats) InputName() string { return s.input }

// Observe records one prediction, from the tensors it was given and those
// it returned. It records nothing and returns nil when a tensor the profile
// names is not among them; it records nothing and returns an error when
// one's elements are not a whole number of the profile's rows, or the two
// hold different numbers of rows (see datastats.Accumulator.Observe). It
// does not allocate.
func (s *DataStats) Observe(inputs, outputs []onnxrt.Tensor) error {
	var in, out any
	if s.input != "" {
		t := tensorNamed(inputs, s.input)
		if t == nil {
			return nil
		}
		in = t.Data
	}
	if s.output != "" {
		t := tensorNamed(outputs, s.output)
		if t == nil {
			return nil
		}
		out = t.Data
	}
	return s.acc.Observe(in, out)
}

// SnapshotAndReset returns the statistics since the last call (or since s
// was made) and starts over; see datastats.Accumulator.SnapshotAndReset.
func (s *DataStats) SnapshotAndReset() (inputs, outputs []*shoalv1.FeatureStats) {
	return s.acc.SnapshotAndReset()
}

// Snapshot returns the statistics so far; s goes on.
func (s *DataStats) Snapshot() (inputs, outputs []*shoalv1.FeatureStats) {
	return s.acc.Snapshot()
}

func tensorNamed(ts []onnxrt.Tensor, name string) *onnxrt.Tensor {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

func hasSpec(specs []onnxrt.TensorSpec, name string) bool {
	for _, s := range specs {
		if s.Name == name {
			return true
		}
	}
	return false
}
