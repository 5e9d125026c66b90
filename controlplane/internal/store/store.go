// Package store defines the control plane's storage contract: an ordered,
// transactional key-value store. Domain packages (registry, fleet, monitor)
// lay out their own keys under their own prefixes on top of it, so a new
// backend (Badger embedded, PostgreSQL for replicas) implements only this
// small interface and passes the conformance suite in storetest.
package store

import "errors"

// ErrNotFound is returned by Tx.Get for a missing key.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned by Update when a concurrent transaction changed
// what this one read; the caller may retry.
var ErrConflict = errors.New("transaction conflict")

// Store is a transactional key-value store. Update commits durably (synced
// to disk) before it returns nil: callers acknowledge data to devices only
// after Update returns.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits it if fn
	// returns nil. It returns ErrConflict (wrapped) on a write conflict.
	Update(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Keys and values passed in may be reused by the
// caller after the call returns; values returned are the caller's to keep.
type Tx interface {
	// Get returns the value of key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	Set(key, value []byte) error
	Delete(key []byte) error
	// Scan calls fn for every key with prefix, in ascending key order,
	// stopping at the first error fn returns (which Scan returns).
	Scan(prefix []byte, fn func(key, value []byte) error) error
}

// Retry runs Update up to attempts times while it fails with ErrConflict.
func Retry(s Store, attempts int, fn func(Tx) error) error {
	var err error
	for i := 0; i < attempts; i++ {
		if err = s.Update(fn); !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return err
}
