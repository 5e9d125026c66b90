//go:build !failpoints

package failpoint

// Enabled reports whether this build has failpoints (the failpoints tag).
const Enabled = false

// Hit marks a point; without the failpoints tag it does nothing and is
// inlined away.
func Hit(name string) {}
