// Package names holds the character rule for the names that pass between
// the control plane and devices (device ids, model names and versions):
// they become MQTT topic levels, URL path segments and directory names, so
// they are made of [A-Za-z0-9._-] only. Each caller adds its own length and
// position rules and words its own errors.
//
// It is linked into the agent binary: keep it small and standard-library
// only.
package names

// FirstBad returns the byte offset and the first character of s that is not
// in [A-Za-z0-9._-]; found is false if every character is allowed.
func FirstBad(s string) (i int, r rune, found bool) {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return i, r, true
		}
	}
	return 0, 0, false
}
