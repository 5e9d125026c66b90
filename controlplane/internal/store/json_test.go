package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

// mapTx is a Tx over a map, enough for the JSON helpers.
type mapTx struct {
	m      map[string][]byte
	getErr error
}

var _ store.Tx = (*mapTx)(nil)

func (t *mapTx) Get(key []byte) ([]byte, error) {
	if t.getErr != nil {
		return nil, t.getErr
	}
	v, ok := t.m[string(key)]
	if !ok {
		return nil, store.ErrNotFound
	}
	return v, nil
}

func (t *mapTx) Set(key, value []byte) error {
	t.m[string(key)] = append([]byte(nil), value...)
	return nil
}

func (t *mapTx) Delete(key []byte) error { delete(t.m, string(key)); return nil }

func (t *mapTx) Scan([]byte, func(key, value []byte) error) error {
	return errors.New("not implemented")
}

func TestJSON(t *testing.T) {
	type rec struct {
		N int    `json:"n"`
		S string `json:"s"`
	}
	tx := &mapTx{m: map[string][]byte{}}

	var got rec
	found, err := store.GetJSON(tx, []byte("k"), &got)
	if found || err != nil {
		t.Fatalf("GetJSON of a missing key = %v, %v; want false, nil", found, err)
	}

	if err := store.PutJSON(tx, []byte("k"), rec{N: 7, S: "x"}); err != nil {
		t.Fatal(err)
	}
	if s := string(tx.m["k"]); s != `{"n":7,"s":"x"}` {
		t.Fatalf("stored %s", s)
	}
	found, err = store.GetJSON(tx, []byte("k"), &got)
	if !found || err != nil || got != (rec{N: 7, S: "x"}) {
		t.Fatalf("GetJSON = %v, %v, %+v; want true, nil, {7 x}", found, err, got)
	}

	tx.m["bad"] = []byte("{")
	if found, err := store.GetJSON(tx, []byte("bad"), &got); found || err == nil || !strings.Contains(err.Error(), "decode bad") {
		t.Fatalf("GetJSON of malformed JSON = %v, %v; want false and a decode error naming the key", found, err)
	}

	if err := store.PutJSON(tx, []byte("f"), func() {}); err == nil || !strings.Contains(err.Error(), "encode f") {
		t.Fatalf("PutJSON of a func: %v; want an encode error naming the key", err)
	}

	tx.getErr = store.ErrConflict
	if found, err := store.GetJSON(tx, []byte("k"), &got); found || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("GetJSON with a failing Get = %v, %v; want false and the wrapped error", found, err)
	}
}

// mapStore runs every transaction on one mapTx.
type mapStore struct{ tx *mapTx }

func (s mapStore) View(fn func(store.Tx) error) error   { return fn(s.tx) }
func (s mapStore) Update(fn func(store.Tx) error) error { return fn(s.tx) }
func (s mapStore) Close() error                         { return nil }

func TestViewJSON(t *testing.T) {
	type rec struct {
		N int `json:"n"`
	}
	s := mapStore{&mapTx{m: map[string][]byte{"k": []byte(`{"n":7}`)}}}
	ctx := context.Background()
	if v, ok, err := store.ViewJSON[rec](ctx, s, []byte("k")); !ok || err != nil || v.N != 7 {
		t.Errorf("ViewJSON(k) = %+v, %v, %v; want {7}, true", v, ok, err)
	}
	if v, ok, err := store.ViewJSON[rec](ctx, s, []byte("missing")); ok || err != nil || v.N != 0 {
		t.Errorf("ViewJSON(missing) = %+v, %v, %v; want zero, false, nil", v, ok, err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, ok, err := store.ViewJSON[rec](done, s, []byte("k")); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("ViewJSON after the context ended = %v, %v; want context.Canceled", ok, err)
	}
}
