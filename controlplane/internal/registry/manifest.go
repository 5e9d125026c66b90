package registry

import (
	"context"
	"errors"
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
	// HealthCheck tells agents when to report the version healthy once
	// active; nil leaves it to each agent's defaults.
	HealthCheck *shoalv1.HealthCheck
	// CaptureShare is the share (0 to 1) of successful predictions agents
	// capture for retraining; 0 captures none.
	CaptureShare float64
}

// Manifest issues a signed deployment manifest for name/version with the
// model's next release sequence, and returns the DSSE envelope (JSON, payload
// type trust.ManifestPayloadType, payload the manifest in protobuf JSON) and
// the manifest itself. The manifest carries the version's reference
// profile (SetReferenceProfile), if it has one. Errors: Invalid, NotFound,
// Conflict (the version failed validation).
func (r *Registry) Manifest(ctx context.Context, name, version string, opts ManifestOptions) ([]byte, *shoalv1.DeploymentManifest, error) {
	const op = "registry.Manifest"
	if opts.TTL < 0 {
		return nil, nil, shoalerr.E(shoalerr.Invalid, op, "manifest lifetime %s is negative; give a positive duration or 0 for the default (%s)", opts.TTL, DefaultManifestTTL)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultManifestTTL
	}
	if !(opts.CaptureShare >= 0 && opts.CaptureShare <= 1) {
		return nil, nil, shoalerr.E(shoalerr.Invalid, op, "capture share %g is not from 0 to 1; give the share of predictions to capture, such as 0.05", opts.CaptureShare)
	}
	mv, err := r.Get(ctx, name, version)
	if err != nil {
		return nil, nil, err
	}
	if err := mv.deployable(op); err != nil {
		return nil, nil, err
	}
	var (
		seq      uint64
		selfTest shoalv1.SelfTest
		profile  []byte
	)
	err = store.Retry(r.st, updateAttempts, func(tx store.Tx) error {
		raw, err := tx.Get(selfTestKey(mv.SHA256))
		if err != nil {
			return fmt.Errorf("read self-test of %s: %w", mv.SHA256, err)
		}
		if err := proto.Unmarshal(raw, &selfTest); err != nil {
			return fmt.Errorf("decode self-test of %s: %w", mv.SHA256, err)
		}
		// Stored encoded and checked (SetReferenceProfile): carried as is.
		profile, err = tx.Get(profileKey(name, version))
		if errors.Is(err, store.ErrNotFound) {
			profile, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("read reference profile of %s %s: %w", name, version, err)
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
		Profile:          opts.Profile,
		Inputs:           specsToProto(mv.Inputs),
		Outputs:          specsToProto(mv.Outputs),
		SelfTest:         &selfTest,
		ReleaseSequence:  seq,
		Rollback:         opts.Rollback,
		HealthCheck:      opts.HealthCheck,
		ReferenceProfile: profile,
		CaptureShare:     opts.CaptureShare,
		IssuedAtUnixMs:   issued.UnixMilli(),
		ExpiresAtUnixMs:  issued.Add(opts.TTL).UnixMilli(),
	}
	env, err := r.seal(m)
	if err != nil {
		return nil, nil, err
	}
	r.log.Info("manifest issued", "model", name, "version", version, "release_sequence", seq,
		"rollback", opts.Rollback, "profile", opts.Profile, "expires", issued.Add(opts.TTL).UTC().Format(time.RFC3339))
	return env, m, nil
}

// Reissue signs again a manifest this registry issued, so that a
// deployment outlives its manifest's expiry. The envelope must verify with
// the registry's own key. Every field of its manifest is kept (release
// sequence, artifact, self-test, rollback, profile...) except issued_at,
// set to now, and expires_at, set to now + ttl; a ttl of 0 keeps the
// manifest's own lifetime (expires_at − issued_at), or DefaultManifestTTL
// if it has none. It returns the new envelope and its manifest.
//
// An expired envelope is re-issued too: that is what a device offline for
// longer than the lifetime needs. Expiry is what stops a stale manifest
// replayed to a device, and Reissue makes any manifest it is given fresh
// again, so give it only manifests that are still the desired state
// (fleet.Service.Refresh does).
//
// Errors: Invalid (a negative ttl; an envelope that is not a deployment
// manifest signed with this registry's key, or whose payload cannot be
// kept whole).
func (r *Registry) Reissue(ctx context.Context, envelope []byte, ttl time.Duration) ([]byte, *shoalv1.DeploymentManifest, error) {
	const op = "registry.Reissue"
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if ttl < 0 {
		return nil, nil, shoalerr.E(shoalerr.Invalid, op, "manifest lifetime %s is negative; give a positive duration, or 0 to keep the manifest's own", ttl)
	}
	payload, err := r.own.OpenEnvelope(envelope, trust.ManifestPayloadType)
	if err != nil {
		return nil, nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "refusing to re-sign: not a deployment manifest signed with this control plane's key %s", r.signer.KeyID())
	}
	var m shoalv1.DeploymentManifest
	// Strict: a field this build does not know would be dropped from the
	// re-signed manifest, so such a manifest is refused rather than changed.
	if err := protojson.Unmarshal(payload, &m); err != nil {
		return nil, nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "refusing to re-sign: the signed payload is not a DeploymentManifest this control plane can keep whole")
	}
	if ttl == 0 {
		ttl = time.Duration(m.GetExpiresAtUnixMs()-m.GetIssuedAtUnixMs()) * time.Millisecond
		if m.GetExpiresAtUnixMs() <= 0 || m.GetIssuedAtUnixMs() <= 0 || ttl <= 0 {
			ttl = DefaultManifestTTL
		}
	}
	oldExpiry := m.GetExpiresAtUnixMs()
	issued := r.now()
	m.IssuedAtUnixMs = issued.UnixMilli()
	m.ExpiresAtUnixMs = issued.Add(ttl).UnixMilli()
	env, err := r.seal(&m)
	if err != nil {
		return nil, nil, err
	}
	r.log.Info("manifest re-issued", "model", m.GetModelName(), "version", m.GetModelVersion(), "release_sequence", m.GetReleaseSequence(),
		"previous_expiry", time.UnixMilli(oldExpiry).UTC().Format(time.RFC3339), "expires", issued.Add(ttl).UTC().Format(time.RFC3339))
	return env, &m, nil
}

// seal signs a manifest into a DSSE envelope: payload type
// trust.ManifestPayloadType, payload the manifest in protobuf JSON.
func (r *Registry) seal(m *shoalv1.DeploymentManifest) ([]byte, error) {
	payload, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("registry: encode manifest: %w", err)
	}
	return r.signer.SignEnvelope(trust.ManifestPayloadType, payload)
}

func specsToProto(specs []onnxrt.TensorSpec) []*shoalv1.TensorSpec {
	out := make([]*shoalv1.TensorSpec, len(specs))
	for i, s := range specs {
		out[i] = onnxrt.SpecToProto(s)
	}
	return out
}
