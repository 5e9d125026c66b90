//go:build !unix

package outbox

import "os"

// lockFile does not lock here; Badger's own lock still guards its files.
func lockFile(string) (*os.File, error) { return nil, nil }
