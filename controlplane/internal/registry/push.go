package registry

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/blobstore"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Push stores the model read from r as name/version. It streams r to a
// temporary file while hashing it, loads it with ONNX Runtime, records its
// inputs, outputs and a self-test, signs it and stores it content-addressed.
//
// Pushing the identical bytes again returns the stored version with
// created=false. Errors: Invalid (bad name or version, unreadable upload, not
// a loadable ONNX model, no self-test possible), TooLarge, Conflict (the
// version holds different bytes). On error nothing is stored and no file is
// left behind.
func (r *Registry) Push(ctx context.Context, name, version string, body io.Reader) (ModelVersion, bool, error) {
	return r.PushValidated(ctx, name, version, body, nil)
}

// PushValidated is Push for a model a training job validated: the report
// is stored with the version, and a version whose report failed is kept
// but not signed, so that Manifest and Signature refuse it. A nil report
// is Push. Re-pushing identical bytes returns the stored version as it
// is, report and all.
func (r *Registry) PushValidated(ctx context.Context, name, version string, body io.Reader, rep *validation.Report) (ModelVersion, bool, error) {
	const op = "registry.Push"
	if err := validateNameVersion(name, version); err != nil {
		return ModelVersion{}, false, err
	}
	tmp, sum, size, err := r.receive(ctx, name, version, body)
	if err != nil {
		return ModelVersion{}, false, err
	}
	defer os.Remove(tmp) // a no-op once committed
	sha := hex.EncodeToString(sum[:])

	// The cheap check first: a re-push or a conflict needs no ONNX Runtime.
	if mv, done, err := r.existing(name, version, sha); done || err != nil {
		return mv, false, err
	}

	data, err := os.ReadFile(tmp)
	if err != nil {
		return ModelVersion{}, false, fmt.Errorf("registry: read upload back: %w", err)
	}
	inputs, outputs, selfTest, err := inspect(data, binary.BigEndian.Uint64(sum[:8]))
	if err != nil {
		return ModelVersion{}, false, modelRefused(op, name, version, err)
	}
	var sig, keyID string
	if rep == nil || rep.Passed() {
		if sig, err = r.signer.SignBlob(bytes.NewReader(data)); err != nil {
			return ModelVersion{}, false, err
		}
		keyID = r.signer.KeyID()
	}
	stBytes, err := proto.Marshal(selfTest)
	if err != nil {
		return ModelVersion{}, false, fmt.Errorf("registry: encode self-test: %w", err)
	}
	if err := r.blobs.Commit(tmp, sha); err != nil {
		return ModelVersion{}, false, err
	}

	mv := ModelVersion{
		Name: name, Version: version, SHA256: sha, Size: size,
		CreatedAt:   r.now().UTC(),
		ArtifactURL: ArtifactURL(sha),
		Signature:   sig, KeyID: keyID,
		Inputs: inputs, Outputs: outputs,
		Validation: rep,
	}
	var (
		stored  ModelVersion
		created bool
	)
	err = store.Retry(r.st, updateAttempts, func(tx store.Tx) error {
		prev, err := getRecord(tx, name, version)
		switch {
		case err == nil:
			// Another push of this version won the race.
			stored, created = prev.ModelVersion, false
			return conflictIfDiffers(prev.ModelVersion, sha)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		ord, err := nextCounter(tx, []byte(ordinalPrefix+name))
		if err != nil {
			return err
		}
		if err := tx.Set(selfTestKey(sha), stBytes); err != nil {
			return err
		}
		stored, created = mv, true
		return putRecord(tx, record{ModelVersion: mv, Ordinal: ord})
	})
	if err != nil {
		if shoalerr.Is(err, shoalerr.Conflict) {
			return ModelVersion{}, false, err
		}
		return ModelVersion{}, false, fmt.Errorf("registry: store %s %s: %w", name, version, err)
	}
	if created {
		r.log.Info("model version stored", "model", name, "version", version, "sha256", sha, "size", size,
			"inputs", len(inputs), "outputs", len(outputs), "validation", mv.ValidationStatus())
	}
	return stored, created, nil
}

// receive copies body into a temporary file, hashing it, and returns the
// file's path. On error the file is removed.
func (r *Registry) receive(ctx context.Context, name, version string, body io.Reader) (path string, sum [32]byte, size int64, err error) {
	const op = "registry.Push"
	u, err := r.blobs.Receive(ctx, body, r.maxBytes)
	var re *blobstore.ReadError
	switch {
	case errors.As(err, &re):
		return "", sum, 0, shoalerr.Wrap(re.Err, shoalerr.Invalid, op, "reading the upload of model %s version %s failed; send the file again", name, version)
	case errors.Is(err, blobstore.ErrTooLarge):
		return "", sum, 0, shoalerr.E(shoalerr.TooLarge, op, "model %s version %s is larger than the %d-byte limit", name, version, r.maxBytes)
	case errors.Is(err, blobstore.ErrEmpty):
		return "", sum, 0, shoalerr.E(shoalerr.Invalid, op, "the upload of model %s version %s is empty; send the .onnx file as the request body", name, version)
	case err != nil:
		return "", sum, 0, fmt.Errorf("registry: upload of %s %s: %w", name, version, err)
	}
	if _, err := hex.Decode(sum[:], []byte(u.SHA256)); err != nil {
		os.Remove(u.Path)
		return "", sum, 0, fmt.Errorf("registry: digest of upload: %w", err)
	}
	return u.Path, sum, u.Size, nil
}

// existing reports whether name/version is already stored: done with the
// stored version if its bytes are sha, or done with a Conflict if not.
func (r *Registry) existing(name, version, sha string) (ModelVersion, bool, error) {
	rec, err := r.viewRecord(name, version)
	if errors.Is(err, store.ErrNotFound) {
		return ModelVersion{}, false, nil
	}
	if err != nil {
		return ModelVersion{}, true, err
	}
	if err := conflictIfDiffers(rec.ModelVersion, sha); err != nil {
		return ModelVersion{}, true, err
	}
	return rec.ModelVersion, true, nil
}

func conflictIfDiffers(mv ModelVersion, sha string) error {
	if mv.SHA256 == sha {
		return nil
	}
	return shoalerr.E(shoalerr.Conflict, "registry.Push",
		"model %s version %s is already stored with different bytes (sha256 %s; this upload is %s); versions are immutable, push under a new version",
		mv.Name, mv.Version, mv.SHA256, sha)
}

// inspect loads the model with ONNX Runtime and makes its self-test.
func inspect(data []byte, seed uint64) (inputs, outputs []onnxrt.TensorSpec, st *shoalv1.SelfTest, err error) {
	s, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		return nil, nil, nil, err
	}
	defer s.Close()
	st, err = onnxrt.MakeSelfTest(s, seed)
	if err != nil {
		return nil, nil, nil, &selfTestError{err}
	}
	return s.Inputs(), s.Outputs(), st, nil
}

// selfTestError marks a model that loads but cannot be self-tested.
type selfTestError struct{ err error }

func (e *selfTestError) Error() string { return e.err.Error() }
func (e *selfTestError) Unwrap() error { return e.err }

// modelRefused turns an inspection failure into the error the user sees.
func modelRefused(op, name, version string, err error) error {
	var me *onnxrt.ModelError
	var le *onnxrt.LocaleError
	var se *selfTestError
	switch {
	case errors.As(err, &le):
		// The model may be fine; this machine cannot run it to build its
		// self-test. The message names the locale and the ways out.
		return shoalerr.Wrap(le, shoalerr.Invalid, op, "model %s version %s cannot be checked on this control plane", name, version)
	case errors.As(err, &me):
		return shoalerr.Wrap(me.Err, shoalerr.Invalid, op,
			"model file is not a loadable ONNX model (upload the .onnx file your framework exported as %s version %s)", name, version)
	case errors.As(err, &se):
		return shoalerr.Wrap(se.err, shoalerr.Invalid, op,
			"model %s version %s loads, but Shoal cannot run it on sample inputs to build the self-test agents check (export it with tensor inputs of supported types, e.g. FP32)", name, version)
	}
	// ONNX Runtime itself is missing or broken: not the uploader's fault.
	return shoalerr.Wrap(err, shoalerr.Unavailable, op, "cannot check model %s version %s with ONNX Runtime", name, version)
}
