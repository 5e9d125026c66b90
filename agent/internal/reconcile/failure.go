package reconcile

import "errors"

// failure is an error that says whether trying the same manifest again can
// help. Network trouble and full disks are transient: retried with backoff.
// Everything about the manifest or artifact itself (signature, digest,
// size, expiry, sequence, self-test, a 404) is permanent: the manifest is
// not tried again until the desired state changes.
type failure struct {
	err   error
	retry bool
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func transient(err error) error { return &failure{err: err, retry: true} }
func permanent(err error) error { return &failure{err: err, retry: false} }

// retryable reports whether err is a transient failure.
func retryable(err error) bool {
	var f *failure
	return errors.As(err, &f) && f.retry
}
