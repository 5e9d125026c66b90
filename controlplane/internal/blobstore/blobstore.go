// Package blobstore keeps content-addressed files on the local disk: a
// stored blob lives in dir/sha256/{hex}, an upload in progress in dir/tmp.
// The registry keeps its ONNX artifacts in one, the dataset store its CSV
// files in another.
package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Dir is one directory of blobs. Kind names its blobs in errors
// ("artifact", "CSV").
type Dir struct {
	dir, kind string
}

// Open opens (creating) dir and deletes the uploads a crash left in it.
func Open(dir, kind string) (Dir, error) {
	b := Dir{dir: dir, kind: kind}
	if err := os.MkdirAll(b.final(), 0o700); err != nil {
		return Dir{}, fmt.Errorf("create %s directory: %w", kind, err)
	}
	if err := os.RemoveAll(b.tmp()); err != nil {
		return Dir{}, fmt.Errorf("clear interrupted uploads: %w", err)
	}
	if err := os.MkdirAll(b.tmp(), 0o700); err != nil {
		return Dir{}, fmt.Errorf("create upload directory: %w", err)
	}
	return b, nil
}

func (b Dir) final() string { return filepath.Join(b.dir, "sha256") }
func (b Dir) tmp() string   { return filepath.Join(b.dir, "tmp") }

// Path is where the blob of sha is (or would be) stored.
func (b Dir) Path(sha string) string { return filepath.Join(b.final(), sha) }

// Upload is a received file, not yet committed.
type Upload struct {
	Path   string // in the upload directory
	SHA256 string // lower-case hex
	Size   int64
}

// Errors of Receive. A *ReadError is the sender's: reading the body failed.
// Any other error is the disk's.
var (
	ErrTooLarge = errors.New("upload too large")
	ErrEmpty    = errors.New("upload empty")
)

// ReadError wraps a failure to read the upload's body.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "read upload: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// Receive copies body into a file of the upload directory while hashing
// it, and syncs it. More than max bytes is ErrTooLarge, none ErrEmpty. On
// error the file is removed.
func (b Dir) Receive(ctx context.Context, body io.Reader, max int64) (u Upload, err error) {
	if err := ctx.Err(); err != nil {
		return Upload{}, err
	}
	f, err := os.CreateTemp(b.tmp(), "upload-*")
	if err != nil {
		return Upload{}, fmt.Errorf("create upload file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	dst := &writeTracker{w: io.MultiWriter(f, h)}
	size, err := io.Copy(dst, io.LimitReader(body, max+1))
	switch {
	case dst.err != nil:
		return Upload{}, fmt.Errorf("write upload: %w", dst.err)
	case err != nil:
		return Upload{}, &ReadError{err}
	case size > max:
		return Upload{}, ErrTooLarge
	case size == 0:
		return Upload{}, ErrEmpty
	}
	if err = f.Sync(); err != nil {
		return Upload{}, fmt.Errorf("sync upload: %w", err)
	}
	if err = f.Close(); err != nil {
		return Upload{}, fmt.Errorf("close upload: %w", err)
	}
	return Upload{Path: f.Name(), SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}, nil
}

// Commit moves a verified upload to its content address and makes the
// rename durable, or removes it if that blob is already stored (same
// digest, same bytes).
func (b Dir) Commit(tmp, sha string) error {
	dst := b.Path(sha)
	if _, err := os.Stat(dst); err == nil {
		return os.Remove(tmp)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("store %s %s: %w", b.kind, sha, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("store %s %s: %w", b.kind, sha, err)
	}
	return syncDir(b.final())
}

// Open opens the blob of sha. Errors: Invalid (sha is not a SHA-256 in
// lower-case hex), NotFound (under op).
func (b Dir) Open(op, sha string) (*os.File, error) {
	if !IsDigest(sha) {
		return nil, shoalerr.E(shoalerr.Invalid, op, "%s digest %.80q is not 64 lower-case hex characters (a SHA-256)", b.kind, sha)
	}
	f, err := os.Open(b.Path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, shoalerr.E(shoalerr.NotFound, op, "no %s has SHA-256 %s", b.kind, sha)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s %s: %w", b.kind, sha, err)
	}
	return f, nil
}

// IsDigest reports whether s is a SHA-256 in lower-case hex.
func IsDigest(s string) bool {
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
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
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
