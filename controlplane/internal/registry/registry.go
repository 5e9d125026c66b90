// Package registry keeps model versions: it checks each upload with ONNX
// Runtime, stores the ONNX file once as a content-addressed blob, signs it in
// cosign's blob format, records a self-test the agents must reproduce, and
// issues signed deployment manifests (DSSE) with a release sequence per model.
//
// Its records live in the control plane's store under keys prefixed
// "registry/"; its blobs live in blobDir/sha256/{hex}.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/blobstore"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
)

// DefaultMaxBytes bounds an uploaded model unless WithMaxBytes says otherwise.
const DefaultMaxBytes = onnxrt.MaxModelBytes

// MediaType is the media type of every artifact the registry holds.
const MediaType = "application/vnd.onnx"

// maxNameLen bounds model names and versions.
const maxNameLen = 128

// updateAttempts is how often a transaction is retried on a write conflict.
const updateAttempts = 16

// ModelVersion is one stored version of a model (JSON as in docs/API.md).
type ModelVersion struct {
	Name        string              `json:"name"`
	Version     string              `json:"version"`
	SHA256      string              `json:"sha256"`
	Size        int64               `json:"size"`
	CreatedAt   time.Time           `json:"created_at"`
	ArtifactURL string              `json:"artifact_url"`
	Signature   string              `json:"signature"`
	KeyID       string              `json:"key_id"`
	Inputs      []onnxrt.TensorSpec `json:"inputs"`
	Outputs     []onnxrt.TensorSpec `json:"outputs"`
	// Validation is the verdict of a training job's gates; nil for a
	// version pushed by hand, which is signed and deployable as pushed.
	// A version that failed has no Signature and cannot be deployed.
	Validation *validation.Report `json:"validation,omitempty"`
}

// ValidationStatus is "" for a version pushed by hand, else "passed" or
// "failed".
func (mv ModelVersion) ValidationStatus() validation.Status {
	if mv.Validation == nil {
		return ""
	}
	return mv.Validation.Status
}

// deployable refuses a version that failed validation. Errors: Conflict.
func (mv ModelVersion) deployable(op string) error {
	if mv.Validation == nil || mv.Validation.Passed() {
		return nil
	}
	return shoalerr.E(shoalerr.Conflict, op, "version %s of %s failed validation: %s; it cannot be deployed (train again, or push a version by hand)",
		mv.Version, mv.Name, mv.Validation.Summary())
}

// Model summarises the versions of one model, as the API lists it.
// Versions are in push order; Latest is the one pushed last.
type Model = apiv1.ModelSummary

// ArtifactURL returns the path agents fetch an artifact from.
func ArtifactURL(sha256Hex string) string { return "/v1/artifacts/" + sha256Hex }

// Registry stores model versions. Its methods are safe for concurrent use.
type Registry struct {
	st       store.Store
	blobs    blobstore.Dir
	signer   *trust.Signer
	own      *trust.Verifier // signer's public key: Reissue re-signs only what it signed
	log      *slog.Logger
	now      func() time.Time
	maxBytes int64
}

// Option adjusts a Registry.
type Option func(*Registry)

// WithMaxBytes bounds the size of an uploaded model (default DefaultMaxBytes).
func WithMaxBytes(n int64) Option { return func(r *Registry) { r.maxBytes = n } }

// New returns a Registry keeping its records in st and its blobs under
// blobDir (created if missing). Temporary files left in blobDir by an
// interrupted upload are removed. ONNX Runtime must be loadable
// (onnxrt.Init) for Push to work.
func New(st store.Store, blobDir string, signer *trust.Signer, log *slog.Logger, now func() time.Time, opts ...Option) (*Registry, error) {
	if st == nil || signer == nil || log == nil {
		return nil, errors.New("registry.New: store, signer and logger are required")
	}
	if now == nil {
		now = time.Now
	}
	own, err := trust.NewVerifier(signer.PublicKeyPEM())
	if err != nil {
		return nil, fmt.Errorf("registry.New: %w", err)
	}
	b, err := blobstore.Open(blobDir, "artifact")
	if err != nil {
		return nil, err
	}
	r := &Registry{st: st, blobs: b, signer: signer, own: own, log: log, now: now, maxBytes: DefaultMaxBytes}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// ValidateName checks a model name or version (names.Check): the error is
// Invalid. field names what is checked ("model name", "version").
func ValidateName(field, s string) error {
	if err := names.Check(field, s); err != nil {
		return shoalerr.E(shoalerr.Invalid, "registry.ValidateName", "%v", err)
	}
	return nil
}

func validateNameVersion(name, version string) error {
	if err := ValidateName("model name", name); err != nil {
		return err
	}
	return ValidateName("version", version)
}

// Get returns one version. Errors: Invalid (bad name or version), NotFound.
func (r *Registry) Get(ctx context.Context, name, version string) (ModelVersion, error) {
	if err := validateNameVersion(name, version); err != nil {
		return ModelVersion{}, err
	}
	if err := ctx.Err(); err != nil {
		return ModelVersion{}, err
	}
	rec, err := r.viewRecord(name, version)
	if errors.Is(err, store.ErrNotFound) {
		return ModelVersion{}, notFound("registry.Get", name, version)
	}
	if err != nil {
		return ModelVersion{}, err
	}
	return rec.ModelVersion, nil
}

// viewRecord reads one version's record in a transaction of its own.
// Errors: store.ErrNotFound, or the read error wrapped with name and
// version.
func (r *Registry) viewRecord(name, version string) (record, error) {
	var rec record
	err := r.st.View(func(tx store.Tx) error {
		var err error
		rec, err = getRecord(tx, name, version)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return record{}, fmt.Errorf("registry: read %s %s: %w", name, version, err)
	}
	return rec, err
}

// Signature returns the artifact's cosign blob signature (base64) of one
// version. Errors as Get, and Conflict for a version that failed
// validation (it was never signed).
func (r *Registry) Signature(ctx context.Context, name, version string) (string, error) {
	mv, err := r.Get(ctx, name, version)
	if err != nil {
		return "", err
	}
	if err := mv.deployable("registry.Signature"); err != nil {
		return "", err
	}
	return mv.Signature, nil
}

// Versions returns every version of a model in push order. Errors: Invalid,
// NotFound (no version of that model is stored).
func (r *Registry) Versions(ctx context.Context, name string) ([]ModelVersion, error) {
	if err := ValidateName("model name", name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var recs []record
	err := r.st.View(func(tx store.Tx) error {
		return tx.Scan(modelPrefix(name), func(_, v []byte) error {
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list versions of %s: %w", name, err)
	}
	if len(recs) == 0 {
		return nil, shoalerr.E(shoalerr.NotFound, "registry.Versions", "model %q has no versions; push one with PUT /api/v1/models/%s/versions/{version}", name, name)
	}
	sortRecords(recs)
	out := make([]ModelVersion, len(recs))
	for i, rec := range recs {
		out[i] = rec.ModelVersion
	}
	return out, nil
}

// List returns every model, sorted by name.
func (r *Registry) List(ctx context.Context) ([]Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	byName := map[string][]record{}
	err := r.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(versionPrefix), func(_, v []byte) error {
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			byName[rec.Name] = append(byName[rec.Name], rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list models: %w", err)
	}
	models := make([]Model, 0, len(byName))
	for name, recs := range byName {
		sortRecords(recs)
		m := Model{Name: name}
		for _, rec := range recs {
			m.Versions = append(m.Versions, rec.Version)
			if rec.CreatedAt.After(m.UpdatedAt) {
				m.UpdatedAt = rec.CreatedAt
			}
		}
		m.Latest = m.Versions[len(m.Versions)-1]
		models = append(models, m)
	}
	slices.SortFunc(models, func(a, b Model) int { return strings.Compare(a.Name, b.Name) })
	return models, nil
}

// OpenArtifact opens the blob with the given SHA-256 (64 lower-case hex
// characters). Errors: Invalid (not a digest), NotFound.
func (r *Registry) OpenArtifact(sha256Hex string) (*os.File, error) {
	return r.blobs.Open("registry.OpenArtifact", sha256Hex)
}

func notFound(op, name, version string) error {
	return shoalerr.E(shoalerr.NotFound, op, "model %q has no version %q; list its versions with GET /api/v1/models/%s", name, version, name)
}

func sortRecords(recs []record) {
	slices.SortFunc(recs, func(a, b record) int {
		if a.Ordinal != b.Ordinal {
			if a.Ordinal < b.Ordinal {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Version, b.Version)
	})
}

// decodeRecord is here rather than in keys.go so the JSON shape sits next to
// the type it stores.
func decodeRecord(v []byte) (record, error) {
	var rec record
	if err := json.Unmarshal(v, &rec); err != nil {
		return record{}, fmt.Errorf("decode version record: %w", err)
	}
	return rec, nil
}
