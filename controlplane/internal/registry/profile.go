package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// MaxProfileBytes bounds the encoded reference profile of a version. The
// manifest carries it base64-encoded in its JSON, which its DSSE envelope
// base64-encodes again: 2 MiB becomes about 3.6 MiB, under
// trust.MaxEnvelopeBytes (4 MiB) with room for the rest of the manifest.
// A 784-feature profile with 20 bins a feature encodes to about 180 KB.
const MaxProfileBytes = 2 << 20

// SetReferenceProfile stores the reference profile of name/version, made
// from its training data (DESIGN §7); manifests issued from then on carry
// it, so agents bin live data with its edges. It replaces a profile stored
// before. The profile's input and output tensors must be the version's:
// its input tensor one of the model's inputs (with as many features as the
// tensor's last dimension, when that is fixed), its output tensor one of
// the model's outputs. Errors: Invalid (bad name or version, an invalid
// profile, one that does not fit the model), TooLarge (over
// MaxProfileBytes), NotFound (no such version).
func (r *Registry) SetReferenceProfile(ctx context.Context, name, version string, profile *shoalv1.ReferenceProfile) error {
	const op = "registry.SetReferenceProfile"
	mv, err := r.Get(ctx, name, version)
	if err != nil {
		return err
	}
	if profile == nil {
		return shoalerr.E(shoalerr.Invalid, op, "reference profile of %s %s is missing", name, version)
	}
	b, err := datastats.EncodeProfile(profile)
	if err != nil {
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "reference profile of %s %s refused", name, version)
	}
	if len(b) > MaxProfileBytes {
		return shoalerr.E(shoalerr.TooLarge, op, "reference profile of %s %s encodes to %d bytes; the limit is %d so that the manifest fits its %d-byte envelope (profile fewer features or fewer bins)",
			name, version, len(b), MaxProfileBytes, trust.MaxEnvelopeBytes)
	}
	if err := profileFits(mv, profile); err != nil {
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "reference profile does not fit model %s version %s", name, version)
	}
	err = store.Retry(r.st, updateAttempts, func(tx store.Tx) error {
		if _, err := tx.Get(versionKey(name, version)); err != nil {
			return err
		}
		return tx.Set(profileKey(name, version), b)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound(op, name, version)
	case err != nil:
		return fmt.Errorf("registry: store reference profile of %s %s: %w", name, version, err)
	}
	r.log.Info("reference profile stored", "model", name, "version", version, "bytes", len(b),
		"inputs", len(profile.GetInputs()), "outputs", len(profile.GetOutputs()), "rows", profile.GetRows())
	return nil
}

// ReferenceProfile returns the reference profile of name/version, and
// false if it has none. Errors: Invalid (bad name or version), NotFound (no
// such version).
func (r *Registry) ReferenceProfile(ctx context.Context, name, version string) (*shoalv1.ReferenceProfile, bool, error) {
	if _, err := r.Get(ctx, name, version); err != nil {
		return nil, false, err
	}
	var b []byte
	err := r.st.View(func(tx store.Tx) error {
		var err error
		b, err = tx.Get(profileKey(name, version))
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("registry: read reference profile of %s %s: %w", name, version, err)
	}
	p, err := datastats.DecodeProfile(b)
	if err != nil {
		return nil, false, fmt.Errorf("registry: stored reference profile of %s %s: %w", name, version, err)
	}
	return p, true, nil
}

// profileFits checks the profile's tensors against the model's.
func profileFits(mv ModelVersion, p *shoalv1.ReferenceProfile) error {
	if len(p.GetInputs()) > 0 {
		spec, ok := findSpec(mv.Inputs, p.GetInputName())
		if !ok {
			return fmt.Errorf("its input tensor %q is not an input of the model (%s)", p.GetInputName(), specNames(mv.Inputs))
		}
		if n := len(spec.Shape); n >= 2 && spec.Shape[n-1] > 0 && spec.Shape[n-1] != int64(len(p.GetInputs())) {
			return fmt.Errorf("it profiles %d input features but input %q has %d (shape %v)", len(p.GetInputs()), spec.Name, spec.Shape[n-1], spec.Shape)
		}
	}
	if len(p.GetOutputs()) > 0 {
		if _, ok := findSpec(mv.Outputs, p.GetOutputName()); !ok {
			return fmt.Errorf("its output tensor %q is not an output of the model (%s)", p.GetOutputName(), specNames(mv.Outputs))
		}
	}
	return nil
}

func findSpec(specs []onnxrt.TensorSpec, name string) (onnxrt.TensorSpec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return onnxrt.TensorSpec{}, false
}

func specNames(specs []onnxrt.TensorSpec) string {
	s := ""
	for i, sp := range specs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", sp.Name)
	}
	if s == "" {
		return "none"
	}
	return s
}
