package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// GetJSON reads the JSON value of key into v. found is false, with a nil
// error, if the key is missing; other errors name the key.
func GetJSON(tx Tx, key []byte, v any) (found bool, err error) {
	b, err := tx.Get(key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

// PutJSON writes v as JSON under key. Errors name the key.
func PutJSON(tx Tx, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := tx.Set(key, b); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// ViewJSON reads the JSON value of key in a read-only transaction of s. ok
// is false, with a nil error, if the key is missing; it fails at once if
// ctx has ended.
func ViewJSON[T any](ctx context.Context, s Store, key []byte) (v T, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return v, false, err
	}
	err = s.View(func(tx Tx) error {
		ok, err = GetJSON(tx, key, &v)
		return err
	})
	return v, ok, err
}
