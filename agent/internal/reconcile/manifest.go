package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/modelstore"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Bounds on what the reconciler accepts; anything larger is rejected with
// an error saying which bound it broke.
const (
	// MaxDesiredBytes bounds a DesiredState payload.
	MaxDesiredBytes = 16 << 20
	// MaxDeployments bounds the deployments in one desired state.
	MaxDeployments = 64
	// MaxURLLen bounds an artifact URL.
	MaxURLLen = 2048
	// MaxVersionLen bounds a model version string.
	MaxVersionLen = 128
)

// SchemaVersion is the only schema version of DesiredState and
// DeploymentManifest this agent understands.
const SchemaVersion = 1

// decodeDesired parses a DesiredState payload. An empty payload (the
// retained message was cleared) means nothing is desired.
func decodeDesired(payload []byte) (*shoalv1.DesiredState, error) {
	if len(payload) == 0 {
		return &shoalv1.DesiredState{SchemaVersion: SchemaVersion}, nil
	}
	if len(payload) > MaxDesiredBytes {
		return nil, fmt.Errorf("desired state is %d bytes; the limit is %d", len(payload), MaxDesiredBytes)
	}
	var ds shoalv1.DesiredState
	if err := proto.Unmarshal(payload, &ds); err != nil {
		return nil, fmt.Errorf("desired state is not a shoal.v1.DesiredState: %w", err)
	}
	if ds.GetSchemaVersion() != SchemaVersion {
		return nil, fmt.Errorf("desired state has schema_version %d; this agent understands %d (upgrade the agent)", ds.GetSchemaVersion(), SchemaVersion)
	}
	if n := len(ds.GetDeployments()); n > MaxDeployments {
		return nil, fmt.Errorf("desired state has %d deployments; the limit is %d", n, MaxDeployments)
	}
	return &ds, nil
}

// manifest is a verified, validated deployment manifest.
type manifest struct {
	*shoalv1.DeploymentManifest
	// digest is the hex SHA-256 of the envelope: it identifies this exact
	// signed statement, so a failure is remembered per statement.
	digest string
	// unknownFields is set when the manifest had fields this agent does
	// not know (and ignored).
	unknownFields bool
}

func (m *manifest) ref() modelstore.Ref {
	return modelstore.Ref{
		Name:            m.GetModelName(),
		Version:         m.GetModelVersion(),
		SHA256:          m.GetArtifact().GetSha256(),
		ReleaseSequence: m.GetReleaseSequence(),
	}
}

// openManifest verifies a DSSE envelope with the pinned key and parses and
// validates the manifest in it. It does not check expiry or sequence: those
// depend on the device's state and are checked only when the manifest
// would change what runs.
//
// Unknown JSON fields: the manifest is first parsed strictly; if that fails
// only because of fields this agent does not know, it is parsed again
// ignoring them. The signature already proves the control plane wrote
// them, and a newer control plane adding an optional field must not strand
// a fleet of older agents that are offline for weeks; a change older
// agents must not ignore bumps schema_version instead, which is checked
// strictly.
func openManifest(v *trust.Verifier, env []byte, profile string) (*manifest, error) {
	payload, err := v.OpenEnvelope(env, trust.ManifestPayloadType)
	if err != nil {
		if errors.Is(err, trust.ErrBadSignature) {
			return nil, errors.New("manifest signature does not verify with the pinned key")
		}
		return nil, fmt.Errorf("manifest envelope: %w", err)
	}
	sum := sha256.Sum256(env)
	m := &manifest{DeploymentManifest: &shoalv1.DeploymentManifest{}, digest: hex.EncodeToString(sum[:])}
	if err := protojson.Unmarshal(payload, m.DeploymentManifest); err != nil {
		m.DeploymentManifest = &shoalv1.DeploymentManifest{}
		if lerr := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(payload, m.DeploymentManifest); lerr != nil {
			return nil, fmt.Errorf("manifest is not a shoal.v1.DeploymentManifest in protobuf JSON: %w", lerr)
		}
		m.unknownFields = true
	}
	if err := validateManifest(m.DeploymentManifest, profile); err != nil {
		return nil, err
	}
	return m, nil
}

func validateManifest(m *shoalv1.DeploymentManifest, profile string) error {
	if m.GetSchemaVersion() != SchemaVersion {
		return fmt.Errorf("manifest has schema_version %d; this agent understands %d (upgrade the agent)", m.GetSchemaVersion(), SchemaVersion)
	}
	name := m.GetModelName()
	if err := modelstore.ValidateName(name); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := validateVersion(m.GetModelVersion()); err != nil {
		return fmt.Errorf("manifest of %s: %w", name, err)
	}
	a := m.GetArtifact()
	if a == nil {
		return fmt.Errorf("manifest of %s has no artifact", name)
	}
	if err := modelstore.ValidateDigest(a.GetSha256()); err != nil {
		return fmt.Errorf("manifest of %s: artifact %w", name, err)
	}
	if a.GetSize() <= 0 || a.GetSize() > onnxrt.MaxModelBytes {
		return fmt.Errorf("manifest of %s: artifact size %d is outside 1..%d bytes", name, a.GetSize(), onnxrt.MaxModelBytes)
	}
	if a.GetUrl() == "" {
		return fmt.Errorf("manifest of %s: artifact has no url", name)
	}
	if len(a.GetUrl()) > MaxURLLen {
		return fmt.Errorf("manifest of %s: artifact url is %d characters; the limit is %d", name, len(a.GetUrl()), MaxURLLen)
	}
	if a.GetSignature() == "" {
		return fmt.Errorf("manifest of %s: artifact has no signature", name)
	}
	if p := m.GetProfile(); p != "" && p != profile {
		return fmt.Errorf("manifest of %s is for firmware profile %q; this device's profile is %q", name, p, profile)
	}
	if len(m.GetSelfTest().GetExpectedOutputs()) == 0 {
		return fmt.Errorf("manifest of %s carries no self-test; the agent activates only models it has tested", name)
	}
	return nil
}

func validateVersion(v string) error { return names.Check("model version", v) }

// checkFresh rejects a manifest that has no expiry or has expired (freeze
// attacks: an old, validly signed manifest replayed to hold a device back).
func checkFresh(m *shoalv1.DeploymentManifest, now time.Time) error {
	exp := m.GetExpiresAtUnixMs()
	if exp <= 0 {
		return fmt.Errorf("manifest of %s %s has no expiry (expires_at_unix_ms is %d); refusing it", m.GetModelName(), m.GetModelVersion(), exp)
	}
	if at := time.UnixMilli(exp); !now.Before(at) {
		return fmt.Errorf("manifest of %s %s expired at %s (now %s); the control plane must sign a fresh one",
			m.GetModelName(), m.GetModelVersion(), at.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// resolveURL resolves an artifact URL against the control plane's URL.
func resolveURL(server *url.URL, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("artifact url %q: %w", raw, err)
	}
	if !u.IsAbs() {
		if server == nil {
			return "", fmt.Errorf("artifact url %q is relative and no server URL is configured", raw)
		}
		u = server.ResolveReference(u)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("artifact url %q: scheme %q is not http or https", raw, u.Scheme)
	}
	return u.String(), nil
}
