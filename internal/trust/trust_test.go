package trust

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func newSigner(t *testing.T) *Signer {
	t.Helper()
	s, err := LoadOrCreateSigner(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key.pem")
	a, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v; want 0600", fi.Mode().Perm())
	}
	b, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.PublicKeyPEM(), b.PublicKeyPEM()) || a.KeyID() != b.KeyID() {
		t.Fatal("reloaded key differs from the created one")
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := LoadOrCreateSigner(path); err == nil {
		t.Fatal("loaded a garbage key")
	}
}

// TestBlobSignatureIsCosignFormat checks the signature the way cosign's
// verify-blob does with --key: base64 of an ASN.1 DER ECDSA signature over
// SHA-256 of the blob, checked with the PEM public key using only the
// standard library.
func TestBlobSignatureIsCosignFormat(t *testing.T) {
	s := newSigner(t)
	blob := []byte("model bytes")
	sig, err := s.SignBlob(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(s.PublicKeyPEM())
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("public key PEM block = %v", block)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(blob)
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), sum[:], der) {
		t.Fatal("standard-library ECDSA check rejects the signature")
	}

	v, err := NewVerifier(s.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyBlob(bytes.NewReader(blob), sig); err != nil {
		t.Fatalf("VerifyBlob: %v", err)
	}
	if err := v.VerifyBlob(bytes.NewReader([]byte("model bytez")), sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered blob: err = %v; want ErrBadSignature", err)
	}
	if err := v.VerifyBlob(bytes.NewReader(blob), "!!!"); err == nil {
		t.Fatal("non-base64 signature accepted")
	}
}

func TestEnvelope(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t)
	v, err := NewVerifier(s.PublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"modelName":"m"}`)
	env, err := s.SignEnvelope(ManifestPayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.OpenEnvelope(env, ManifestPayloadType)
	if err != nil {
		t.Fatalf("OpenEnvelope: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("payload = %q", got)
	}

	foreign, _ := other.SignEnvelope(ManifestPayloadType, payload)
	if _, err := v.OpenEnvelope(foreign, ManifestPayloadType); !errors.Is(err, ErrBadSignature) {
		t.Errorf("envelope by another key: err = %v; want ErrBadSignature", err)
	}
	if _, err := v.OpenEnvelope(env, "application/other"); err == nil {
		t.Error("wrong payload type accepted")
	}

	// Swap the payload, keep the signature.
	var e envelope
	json.Unmarshal(env, &e)
	e.Payload = base64.StdEncoding.EncodeToString([]byte(`{"modelName":"evil"}`))
	tampered, _ := json.Marshal(e)
	if _, err := v.OpenEnvelope(tampered, ManifestPayloadType); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered payload: err = %v; want ErrBadSignature", err)
	}
	for _, bad := range [][]byte{nil, []byte("{"), []byte(`{"payloadType":"` + ManifestPayloadType + `"}`), make([]byte, MaxEnvelopeBytes+1)} {
		if _, err := v.OpenEnvelope(bad, ManifestPayloadType); err == nil {
			t.Errorf("OpenEnvelope(%.20q) succeeded", bad)
		}
	}
}

func TestNewVerifierRejects(t *testing.T) {
	for _, bad := range []string{"", "garbage", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		if _, err := NewVerifier([]byte(bad)); err == nil {
			t.Errorf("NewVerifier(%q) succeeded", bad)
		}
	}
}
