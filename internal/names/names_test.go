package names

import (
	"strings"
	"testing"
)

func TestFirstBad(t *testing.T) {
	for _, tc := range []struct {
		s     string
		i     int
		r     rune
		found bool
	}{
		{"", 0, 0, false},
		{"Model-1.2_x", 0, 0, false},
		{"a/b", 1, '/', true},
		{"a b+c", 1, ' ', true},
		{"é", 0, 'é', true},
		{"ab\x00", 2, 0, true},
		{"ok#", 2, '#', true},
		{"äb", 0, 'ä', true},
		{"xä", 1, 'ä', true},
		{"+", 0, '+', true},
	} {
		i, r, found := FirstBad(tc.s)
		if i != tc.i || r != tc.r || found != tc.found {
			t.Errorf("FirstBad(%q) = %d, %q, %v; want %d, %q, %v", tc.s, i, r, found, tc.i, tc.r, tc.found)
		}
	}
}

func TestCheck(t *testing.T) {
	long := strings.Repeat("a", MaxLen)
	for _, tc := range []struct {
		s    string
		want string // "" if valid; else a part of the error
	}{
		{"m", ""},
		{"Model-1.2_x", ""},
		{"1", ""},
		{long, ""},
		{"...", ""},
		{".hidden", ""},
		{"", "model name is empty"},
		{long + "a", "is 129 characters long"},
		{".", `model name "." is not allowed`},
		{"..", `model name ".." is not allowed`},
		{"a/b", `has '/' at position 1`},
		{"a b", `has ' ' at position 1`},
		{"é", `has 'é' at position 0`},
		{"ab\x00", `has '\x00' at position 2`},
		{"x\n", `has '\n' at position 1`},
	} {
		err := Check("model name", tc.s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Check(%q) = %v; want nil", tc.s, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Check(%q) = %v; want an error with %q", tc.s, err, tc.want)
		case err != nil && !strings.Contains(err.Error(), Rule):
			t.Errorf("Check(%q) = %v; want the rule in the message", tc.s, err)
		}
	}
}
