package datastats

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Bounds on a ReferenceProfile. DecodeProfile and ValidateProfile refuse a
// profile over any of them, saying which.
const (
	// MaxProfileBytes bounds an encoded profile. It travels base64-encoded
	// in the manifest's JSON, itself base64-encoded in its DSSE envelope:
	// 8 MiB becomes about 14.2 MiB, under the agent's 16 MiB bound on a
	// desired state.
	MaxProfileBytes = 8 << 20
	// MaxFeatures bounds the inputs of a profile, and its outputs.
	MaxFeatures = 10_000
	// MaxBins bounds the bins of one feature: its edges plus one, or its
	// classes.
	MaxBins = 1_000
	// MaxTotalBins bounds the bins of all of a profile's features
	// together; an Accumulator holds 8 bytes per bin (8 MiB at most).
	MaxTotalBins = 1 << 20
	// MaxNameLen bounds the names of a profile: tensors and features.
	MaxNameLen = 256
)

// EncodeProfile validates p (see ValidateProfile) and returns its protobuf
// encoding, deterministic for a given p, for
// DeploymentManifest.reference_profile. It returns an error if p is
// invalid or encodes to more than MaxProfileBytes.
func EncodeProfile(p *shoalv1.ReferenceProfile) ([]byte, error) {
	if err := ValidateProfile(p); err != nil {
		return nil, err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encoding the reference profile: %w", err)
	}
	if len(b) > MaxProfileBytes {
		return nil, fmt.Errorf("reference profile encodes to %d bytes; the limit is %d (profile fewer features or fewer bins)", len(b), MaxProfileBytes)
	}
	return b, nil
}

// DecodeProfile decodes a ReferenceProfile from bytes from outside the
// process (a manifest's reference_profile) and validates it as
// ValidateProfile does. It counts the features before decoding them, so
// that whatever b holds the decoder allocates in proportion to its length.
// It returns an error naming what is wrong: the size, the encoding, or the
// field at fault.
func DecodeProfile(b []byte) (*shoalv1.ReferenceProfile, error) {
	if len(b) > MaxProfileBytes {
		return nil, fmt.Errorf("reference profile is %d bytes; the limit is %d", len(b), MaxProfileBytes)
	}
	if err := countFeatures(b); err != nil {
		return nil, err
	}
	p := new(shoalv1.ReferenceProfile)
	if err := proto.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("reference profile is not a shoal.v1.ReferenceProfile: %w", err)
	}
	if err := ValidateProfile(p); err != nil {
		return nil, err
	}
	return p, nil
}

// The field numbers of ReferenceProfile's inputs and outputs.
var (
	profileFields = (*shoalv1.ReferenceProfile)(nil).ProtoReflect().Descriptor().Fields()
	inputsField   = profileFields.ByName("inputs").Number()
	outputsField  = profileFields.ByName("outputs").Number()
)

// countFeatures returns an error if the encoded ReferenceProfile b has
// more than MaxFeatures inputs or outputs. Each costs a message of about
// 200 bytes in memory but can be as short as 2 bytes on the wire: counted
// after decoding, a few MiB of empty features would have cost hundreds.
func countFeatures(b []byte) error {
	var inputs, outputs int
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("reference profile is not a shoal.v1.ReferenceProfile: %w", protowire.ParseError(n))
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("reference profile is not a shoal.v1.ReferenceProfile: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case inputsField:
			if inputs++; inputs > MaxFeatures {
				return fmt.Errorf("reference profile has more than %d inputs, the limit", MaxFeatures)
			}
		case outputsField:
			if outputs++; outputs > MaxFeatures {
				return fmt.Errorf("reference profile has more than %d outputs, the limit", MaxFeatures)
			}
		}
	}
	return nil
}
