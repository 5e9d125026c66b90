package badgerstore

import (
	"log/slog"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	dirs := map[store.Store]string{}
	open := func(t *testing.T) store.Store {
		dir := t.TempDir()
		s, err := Open(dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		dirs[s] = dir
		return s
	}
	reopen := func(t *testing.T, s store.Store) store.Store {
		dir := dirs[s]
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
		return s2
	}
	storetest.Run(t, open, reopen)
}
