package reconcile

import (
	"fmt"
	"slices"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// checkSchema checks that the loaded model has the inputs and outputs the
// manifest promises (the apps on the device are written against them):
// same names, datatypes and ranks, and equal dimensions where both are
// fixed. A manifest that lists none is not checked.
func checkSchema(m *inference.Model, man *shoalv1.DeploymentManifest) error {
	if err := matchSpecs("input", m.Inputs(), man.GetInputs()); err != nil {
		return fmt.Errorf("model %s %s does not match its manifest: %w", man.GetModelName(), man.GetModelVersion(), err)
	}
	if err := matchSpecs("output", m.Outputs(), man.GetOutputs()); err != nil {
		return fmt.Errorf("model %s %s does not match its manifest: %w", man.GetModelName(), man.GetModelVersion(), err)
	}
	return nil
}

func matchSpecs(kind string, have []onnxrt.TensorSpec, want []*shoalv1.TensorSpec) error {
	for _, w := range want {
		i := slices.IndexFunc(have, func(s onnxrt.TensorSpec) bool { return s.Name == w.GetName() })
		if i < 0 {
			return fmt.Errorf("the model has no %s %q", kind, w.GetName())
		}
		h := have[i]
		if string(h.DataType) != w.GetDatatype() {
			return fmt.Errorf("%s %q is %s; the manifest says %s", kind, w.GetName(), h.DataType, w.GetDatatype())
		}
		if len(h.Shape) != len(w.GetShape()) {
			return fmt.Errorf("%s %q has shape %v; the manifest says %v", kind, w.GetName(), h.Shape, w.GetShape())
		}
		for d, wd := range w.GetShape() {
			if hd := h.Shape[d]; hd >= 0 && wd >= 0 && hd != wd {
				return fmt.Errorf("%s %q has shape %v; the manifest says %v", kind, w.GetName(), h.Shape, w.GetShape())
			}
		}
	}
	return nil
}
