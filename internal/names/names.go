// Package names is the one rule for the names that pass between the control
// plane and devices — device ids, model names and versions, data set names,
// groups: they become MQTT topic levels, URL path segments and directory
// names, so they are 1–MaxLen characters of [A-Za-z0-9._-], and never "."
// or "..". Check owns the rule and its wording; callers wrap its error in
// their own error type.
//
// It is linked into the agent binary: keep it small and standard-library
// only.
package names

import "fmt"

// MaxLen is the longest name, in bytes (all its characters are ASCII).
const MaxLen = 128

// Rule says the rule in words, for error messages.
const Rule = `use 1–128 letters, digits, '.', '_' and '-', other than "." and ".."`

// Check returns an error unless s is a valid name. what says what s is
// ("model name", "version", "device id") and starts the message.
func Check(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty; %s", what, Rule)
	case len(s) > MaxLen:
		return fmt.Errorf("%s %.20q... is %d characters long; %s", what, s, len(s), Rule)
	case s == "." || s == "..":
		return fmt.Errorf("%s %q is not allowed; %s", what, s, Rule)
	}
	if i, r, bad := FirstBad(s); bad {
		return fmt.Errorf("%s %q has %q at position %d; %s", what, s, r, i, Rule)
	}
	return nil
}

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
