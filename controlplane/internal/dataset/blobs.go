package dataset

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// blobDir holds the CSVs, content-addressed, in dir/sha256/{hex}, and
// uploads in progress in dir/tmp (as the registry keeps its artifacts).
type blobDir struct{ dir string }

func openBlobDir(dir string) (blobDir, error) {
	b := blobDir{dir: dir}
	if err := os.MkdirAll(b.final(), 0o755); err != nil {
		return blobDir{}, fmt.Errorf("dataset: create CSV directory: %w", err)
	}
	// Uploads interrupted by a crash leave temp files; none can be in use now.
	if err := os.RemoveAll(b.tmp()); err != nil {
		return blobDir{}, fmt.Errorf("dataset: clear interrupted uploads: %w", err)
	}
	if err := os.MkdirAll(b.tmp(), 0o755); err != nil {
		return blobDir{}, fmt.Errorf("dataset: create upload directory: %w", err)
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
		return nil, fmt.Errorf("dataset: create upload file: %w", err)
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
		return fmt.Errorf("dataset: store CSV %s: %w", sha, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("dataset: store CSV %s: %w", sha, err)
	}
	d, err := os.Open(b.final())
	if err != nil {
		return fmt.Errorf("dataset: sync %s: %w", b.final(), err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("dataset: sync %s: %w", b.final(), err)
	}
	return nil
}

// open opens the blob for sha, a digest from a record. Errors: NotFound.
func (b blobDir) open(sha string) (*os.File, error) {
	f, err := os.Open(b.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, shoalerr.E(shoalerr.NotFound, "dataset.OpenCSV", "no CSV with SHA-256 %s is stored", sha)
	}
	if err != nil {
		return nil, fmt.Errorf("dataset: open CSV %s: %w", sha, err)
	}
	return f, nil
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
