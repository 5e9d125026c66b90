// Package storetest is the conformance suite every store.Store backend runs.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

// Run runs the conformance suite. open returns a fresh, empty store; reopen
// (optional) closes s and opens the same data again, to check durability.
func Run(t *testing.T, open func(t *testing.T) store.Store, reopen func(t *testing.T, s store.Store) store.Store) {
	t.Run("GetSetDelete", func(t *testing.T) {
		s := open(t)
		err := s.Update(func(tx store.Tx) error {
			if _, err := tx.Get([]byte("a")); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("Get missing: err = %v; want ErrNotFound", err)
			}
			return tx.Set([]byte("a"), []byte("1"))
		})
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, s, "a", "1")
		if err := s.Update(func(tx store.Tx) error { return tx.Delete([]byte("a")) }); err != nil {
			t.Fatal(err)
		}
		s.View(func(tx store.Tx) error {
			if _, err := tx.Get([]byte("a")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get deleted: err = %v", err)
			}
			return nil
		})
	})
	t.Run("RollbackOnError", func(t *testing.T) {
		s := open(t)
		boom := errors.New("boom")
		err := s.Update(func(tx store.Tx) error {
			tx.Set([]byte("k"), []byte("v"))
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update err = %v; want boom", err)
		}
		s.View(func(tx store.Tx) error {
			if _, err := tx.Get([]byte("k")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("write of a failed transaction is visible: %v", err)
			}
			return nil
		})
	})
	t.Run("ScanPrefixOrdered", func(t *testing.T) {
		s := open(t)
		s.Update(func(tx store.Tx) error {
			for _, k := range []string{"p/b", "p/a", "q/a", "p/c", "o"} {
				tx.Set([]byte(k), []byte("v"+k))
			}
			return nil
		})
		var got []string
		s.View(func(tx store.Tx) error {
			return tx.Scan([]byte("p/"), func(k, v []byte) error {
				if string(v) != "v"+string(k) {
					t.Errorf("value of %s = %s", k, v)
				}
				got = append(got, string(k))
				return nil
			})
		})
		if fmt.Sprint(got) != "[p/a p/b p/c]" {
			t.Errorf("Scan = %v", got)
		}
		stop := errors.New("stop")
		n := 0
		err := s.View(func(tx store.Tx) error {
			return tx.Scan([]byte("p/"), func(k, v []byte) error { n++; return stop })
		})
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("Scan did not stop at the first error: n=%d err=%v", n, err)
		}
	})
	t.Run("ValuesAreCopies", func(t *testing.T) {
		s := open(t)
		key, val := []byte("k"), []byte("v1")
		s.Update(func(tx store.Tx) error { return tx.Set(key, val) })
		val[1] = '9'
		key[0] = 'x'
		mustGet(t, s, "k", "v1")
		var kept []byte
		s.View(func(tx store.Tx) error {
			return tx.Scan([]byte("k"), func(k, v []byte) error { kept = v; return nil })
		})
		s.Update(func(tx store.Tx) error { return tx.Set([]byte("k"), []byte("v2")) })
		if !bytes.Equal(kept, []byte("v1")) {
			t.Errorf("value kept from Scan changed to %q", kept)
		}
	})
	t.Run("ConcurrentCounters", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		const workers, each = 4, 25
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					err := store.Retry(s, 1000, func(tx store.Tx) error {
						n := 0
						v, err := tx.Get([]byte("n"))
						if err == nil {
							fmt.Sscan(string(v), &n)
						} else if !errors.Is(err, store.ErrNotFound) {
							return err
						}
						return tx.Set([]byte("n"), []byte(fmt.Sprint(n+1)))
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		mustGet(t, s, "n", fmt.Sprint(workers*each))
	})
	if reopen != nil {
		t.Run("Durable", func(t *testing.T) {
			s := open(t)
			s.Update(func(tx store.Tx) error { return tx.Set([]byte("d"), []byte("1")) })
			s = reopen(t, s)
			mustGet(t, s, "d", "1")
		})
	}
}

func mustGet(t *testing.T, s store.Store, key, want string) {
	t.Helper()
	err := s.View(func(tx store.Tx) error {
		v, err := tx.Get([]byte(key))
		if err != nil {
			return err
		}
		if string(v) != want {
			return fmt.Errorf("Get(%q) = %q; want %q", key, v, want)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
