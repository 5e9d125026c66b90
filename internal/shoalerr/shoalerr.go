// Package shoalerr is Shoal's error type: a stable code, the operation that
// failed, a message for people and the wrapped cause. Codes become HTTP
// statuses only in the API layer and MQTT reasons only in the MQTT layer.
package shoalerr

import (
	"errors"
	"fmt"
)

// Code classifies an error.
type Code string

// The codes.
const (
	Invalid      Code = "invalid"
	NotFound     Code = "not_found"
	Conflict     Code = "conflict"
	Unauthorized Code = "unauthorized"
	Forbidden    Code = "forbidden"
	TooLarge     Code = "too_large"
	Unavailable  Code = "unavailable"
	Internal     Code = "internal"
)

// Error is an error with a code.
type Error struct {
	Code Code
	Op   string // e.g. "registry.Push"
	Msg  string // for people: what went wrong, with which input, what to do
	Err  error  // cause, may be nil
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = string(e.Code)
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// E returns a new *Error.
func E(code Code, op, format string, args ...any) *Error {
	return &Error{Code: code, Op: op, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns a new *Error wrapping err.
func Wrap(err error, code Code, op, format string, args ...any) *Error {
	return &Error{Code: code, Op: op, Msg: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Is reports whether err carries code.
func Is(err error, code Code) bool {
	return err != nil && CodeOf(err) == code
}
