// Package trust holds Shoal's signing keys and verifies what they signed.
//
// The control plane signs two things with one ECDSA P-256 key, held through
// sigstore's signature package:
//
//   - artifacts (ONNX files), as a detached signature in cosign's blob format
//     (base64 of an ASN.1 DER ECDSA signature over SHA-256 of the bytes), so
//     that `cosign verify-blob --key pub.pem --signature f.sig
//     --insecure-ignore-tlog=true f` accepts them;
//   - deployment manifests, as DSSE envelopes (JSON) over the manifest bytes.
//
// Agents pin the public key at enrollment and verify both with a Verifier.
package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
)

// ManifestPayloadType is the DSSE payload type of deployment manifests.
const ManifestPayloadType = "application/vnd.shoal.manifest.v1+json"

// MaxEnvelopeBytes bounds a DSSE envelope an agent will parse.
const MaxEnvelopeBytes = 4 << 20

// ErrBadSignature is returned (wrapped) when a signature does not verify.
var ErrBadSignature = errors.New("signature does not verify with the pinned key")

// Signer signs artifacts and manifests with the control plane's key.
type Signer struct {
	sv     signature.SignerVerifier
	pubPEM []byte
	keyID  string
}

// LoadOrCreateSigner loads the PEM private key at path, creating a new ECDSA
// P-256 key there (mode 0600) if the file does not exist.
func LoadOrCreateSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		priv, gerr := ecdsa.GenerateKey(elliptic.P256(), cryptoRand)
		if gerr != nil {
			return nil, fmt.Errorf("generate signing key: %w", gerr)
		}
		pemBytes, merr := cryptoutils.MarshalPrivateKeyToPEM(priv)
		if merr != nil {
			return nil, fmt.Errorf("encode signing key: %w", merr)
		}
		if werr := writeFileAtomic(path, pemBytes, 0o600); werr != nil {
			return nil, fmt.Errorf("write signing key: %w", werr)
		}
		return NewSigner(priv)
	}
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	key, err := cryptoutils.UnmarshalPEMToPrivateKey(data, cryptoutils.SkipPassword)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s is a %T; want an ECDSA P-256 key", path, key)
	}
	return NewSigner(priv)
}

// NewSigner returns a Signer for an ECDSA P-256 private key.
func NewSigner(priv *ecdsa.PrivateKey) (*Signer, error) {
	if priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key uses curve %s; want P-256", priv.Curve.Params().Name)
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	id, err := KeyID(pubPEM)
	if err != nil {
		return nil, err
	}
	return &Signer{sv: sv, pubPEM: pubPEM, keyID: id}, nil
}

// PublicKeyPEM returns the PEM-encoded public key (the trust root agents pin).
func (s *Signer) PublicKeyPEM() []byte { return bytes.Clone(s.pubPEM) }

// KeyID returns the key's id: hex SHA-256 of its DER public key.
func (s *Signer) KeyID() string { return s.keyID }

// SignBlob signs the bytes read from r and returns the signature in cosign's
// blob format: base64 of the ASN.1 DER signature.
func (s *Signer) SignBlob(r io.Reader) (string, error) {
	sig, err := s.sv.SignMessage(r)
	if err != nil {
		return "", fmt.Errorf("sign artifact: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// SignEnvelope wraps payload in a DSSE envelope of payloadType signed with
// the key, and returns the envelope's JSON.
func (s *Signer) SignEnvelope(payloadType string, payload []byte) ([]byte, error) {
	env, err := sigdsse.WrapSigner(s.sv, payloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("sign %s envelope: %w", payloadType, err)
	}
	return env, nil
}

// Verifier checks signatures against one pinned public key.
type Verifier struct {
	v     signature.Verifier
	keyID string
}

// NewVerifier parses a PEM public key (ECDSA P-256) into a Verifier.
func NewVerifier(pubPEM []byte) (*Verifier, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pubPEM)
	if err != nil {
		return nil, fmt.Errorf("parse trust root public key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("trust root is a %T; want an ECDSA P-256 public key", pub)
	}
	v, err := signature.LoadECDSAVerifier(ec, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("load trust root: %w", err)
	}
	id, err := KeyID(pubPEM)
	if err != nil {
		return nil, err
	}
	return &Verifier{v: v, keyID: id}, nil
}

// KeyID returns the pinned key's id.
func (v *Verifier) KeyID() string { return v.keyID }

// VerifyBlob checks a cosign-format signature (base64 DER) over the bytes
// read from r. A signature that does not verify returns ErrBadSignature.
func (v *Verifier) VerifyBlob(r io.Reader, sigB64 string) error {
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sigB64))
	if err != nil {
		return fmt.Errorf("artifact signature is not base64: %w", err)
	}
	if err := v.v.VerifySignature(bytes.NewReader(sig), r); err != nil {
		return fmt.Errorf("artifact: %w (%v)", ErrBadSignature, err)
	}
	return nil
}

// OpenEnvelope verifies a DSSE envelope of the expected payload type and
// returns its payload. It refuses oversize envelopes, other payload types and
// envelopes no signature of which verifies with the pinned key.
func (v *Verifier) OpenEnvelope(envJSON []byte, payloadType string) ([]byte, error) {
	if len(envJSON) > MaxEnvelopeBytes {
		return nil, fmt.Errorf("envelope is %d bytes; the limit is %d", len(envJSON), MaxEnvelopeBytes)
	}
	var e envelope
	if err := json.Unmarshal(envJSON, &e); err != nil {
		return nil, fmt.Errorf("envelope is not DSSE JSON: %w", err)
	}
	if e.PayloadType != payloadType {
		return nil, fmt.Errorf("envelope payload type is %q; want %q", e.PayloadType, payloadType)
	}
	if len(e.Signatures) == 0 {
		return nil, fmt.Errorf("envelope has no signatures")
	}
	var payload []byte
	w := sigdsse.WrapVerifier(v.v, sigdsse.WithExpectedPayloadType(payloadType), sigdsse.WithDecodedPayload(&payload))
	if err := w.VerifySignature(bytes.NewReader(envJSON), nil); err != nil {
		return nil, fmt.Errorf("manifest envelope: %w (%v)", ErrBadSignature, err)
	}
	return payload, nil
}

// envelope is the DSSE JSON envelope.
type envelope struct {
	PayloadType string         `json:"payloadType"`
	Payload     string         `json:"payload"`
	Signatures  []envelopeSign `json:"signatures"`
}

type envelopeSign struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// KeyID returns hex SHA-256 of the DER encoding of a PEM public key.
func KeyID(pubPEM []byte) (string, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pubPEM)
	if err != nil {
		return "", fmt.Errorf("parse public key: %w", err)
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
