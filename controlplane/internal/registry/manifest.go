package registry

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// DefaultManifestTTL is how long a manifest stays valid unless
// ManifestOptions.TTL says otherwise. Agents refuse expired manifests
// (freeze attacks), so a deployment must be re-issued within this time.
const DefaultManifestTTL = 30 * 24 * time.Hour

// ManifestSchemaVersion is the DeploymentManifest schema the registry issues.
const ManifestSchemaVersion = 1

// ManifestOptions tune a deployment manifest.
type ManifestOptions struct {
	Profile  string        // firmware profile the artifact is for; "" for any
	Rollback bool          // the manifest deliberately goes back to an older version
	TTL      time.Duration // validity; 0 means DefaultManifestTTL
}

// Manifest issues a signed deployment manifest for name/version with the
// model's next release sequence, and returns the DSSE envelope (JSON, payload
// type trust.ManifestPayloadType, payload the manifest in protobuf JSON) and
// the manifest itself. Errors: Invalid, NotFound.
func (r *Registry) Manifest(ctx context.Context, name, version string, opts ManifestOptions) ([]byte, *shoalv1.DeploymentManifest, error) {
	const op = "registry.Manifest"
	if opts.TTL < 0 {
		return nil, nil, shoalerr.E(shoalerr.Invalid, op, "manifest lifetime %s is negative; give a positive duration or 0 for the default (%s)", opts.TTL, DefaultManifestTTL)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultManifestTTL
	}
	mv, err := r.Get(ctx, name, version)
	if err != nil {
		return nil, nil, err
	}
	var (
		seq      uint64
		selfTest shoalv1.SelfTest
	)
	err = store.Retry(r.st, updateAttempts, func(tx store.Tx) error {
		raw, err := tx.Get(selfTestKey(mv.SHA256))
		if err != nil {
			return fmt.Errorf("read self-test of %s: %w", mv.SHA256, err)
		}
		if err := proto.Unmarshal(raw, &selfTest); err != nil {
			return fmt.Errorf("decode self-test of %s: %w", mv.SHA256, err)
		}
		seq, err = nextCounter(tx, []byte(releasePrefix+name))
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("registry: allocate release sequence for %s: %w", name, err)
	}
	issued := r.now()
	m := &shoalv1.DeploymentManifest{
		SchemaVersion: ManifestSchemaVersion,
		ModelName:     mv.Name,
		ModelVersion:  mv.Version,
		Artifact: &shoalv1.Artifact{
			Sha256:    mv.SHA256,
			Size:      mv.Size,
			Url:       mv.ArtifactURL,
			Signature: mv.Signature,
			MediaType: MediaType,
		},
		Profile:         opts.Profile,
		Inputs:          specsToProto(mv.Inputs),
		Outputs:         specsToProto(mv.Outputs),
		SelfTest:        &selfTest,
		ReleaseSequence: seq,
		Rollback:        opts.Rollback,
		IssuedAtUnixMs:  issued.UnixMilli(),
		ExpiresAtUnixMs: issued.Add(opts.TTL).UnixMilli(),
	}
	payload, err := protojson.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: encode manifest: %w", err)
	}
	env, err := r.signer.SignEnvelope(trust.ManifestPayloadType, payload)
	if err != nil {
		return nil, nil, err
	}
	r.log.Info("manifest issued", "model", name, "version", version, "release_sequence", seq,
		"rollback", opts.Rollback, "profile", opts.Profile, "expires", issued.Add(opts.TTL).UTC().Format(time.RFC3339))
	return env, m, nil
}

func specsToProto(specs []onnxrt.TensorSpec) []*shoalv1.TensorSpec {
	out := make([]*shoalv1.TensorSpec, len(specs))
	for i, s := range specs {
		out[i] = onnxrt.SpecToProto(s)
	}
	return out
}
