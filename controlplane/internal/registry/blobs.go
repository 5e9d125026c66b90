package registry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// blobDir holds content-addressed blobs in dir/sha256/{hex} and uploads in
// progress in dir/tmp.
type blobDir struct{ dir string }

func openBlobDir(dir string) (blobDir, error) {
	b := blobDir{dir: dir}
	if err := os.MkdirAll(b.final(), 0o755); err != nil {
		return blobDir{}, fmt.Errorf("registry: create artifact directory: %w", err)
	}
	// Uploads interrupted by a crash leave temp files; none can be in use now.
	if err := os.RemoveAll(b.tmp()); err != nil {
		return blobDir{}, fmt.Errorf("registry: clear interrupted uploads: %w", err)
	}
	if err := os.MkdirAll(b.tmp(), 0o755); err != nil {
		return blobDir{}, fmt.Errorf("registry: create upload directory: %w", err)
	}
	return b, nil
}

func (b blobDir) final() string { return filepath.Join(b.dir, "sha256") }
func (b blobDir) tmp() string   { return filepath.Join(b.dir, "tmp") }

func (b blobDir) path(sha string) string { return filepath.Join(b.final(), sha) }

// create returns a new temporary file for an upload.
func (b blobDir) create() (*os.File, error) {
	f, err := os.CreateTemp(b.tmp(), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("registry: create upload file: %w", err)
	}
	return f, nil
}

// commit moves the temporary file at tmp to the blob for sha, or removes it
// if that blob is already stored (same digest, same bytes).
func (b blobDir) commit(tmp, sha string) error {
	dst := b.path(sha)
	if _, err := os.Stat(dst); err == nil {
		return os.Remove(tmp)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("registry: store artifact %s: %w", sha, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("registry: store artifact %s: %w", sha, err)
	}
	return syncDir(b.final())
}

// open opens the blob for sha. Errors: Invalid, NotFound.
func (b blobDir) open(sha string) (*os.File, error) {
	const op = "registry.OpenArtifact"
	if !isDigest(sha) {
		return nil, shoalerr.E(shoalerr.Invalid, op, "artifact digest %.80q is not 64 lower-case hex characters (a SHA-256)", sha)
	}
	f, err := os.Open(b.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, shoalerr.E(shoalerr.NotFound, op, "no artifact has SHA-256 %s", sha)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: open artifact %s: %w", sha, err)
	}
	return f, nil
}

func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("registry: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("registry: sync %s: %w", dir, err)
	}
	return nil
}

// writeTracker remembers a write error so a failed copy can be blamed on
// the disk rather than on the upload.
type writeTracker struct {
	w   io.Writer
	err error
}

func (t *writeTracker) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil {
		t.err = err
	}
	return n, err
}
