//go:build !failpoints

package failpoint

import "time"

// Now is the agent's wall clock. Without the failpoints tag it is time.Now.
func Now() time.Time { return time.Now() }
