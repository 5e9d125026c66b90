package modelstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// add downloads content into the store as Partial/Commit would and returns
// its ref.
func add(t *testing.T, s *Store, name, version string, seq uint64, content string) Ref {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	sha := hex.EncodeToString(sum[:])
	part, size := s.Partial(sha)
	if part == "" || size != 0 {
		t.Fatalf("Partial(%s) = %q, %d", sha, part, size)
	}
	if err := os.WriteFile(part, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	path, err := s.Commit(name, part, sha)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != content {
		t.Fatalf("committed file %s = %q, %v", path, b, err)
	}
	if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial file still there after Commit: %v", err)
	}
	return Ref{Name: name, Version: version, SHA256: sha, ReleaseSequence: seq}
}

func modelFiles(t *testing.T, s *Store, name string) []string {
	t.Helper()
	entries, err := os.ReadDir(s.modelDir(name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func wantFiles(refs ...Ref) []string {
	out := []string{stateFile}
	for _, r := range refs {
		out = append(out, r.SHA256+modelSuffix)
	}
	slices.Sort(out)
	return out
}

func checkActive(t *testing.T, s *Store, name string, active, previous Ref) {
	t.Helper()
	got, path, ok := s.Active(name)
	if !ok || got != active {
		t.Errorf("Active(%s) = %+v, %v; want %+v", name, got, ok, active)
	}
	if ok && filepath.Base(path) != active.SHA256+modelSuffix {
		t.Errorf("Active path = %s", path)
	}
	prev, _, ok := s.Previous(name)
	if previous.IsZero() {
		if ok {
			t.Errorf("Previous(%s) = %+v; want none", name, prev)
		}
	} else if !ok || prev != previous {
		t.Errorf("Previous(%s) = %+v, %v; want %+v", name, prev, ok, previous)
	}
}

func TestActivateKeepsActiveAndPreviousOnly(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v1 := add(t, s, "m", "1", 1, "one")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "m", v1, Ref{})

	v2 := add(t, s, "m", "2", 2, "two")
	if err := s.Activate("m", v2); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "m", v2, v1)

	v3 := add(t, s, "m", "3", 3, "three")
	if err := s.Activate("m", v3); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "m", v3, v2)
	if got, want := modelFiles(t, s, "m"), wantFiles(v2, v3); !slices.Equal(got, want) {
		t.Errorf("files = %v; want %v (v1 pruned)", got, want)
	}
	if got := s.LastSequence("m"); got != 3 {
		t.Errorf("LastSequence = %d; want 3", got)
	}
	if p, ok := s.File("m", v2.SHA256); !ok || filepath.Base(p) != v2.SHA256+modelSuffix {
		t.Errorf("File(previous) = %q, %v", p, ok)
	}
	if _, ok := s.File("m", v1.SHA256); ok {
		t.Error("File(pruned version) found a file")
	}
	if got := s.Names(); !slices.Equal(got, []string{"m"}) {
		t.Errorf("Names = %v", got)
	}

	// Everything survives a restart.
	s2 := open(t, dir)
	checkActive(t, s2, "m", v3, v2)
	if got := s2.LastSequence("m"); got != 3 {
		t.Errorf("LastSequence after reopen = %d", got)
	}
}

func TestActivateSameAndRollBackToPrevious(t *testing.T) {
	s := open(t, t.TempDir())
	v1 := add(t, s, "m", "1", 5, "one")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	v2 := add(t, s, "m", "2", 6, "two")
	if err := s.Activate("m", v2); err != nil {
		t.Fatal(err)
	}
	// The same file again keeps the previous one.
	if err := s.Activate("m", v2); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "m", v2, v1)

	// A rollback to the previous file needs no download; the sequence
	// never goes down.
	rb := v1
	rb.ReleaseSequence = 4
	if err := s.Activate("m", rb); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "m", rb, v2)
	if got := s.LastSequence("m"); got != 6 {
		t.Errorf("LastSequence = %d; want 6 (it must not fall on rollback)", got)
	}
	if got, want := modelFiles(t, s, "m"), wantFiles(v1, v2); !slices.Equal(got, want) {
		t.Errorf("files = %v; want %v", got, want)
	}
}

func TestModelsAreIndependent(t *testing.T) {
	s := open(t, t.TempDir())
	a := add(t, s, "a", "1", 1, "same bytes")
	b := add(t, s, "b", "1", 1, "same bytes")
	for name, r := range map[string]Ref{"a": a, "b": b} {
		if err := s.Activate(name, r); err != nil {
			t.Fatal(err)
		}
	}
	a2 := add(t, s, "a", "2", 2, "other")
	if err := s.Activate("a", a2); err != nil {
		t.Fatal(err)
	}
	a3 := add(t, s, "a", "3", 3, "third")
	if err := s.Activate("a", a3); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "b", b, Ref{})
	if err := s.Verify("b"); err != nil {
		t.Errorf("pruning a removed b's file: %v", err)
	}
	if got := s.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names = %v", got)
	}
}

func TestCrashLeftoversAreIgnoredAndCleaned(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v1 := add(t, s, "m", "1", 1, "one")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of writing the next state leaves a temporary
	// file with half a state in it, and a committed file never activated.
	v2 := add(t, s, "m", "2", 2, "two")
	half := filepath.Join(s.modelDir("m"), tempPrefix+"123456"+tempSuffix)
	if err := os.WriteFile(half, []byte(`{"active": {"name": "m", "sha2`), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, dir)
	checkActive(t, s2, "m", v1, Ref{})
	if got, want := modelFiles(t, s2, "m"), wantFiles(v1); !slices.Equal(got, want) {
		t.Errorf("files after reopen = %v; want %v (temp state and orphan %s removed)", got, want, v2.SHA256)
	}
	if err := s2.Verify("m"); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestStateFileIsNeverHalfWritten(t *testing.T) {
	s := open(t, t.TempDir())
	v1 := add(t, s, "m", "1", 1, "one")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(s.statePath("m"))
	if err != nil {
		t.Fatal(err)
	}
	// Fail the rename that would switch the state: the old state must be
	// untouched and no temporary file may stay behind.
	v2 := add(t, s, "m", "2", 2, "two")
	renameFile = func(string, string) error { return errors.New("injected failure") }
	t.Cleanup(func() { renameFile = os.Rename })
	if err := s.Activate("m", v2); err == nil {
		t.Fatal("Activate succeeded although the rename failed")
	}
	renameFile = os.Rename
	after, _ := os.ReadFile(s.statePath("m"))
	if string(after) != string(before) {
		t.Errorf("state changed after a failed activation:\n%s\nwas\n%s", after, before)
	}
	checkActive(t, s, "m", v1, Ref{})
	if got, want := modelFiles(t, s, "m"), wantFiles(v1, v2); !slices.Equal(got, want) {
		t.Errorf("files = %v; want %v (no temporary state left, v2 kept until pruned)", got, want)
	}
	// Once the rename works again, the activation goes through.
	if err := s.Activate("m", v2); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s, "m", v2, v1)
}

func TestCorruptStateIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v1 := add(t, s, "m", "1", 1, "one")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.statePath("m"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir)
	if _, _, ok := s2.Active("m"); ok {
		t.Error("a corrupt state still names an active version")
	}
	if _, err := os.Stat(s.statePath("m") + ".corrupt"); err != nil {
		t.Errorf("corrupt state not kept for inspection: %v", err)
	}
	// The model can be activated again.
	v1again := add(t, s2, "m", "1", 1, "one")
	if err := s2.Activate("m", v1again); err != nil {
		t.Fatal(err)
	}
	checkActive(t, s2, "m", v1again, Ref{})
}

func TestVerifyDetectsCorruption(t *testing.T) {
	s := open(t, t.TempDir())
	v1 := add(t, s, "m", "1", 1, "the model bytes")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("m"); err != nil {
		t.Fatalf("Verify of a good file: %v", err)
	}
	_, path, _ := s.Active("m")
	if err := os.WriteFile(path, []byte("the model bytez"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Verify("m")
	if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), v1.SHA256) {
		t.Errorf("Verify of a changed file = %v; want an error naming the expected digest", err)
	}
	os.Remove(path)
	if err := s.Verify("m"); err == nil {
		t.Error("Verify of a missing file succeeded")
	}
	if err := s.Verify("never"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify(unknown) = %v; want ErrNotFound", err)
	}
}

func TestPartialDownloads(t *testing.T) {
	s := open(t, t.TempDir())
	sha := strings.Repeat("ab", 32)
	path, size := s.Partial(sha)
	if size != 0 || filepath.Base(path) != sha+partSuffix {
		t.Fatalf("Partial = %s, %d", path, size)
	}
	if err := os.WriteFile(path, make([]byte, 1234), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, size := s.Partial(sha); size != 1234 {
		t.Errorf("Partial size = %d; want 1234", size)
	}
	if err := s.RemovePartial(sha); err != nil {
		t.Fatal(err)
	}
	if _, size := s.Partial(sha); size != 0 {
		t.Errorf("after RemovePartial size = %d", size)
	}
	if err := s.RemovePartial(sha); err != nil {
		t.Errorf("RemovePartial of nothing: %v", err)
	}
	keep, drop := strings.Repeat("1", 64), strings.Repeat("2", 64)
	for _, sha := range []string{keep, drop} {
		p, _ := s.Partial(sha)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemovePartialsExcept(map[string]bool{keep: true}); err != nil {
		t.Fatal(err)
	}
	if _, size := s.Partial(keep); size != 1 {
		t.Error("RemovePartialsExcept removed a download it was told to keep")
	}
	if _, size := s.Partial(drop); size != 0 {
		t.Error("RemovePartialsExcept kept an abandoned download")
	}
	if p, _ := s.Partial("../../etc/passwd"); p != "" {
		t.Errorf("Partial accepted a malformed digest: %q", p)
	}
}

func TestRejectsBadInput(t *testing.T) {
	s := open(t, t.TempDir())
	good := strings.Repeat("0", 64)
	part, _ := s.Partial(good)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"commit traversal name", func() error { _, err := s.Commit("../x", part, good); return err }(), `has '/'`},
		{"commit dot name", func() error { _, err := s.Commit("..", part, good); return err }(), "not allowed"},
		{"commit foreign path", func() error { _, err := s.Commit("m", "/etc/passwd", good); return err }(), "is not the partial download"},
		{"commit bad digest", func() error { _, err := s.Commit("m", part, "ABC"); return err }(), "want 64 lower-case hex"},
		{"activate uncommitted", s.Activate("m", Ref{SHA256: good}), "not in the model store"},
		{"activate upper-case digest", s.Activate("m", Ref{SHA256: strings.Repeat("A", 64)}), "lower-case hex"},
		{"activate empty name", s.Activate("", Ref{SHA256: good}), "model name is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("error = %v; want one containing %q", tc.err, tc.want)
			}
		})
	}
}
