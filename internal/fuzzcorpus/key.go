package fuzzcorpus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
)

// SigningKey returns a fixed ECDSA P-256 key (n = 0, 1, 2, ...) for seeds that
// carry signatures, so that committed seeds keep verifying with the key the
// fuzz target pins. It is derived from a public string: it is not a secret
// and nothing but tests may trust it.
func SigningKey(n int) *ecdsa.PrivateKey {
	d := sha256.Sum256([]byte{'s', 'h', 'o', 'a', 'l', ' ', 'f', 'u', 'z', 'z', ' ', 'k', 'e', 'y', ' ', byte('0' + n)})
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		panic(err) // d is below the group order for these inputs
	}
	return k
}
