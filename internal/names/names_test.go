package names

import "testing"

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
