// Package modelstore keeps the agent's model versions on disk.
//
// Layout under the store's directory:
//
//	models/{name}/{sha256}.onnx   content-addressed model files
//	models/{name}/state.json      {"active": Ref, "previous": Ref, "last_sequence": N}
//	partial/{sha256}.part         downloads in progress (resumable)
//
// Activation is one atomic rename of state.json (written to a temporary
// file, fsynced, renamed, directory fsynced), so a crash at any moment
// leaves either the old or the new active version, never a half-written
// state. Exactly the active and the previous file of each model are kept;
// anything else in a model's directory is removed on activation and when
// the store opens (files a crash left between commit and activation,
// temporary state files).
package modelstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/shoalfleet/shoal/agent/internal/failpoint"
	"github.com/shoalfleet/shoal/internal/names"
)

// Ref names one model version.
type Ref struct {
	Name            string `json:"name"`
	Version         string `json:"version"`
	SHA256          string `json:"sha256"`
	ReleaseSequence uint64 `json:"release_sequence"`
}

// IsZero reports whether r names nothing.
func (r Ref) IsZero() bool { return r.SHA256 == "" }

// state is what state.json holds for one model.
type state struct {
	Active   Ref `json:"active"`
	Previous Ref `json:"previous,omitzero"`
	// LastSequence is the highest release sequence ever activated; the
	// reconciler refuses manifests below it unless they are rollbacks.
	LastSequence uint64 `json:"last_sequence"`
}

const (
	stateFile   = "state.json"
	tempPrefix  = ".state-"
	tempSuffix  = ".tmp"
	modelSuffix = ".onnx"
	partSuffix  = ".part"
)

// renameFile is os.Rename; tests replace it to fail an activation at its
// last step.
var renameFile = os.Rename

// ErrNotFound is returned (wrapped) for a model or file the store lacks.
var ErrNotFound = errors.New("not in the model store")

// Store is the on-disk model store. Its methods are safe for concurrent use.
type Store struct {
	dir string
	log *slog.Logger

	mu     sync.Mutex
	states map[string]state
}

// Open opens (creating if needed) the store at dir, reads every model's
// state and removes what a crash may have left behind. A state file that
// cannot be parsed is moved aside (state.json.corrupt) and its model
// treated as never activated, so the agent downloads it again rather than
// refusing to start.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{dir: dir, log: log.With("component", "modelstore"), states: map[string]state{}}
	for _, d := range []string{s.modelsDir(), s.partialDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("model store %s: %w", dir, err)
		}
	}
	entries, err := os.ReadDir(s.modelsDir())
	if err != nil {
		return nil, fmt.Errorf("model store %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || ValidateName(name) != nil {
			continue
		}
		st, ok, err := s.readState(name)
		if err != nil {
			s.log.Error("model state is unreadable; moving it aside, the model will be downloaded again",
				"model", name, "err", err)
			p := s.statePath(name)
			if rerr := os.Rename(p, p+".corrupt"); rerr != nil {
				return nil, fmt.Errorf("model store: move aside %s: %w", p, rerr)
			}
		}
		if ok {
			s.states[name] = st
		}
		if err := s.prune(name, st); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) modelsDir() string            { return filepath.Join(s.dir, "models") }
func (s *Store) partialDir() string           { return filepath.Join(s.dir, "partial") }
func (s *Store) modelDir(name string) string  { return filepath.Join(s.modelsDir(), name) }
func (s *Store) statePath(name string) string { return filepath.Join(s.modelDir(name), stateFile) }
func (s *Store) filePath(name, sha string) string {
	return filepath.Join(s.modelDir(name), sha+modelSuffix)
}

// ValidateName returns an error unless name is a valid model name
// (names.Check; names become directory names).
func ValidateName(name string) error { return names.Check("model name", name) }

// ValidateDigest returns an error unless sha is 64 lower-case hex digits.
func ValidateDigest(sha string) error {
	if len(sha) != 64 {
		return fmt.Errorf("sha256 %q is %d characters; want 64 lower-case hex digits", sha, len(sha))
	}
	for i, r := range sha {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return fmt.Errorf("sha256 %q has %q at position %d; want lower-case hex", sha, r, i)
		}
	}
	return nil
}

// Partial returns the path of the download in progress for sha and how
// many bytes it already holds (0 when there is none). For a malformed
// digest it returns "" and 0.
func (s *Store) Partial(sha string) (path string, size int64) {
	if ValidateDigest(sha) != nil {
		return "", 0
	}
	path = filepath.Join(s.partialDir(), sha+partSuffix)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return path, size
}

// RemovePartial deletes the download in progress for sha, if any.
func (s *Store) RemovePartial(sha string) error {
	path, _ := s.Partial(sha)
	if path == "" {
		return fmt.Errorf("remove partial download: %w", ValidateDigest(sha))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove partial download: %w", err)
	}
	return nil
}

// RemovePartialsExcept deletes every download in progress whose digest is
// not in keep: downloads the desired state no longer asks for would
// otherwise fill a small device's disk.
func (s *Store) RemovePartialsExcept(keep map[string]bool) error {
	entries, err := os.ReadDir(s.partialDir())
	if err != nil {
		return fmt.Errorf("model store: %w", err)
	}
	for _, e := range entries {
		sha, ok := strings.CutSuffix(e.Name(), partSuffix)
		if !ok || keep[sha] {
			continue
		}
		if err := os.Remove(filepath.Join(s.partialDir(), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("model store: %w", err)
		}
		s.log.Debug("removed an abandoned partial download", "sha256", sha)
	}
	return nil
}

// Commit moves a complete, verified download (partPath, as Partial
// returned it) into the store as model name's file for sha, and returns the
// new path. The caller verifies size, digest and signature first; Commit
// only checks that partPath is the store's partial file for sha.
func (s *Store) Commit(name, partPath, sha string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	want, _ := s.Partial(sha)
	if want == "" {
		return "", fmt.Errorf("commit: %w", ValidateDigest(sha))
	}
	if filepath.Clean(partPath) != want {
		return "", fmt.Errorf("commit: %s is not the partial download of %s (want %s)", partPath, sha, want)
	}
	if err := s.ensureModelDir(name); err != nil {
		return "", err
	}
	if err := syncFile(partPath); err != nil {
		return "", fmt.Errorf("commit %s: %w", name, err)
	}
	dst := s.filePath(name, sha)
	if err := os.Rename(partPath, dst); err != nil {
		return "", fmt.Errorf("commit %s: %w", name, err)
	}
	if err := syncDir(s.modelDir(name)); err != nil {
		return "", fmt.Errorf("commit %s: %w", name, err)
	}
	if err := syncDir(s.partialDir()); err != nil {
		return "", fmt.Errorf("commit %s: %w", name, err)
	}
	return dst, nil
}

func (s *Store) ensureModelDir(name string) error {
	d := s.modelDir(name)
	if _, err := os.Stat(d); err == nil {
		return nil
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("model store: %w", err)
	}
	return syncDir(s.modelsDir())
}

// Activate makes ref the active version of model name: the old active one
// becomes the previous one (unless it is the same file), the last applied
// release sequence rises to ref's if higher, and every other file of the
// model is deleted. ref's file must have been committed. The switch is
// atomic on disk.
func (s *Store) Activate(name string, ref Ref) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	if err := ValidateDigest(ref.SHA256); err != nil {
		return fmt.Errorf("activate %s: %w", name, err)
	}
	ref.Name = name
	if _, err := os.Stat(s.filePath(name, ref.SHA256)); err != nil {
		return fmt.Errorf("activate %s %s: model file %s: %w", name, ref.Version, ref.SHA256, ErrNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.states[name]
	next := state{Active: ref, Previous: old.Active, LastSequence: max(old.LastSequence, ref.ReleaseSequence)}
	if old.Active.SHA256 == ref.SHA256 {
		next.Previous = old.Previous // the same file again: keep what came before it
	}
	if err := s.writeState(name, next); err != nil {
		return err
	}
	s.states[name] = next
	return s.prune(name, next)
}

// Active returns the active version of model name and its file.
func (s *Store) Active(name string) (Ref, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.states[name]
	if !ok || st.Active.IsZero() {
		return Ref{}, "", false
	}
	return st.Active, s.filePath(name, st.Active.SHA256), true
}

// Previous returns the version that was active before the active one,
// and its file (kept for rollback).
func (s *Store) Previous(name string) (Ref, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.states[name]
	if !ok || st.Previous.IsZero() {
		return Ref{}, "", false
	}
	return st.Previous, s.filePath(name, st.Previous.SHA256), true
}

// File returns the path of model name's file for sha if the store holds
// it (active, previous, or committed and not yet activated).
func (s *Store) File(name, sha string) (string, bool) {
	if ValidateName(name) != nil || ValidateDigest(sha) != nil {
		return "", false
	}
	p := s.filePath(name, sha)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return p, true
}

// LastSequence returns the highest release sequence activated for model
// name (0 if none).
func (s *Store) LastSequence(name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states[name].LastSequence
}

// Names returns the models with an active version, sorted.
func (s *Store) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n, st := range s.states {
		if !st.Active.IsZero() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Verify re-hashes the active file of model name and returns an error if
// it is missing or its SHA-256 is not the one recorded (on-disk
// corruption).
func (s *Store) Verify(name string) error {
	ref, path, ok := s.Active(name)
	if !ok {
		return fmt.Errorf("verify %s: no active version: %w", name, ErrNotFound)
	}
	got, _, err := HashFile(path)
	if err != nil {
		return fmt.Errorf("verify %s %s: %w", name, ref.Version, err)
	}
	if got != ref.SHA256 {
		return fmt.Errorf("verify %s %s: %s has sha256 %s; want %s (the file is corrupt)", name, ref.Version, path, got, ref.SHA256)
	}
	return nil
}

// HashFile returns the hex SHA-256 and size of the file at path.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func (s *Store) readState(name string) (state, bool, error) {
	b, err := os.ReadFile(s.statePath(name))
	if errors.Is(err, os.ErrNotExist) {
		return state{}, false, nil
	}
	if err != nil {
		return state{}, false, err
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return state{}, false, fmt.Errorf("%s: %w", s.statePath(name), err)
	}
	for _, r := range []Ref{st.Active, st.Previous} {
		if !r.IsZero() {
			if err := ValidateDigest(r.SHA256); err != nil {
				return state{}, false, fmt.Errorf("%s: %w", s.statePath(name), err)
			}
		}
	}
	return st, true, nil
}

// writeState replaces state.json atomically: temp file, fsync, rename,
// fsync of the directory.
func (s *Store) writeState(name string, st state) error {
	if err := s.ensureModelDir(name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state of %s: %w", name, err)
	}
	dir := s.modelDir(name)
	f, err := os.CreateTemp(dir, tempPrefix+"*"+tempSuffix)
	if err != nil {
		return fmt.Errorf("write state of %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write state of %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write state of %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write state of %s: %w", name, err)
	}
	failpoint.Hit(failpoint.ActivateBeforeState)
	if err := renameFile(tmp, s.statePath(name)); err != nil {
		return fmt.Errorf("write state of %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write state of %s: %w", name, err)
	}
	failpoint.Hit(failpoint.ActivateAfterState)
	return nil
}

// prune deletes from model name's directory every model file that is
// neither active nor previous, and leftover temporary state files.
func (s *Store) prune(name string, st state) error {
	entries, err := os.ReadDir(s.modelDir(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("model store: %w", err)
	}
	keep := map[string]bool{stateFile: true, stateFile + ".corrupt": true}
	for _, r := range []Ref{st.Active, st.Previous} {
		if !r.IsZero() {
			keep[r.SHA256+modelSuffix] = true
		}
	}
	removed := 0
	for _, e := range entries {
		n := e.Name()
		if keep[n] || e.IsDir() {
			continue
		}
		if strings.HasSuffix(n, modelSuffix) || strings.HasPrefix(n, tempPrefix) {
			if err := os.Remove(filepath.Join(s.modelDir(name), n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("model store: prune %s: %w", name, err)
			}
			removed++
			s.log.Debug("pruned", "model", name, "file", n)
		}
	}
	if removed > 0 {
		return syncDir(s.modelDir(name))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
