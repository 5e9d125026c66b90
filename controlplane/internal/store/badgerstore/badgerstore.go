// Package badgerstore is the embedded store.Store backend, on Badger.
package badgerstore

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

// Store is a store.Store on a Badger database.
type Store struct {
	db *badger.DB
}

var _ store.Store = (*Store)(nil)

// Open opens (or creates) the Badger database in dir. Writes are synced
// before Update returns.
func Open(dir string, log *slog.Logger) (*Store, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log}).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger store in %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// View implements store.Store.
func (s *Store) View(fn func(store.Tx) error) error {
	return s.db.View(func(txn *badger.Txn) error { return fn(tx{txn}) })
}

// Update implements store.Store.
func (s *Store) Update(fn func(store.Tx) error) error {
	err := s.db.Update(func(txn *badger.Txn) error { return fn(tx{txn}) })
	if errors.Is(err, badger.ErrConflict) {
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	}
	return err
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }

type tx struct{ txn *badger.Txn }

func (t tx) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t tx) Set(key, value []byte) error {
	// Badger keeps the slices until commit; the caller may reuse theirs.
	return t.txn.Set(append([]byte(nil), key...), append([]byte(nil), value...))
}

func (t tx) Delete(key []byte) error {
	return t.txn.Delete(append([]byte(nil), key...))
}

func (t tx) Scan(prefix []byte, fn func(key, value []byte) error) error {
	it := t.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := fn(item.KeyCopy(nil), v); err != nil {
			return err
		}
	}
	return nil
}

type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Infof(f string, a ...any)  {}
func (l badgerLogger) Debugf(f string, a ...any) {}
