package modelstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/shoalfleet/shoal/internal/shoaltest"
)

// fill writes a file until the file system is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// TestFullDisk: on a full file system a download stops with ENOSPC and
// keeps what it wrote, to resume from; an activation fails with a clear
// error and leaves the active version and its state file as they were; a
// restart on the full disk opens the store; and once there is room again
// both go through, without anything done by hand.
func TestFullDisk(t *testing.T) {
	mnt := shoaltest.Tmpfs(t, 4<<20)
	s := open(t, mnt)
	v1 := add(t, s, "m", "1", 1, "one")
	if err := s.Activate("m", v1); err != nil {
		t.Fatal(err)
	}
	v2 := add(t, s, "m", "2", 2, "two")
	before, err := os.ReadFile(s.statePath("m"))
	if err != nil {
		t.Fatal(err)
	}

	big := strings.Repeat("model bytes ", 100_000) // 1.2 MB
	sum := sha256.Sum256([]byte(big))
	sha := hex.EncodeToString(sum[:])
	part, _ := s.Partial(sha)
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(big[:100_000])); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, mnt)
	// As the reconciler's download would: it stops at ENOSPC.
	if _, err := f.Write([]byte(big[100_000:])); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk: %v", err)
	}
	f.Close()

	err = s.Activate("m", v2)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "write state of m") {
		t.Fatalf("Activate on a full disk = %v; want the state write's ENOSPC", err)
	}
	if after, _ := os.ReadFile(s.statePath("m")); string(after) != string(before) {
		t.Errorf("state changed by a failed activation:\n%s\nwas\n%s", after, before)
	}
	checkActive(t, s, "m", v1, Ref{})
	if got, want := modelFiles(t, s, "m"), wantFiles(v1, v2); !slices.Equal(got, want) {
		t.Errorf("files = %v; want %v (no temporary state left)", got, want)
	}
	// A restart on the full disk. (It prunes v2's file, committed but not
	// active: the reconciler downloads it again.)
	s = open(t, mnt)
	checkActive(t, s, "m", v1, Ref{})
	if err := s.Verify("m"); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The download resumes from what it kept.
	_, have := s.Partial(sha)
	if have == 0 || have >= int64(len(big)) || !strings.HasPrefix(big, readString(t, part)) {
		t.Fatalf("partial download holds %d bytes after ENOSPC", have)
	}
	f, err = os.OpenFile(part, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(big[have:])); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _, err := HashFile(part); err != nil || got != sha {
		t.Fatalf("resumed download: sha256 %s, %v; want %s", got, err, sha)
	}
	v2 = add(t, s, "m", "2", 2, "two")
	if err := s.Activate("m", v2); err != nil {
		t.Fatalf("Activate once there is room: %v", err)
	}
	checkActive(t, s, "m", v2, v1)
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
