package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// errDigest marks a digest mismatch (a resumed download gets one more try
// from scratch).
var errDigest = errors.New("artifact sha256 mismatch")

// verifyArtifact checks the file at path against the manifest's artifact:
// size, SHA-256 and the cosign blob signature with the pinned key, in one
// read of the file.
func verifyArtifact(v *trust.Verifier, path string, a *shoalv1.Artifact) error {
	f, err := os.Open(path)
	if err != nil {
		return transient(fmt.Errorf("open downloaded artifact: %w", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return transient(fmt.Errorf("open downloaded artifact: %w", err))
	}
	if fi.Size() != a.GetSize() {
		return permanent(fmt.Errorf("artifact size mismatch: got %d bytes, want %d", fi.Size(), a.GetSize()))
	}
	h := sha256.New()
	tee := io.TeeReader(f, h)
	sigErr := v.VerifyBlob(tee, a.GetSignature())
	// VerifyBlob may stop early (a malformed signature); hash the rest.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return transient(fmt.Errorf("read downloaded artifact: %w", err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.GetSha256() {
		return permanent(fmt.Errorf("%w: got %s, want %s", errDigest, got, a.GetSha256()))
	}
	if sigErr != nil {
		if errors.Is(sigErr, trust.ErrBadSignature) {
			return permanent(errors.New("artifact signature does not verify with the pinned key"))
		}
		return permanent(fmt.Errorf("artifact signature: %w", sigErr))
	}
	return nil
}
