package trust

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
)

// The payloads and blobs the fuzz seeds sign with fuzzcorpus.SigningKey(0).
// Nothing else is ever signed with that key, so no other bytes may verify.
var (
	fuzzPayloads = [][]byte{
		[]byte(`{"schemaVersion":1,"modelName":"summer","modelVersion":"1","artifact":{"sha256":"` + strings.Repeat("ab", 32) + `","size":"10","url":"/v1/artifacts/x","signature":"MEUCIQ=="},"releaseSequence":"1","expiresAtUnixMs":"4102444800000"}`),
		[]byte(`{}`),
	}
	fuzzBlobs = [][]byte{
		[]byte("\x08\x07\x12\x04onnx model bytes"),
		{},
	}
)

func fuzzVerifier(tb testing.TB, n int) (*Signer, *Verifier) {
	tb.Helper()
	s, err := NewSigner(fuzzcorpus.SigningKey(n))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := NewVerifier(s.PublicKeyPEM())
	if err != nil {
		tb.Fatal(err)
	}
	return s, v
}

// decodeB64 decodes as DSSE does: standard base64, or else URL-safe.
func decodeB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.URLEncoding.DecodeString(s)
	}
	return b, err
}

// FuzzOpenEnvelope opens DSSE envelopes as an agent opens the deployment
// manifests in its desired state, allocating in proportion to the
// envelope. Whatever the envelope's JSON looks like, OpenEnvelope may only
// return a payload the pinned key signed; that payload must be the one the
// envelope carries; and the same envelope with any one bit of its payload
// or signature changed, or opened with another key or payload type, must
// be refused. Seeds:
// testdata/fuzz/FuzzOpenEnvelope, from TestFuzzOpenEnvelopeCorpus.
func FuzzOpenEnvelope(f *testing.F) {
	_, v := fuzzVerifier(f, 0)
	_, other := fuzzVerifier(f, 2) // a key that signs nothing
	f.Fuzz(func(t *testing.T, env []byte) {
		var payload []byte
		var err error
		if n := fuzzcorpus.Allocated(func() { payload, err = v.OpenEnvelope(env, ManifestPayloadType) }); n > fuzzcorpus.AllocBudget(len(env)) {
			t.Fatalf("opening a %d-byte envelope allocated %d bytes", len(env), n)
		}
		if err != nil {
			if err.Error() == "" || payload != nil {
				t.Fatalf("refused with payload %q and error %q", payload, err)
			}
			return
		}
		if !slices.ContainsFunc(fuzzPayloads, func(p []byte) bool { return bytes.Equal(p, payload) }) {
			t.Fatalf("accepted a payload the key never signed: %q", payload)
		}
		var e envelope
		if err := json.Unmarshal(env, &e); err != nil {
			t.Fatalf("accepted an envelope that is not JSON: %v", err)
		}
		if carried, err := decodeB64(e.Payload); err != nil || !bytes.Equal(carried, payload) {
			t.Fatalf("returned %q; the envelope carries %q (%v)", payload, carried, err)
		}
		if _, err := other.OpenEnvelope(env, ManifestPayloadType); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("another key opens it: %v", err)
		}
		if _, err := v.OpenEnvelope(env, "application/vnd.shoal.other+json"); err == nil {
			t.Fatal("opened as another payload type")
		}
		reject := func(what string, m envelope) {
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.OpenEnvelope(b, ManifestPayloadType); err == nil {
				t.Fatalf("accepted the envelope with %s", what)
			}
		}
		for _, i := range spread(len(payload)) {
			m := e
			p := bytes.Clone(payload)
			p[i] ^= 1 << (i % 8)
			m.Payload = base64.StdEncoding.EncodeToString(p)
			reject("a payload bit flipped", m)
		}
		m := e
		m.Payload = base64.StdEncoding.EncodeToString(append(bytes.Clone(payload), ' '))
		reject("a byte appended to the payload", m)
		for si, s := range e.Signatures {
			sig, err := decodeB64(s.Sig)
			if err != nil {
				t.Fatalf("accepted an envelope with signature %d not base64: %v", si, err)
			}
			for _, i := range spread(len(sig)) {
				bad := bytes.Clone(sig)
				bad[i] ^= 0x80 >> (i % 8)
				m := e
				m.Signatures = []envelopeSign{{KeyID: s.KeyID, Sig: base64.StdEncoding.EncodeToString(bad)}}
				reject("a signature bit flipped", m)
			}
		}
	})
}

// FuzzVerifyBlob checks artifact signatures (cosign blob format) as an
// agent checks a downloaded model. It may only accept bytes the pinned key
// signed, and must refuse them with one bit changed, one byte short, or
// under another key. Seeds: testdata/fuzz/FuzzVerifyBlob.
func FuzzVerifyBlob(f *testing.F) {
	_, v := fuzzVerifier(f, 0)
	_, other := fuzzVerifier(f, 2) // a key that signs nothing
	f.Fuzz(func(t *testing.T, data []byte, sig string) {
		err := v.VerifyBlob(bytes.NewReader(data), sig)
		if err != nil {
			if _, b64 := base64.StdEncoding.DecodeString(strings.TrimSpace(sig)); b64 == nil && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("a base64 signature refused without ErrBadSignature: %v", err)
			}
			return
		}
		if !slices.ContainsFunc(fuzzBlobs, func(b []byte) bool { return bytes.Equal(b, data) }) {
			t.Fatalf("accepted bytes the key never signed: %q", data)
		}
		if err := other.VerifyBlob(bytes.NewReader(data), sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("another key accepts it: %v", err)
		}
		for _, i := range spread(len(data)) {
			bad := bytes.Clone(data)
			bad[i] ^= 1 << (i % 8)
			if err := v.VerifyBlob(bytes.NewReader(bad), sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("accepted the blob with byte %d changed: %v", i, err)
			}
		}
		if len(data) > 0 {
			if err := v.VerifyBlob(bytes.NewReader(data[:len(data)-1]), sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("accepted the blob one byte short: %v", err)
			}
		}
		if err := v.VerifyBlob(bytes.NewReader(append(bytes.Clone(data), 0)), sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("accepted the blob with a byte appended: %v", err)
		}
	})
}

// spread returns up to 8 indexes spread over [0, n).
func spread(n int) []int {
	if n <= 8 {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	idx := make([]int, 0, 8)
	for i := range 8 {
		idx = append(idx, i*(n-1)/7)
	}
	return idx
}

func fuzzEnvelopeSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	s, _ := fuzzVerifier(t, 0)
	foreign, _ := fuzzVerifier(t, 1)
	sign := func(s *Signer, payloadType string, p []byte) []byte {
		env, err := s.SignEnvelope(payloadType, p)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	parse := func(b []byte) envelope {
		var e envelope
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	marshal := func(e envelope) []byte {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seed := func(name string, valid bool, env []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{env}}
	}
	good := sign(s, ManifestPayloadType, fuzzPayloads[0])
	e := parse(good)
	urlSafe := e
	urlSafe.Payload = base64.URLEncoding.EncodeToString(fuzzPayloads[0])
	twoSigs := parse(sign(foreign, ManifestPayloadType, fuzzPayloads[0]))
	twoSigs.Signatures = append(twoSigs.Signatures, e.Signatures...)
	swapped := e
	swapped.Payload = base64.StdEncoding.EncodeToString(fuzzPayloads[1])
	noSigs := e
	noSigs.Signatures = nil
	return []fuzzcorpus.Seed{
		seed("manifest", true, good),
		seed("empty-object", true, sign(s, ManifestPayloadType, fuzzPayloads[1])),
		seed("urlsafe-payload", true, marshal(urlSafe)),
		seed("foreign-then-pinned-signature", true, marshal(twoSigs)),
		seed("foreign-key", false, sign(foreign, ManifestPayloadType, fuzzPayloads[0])),
		seed("other-payload-type", false, sign(s, "application/vnd.in-toto+json", fuzzPayloads[0])),
		seed("payload-swapped", false, marshal(swapped)),
		seed("no-signatures", false, marshal(noSigs)),
		seed("truncated", false, good[:len(good)/2]),
		seed("not-json", false, []byte("\x00\xff{")),
		seed("empty", false, nil),
	}
}

func fuzzBlobSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	s, _ := fuzzVerifier(t, 0)
	foreign, _ := fuzzVerifier(t, 1)
	sign := func(s *Signer, b []byte) string {
		sig, err := s.SignBlob(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	seed := func(name string, valid bool, data []byte, sig string) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{data, sig}}
	}
	sig := sign(s, fuzzBlobs[0])
	raw, _ := base64.StdEncoding.DecodeString(sig)
	return []fuzzcorpus.Seed{
		seed("model", true, fuzzBlobs[0], sig),
		seed("empty-blob", true, fuzzBlobs[1], sign(s, fuzzBlobs[1])),
		seed("signature-with-newline", true, fuzzBlobs[0], sig+"\n"),
		seed("foreign-key", false, fuzzBlobs[0], sign(foreign, fuzzBlobs[0])),
		seed("other-blob", false, []byte("\x08\x07\x12\x04onnx model bytez"), sig),
		seed("urlsafe-signature", false, fuzzBlobs[0], base64.RawURLEncoding.EncodeToString(raw)),
		seed("truncated-signature", false, fuzzBlobs[0], sig[:len(sig)/2]),
		seed("empty-signature", false, fuzzBlobs[0], ""),
	}
}

// TestFuzzOpenEnvelopeCorpus and TestFuzzVerifyBlobCorpus keep the
// committed seeds in step with the generators above
// (-update-fuzz-corpus rewrites them).
func TestFuzzOpenEnvelopeCorpus(t *testing.T) {
	_, v := fuzzVerifier(t, 0)
	fuzzcorpus.Sync(t, "FuzzOpenEnvelope", fuzzEnvelopeSeeds(t), func(vals []any) error {
		_, err := v.OpenEnvelope(vals[0].([]byte), ManifestPayloadType)
		return err
	})
}

func TestFuzzVerifyBlobCorpus(t *testing.T) {
	_, v := fuzzVerifier(t, 0)
	fuzzcorpus.Sync(t, "FuzzVerifyBlob", fuzzBlobSeeds(t), func(vals []any) error {
		return v.VerifyBlob(bytes.NewReader(vals[0].([]byte)), vals[1].(string))
	})
}
