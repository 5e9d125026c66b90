package localapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// maxDepth bounds how deeply a request may nest JSON values.
const maxDepth = 64

// scanner walks a JSON document in place. It decodes only what the
// inference request needs; everything else is checked and skipped. Its
// errors are *requestError (400).
type scanner struct {
	b []byte
	i int
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (s *scanner) ws() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// peek returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// consume skips spaces and then c, if it is next.
func (s *scanner) consume(c byte) bool {
	s.ws()
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) expect(c byte) error {
	if s.consume(c) {
		return nil
	}
	return s.errExpected(fmt.Sprintf("%q", c))
}

func (s *scanner) errExpected(what string) error {
	if s.i >= len(s.b) {
		return badRequest("malformed JSON: the body ends where %s was expected", what)
	}
	return badRequest("malformed JSON at byte %d: expected %s, found %s", s.i, what, snippet(s.b[s.i:]))
}

// snippet shows the start of b (a value, or where one was expected) in an
// error message: a string up to its closing quote, anything else up to the
// next delimiter, at most 24 bytes either way.
func snippet(b []byte) string {
	const most = 24
	n := 0
	if len(b) > 0 && b[0] == '"' {
		for n = 1; n < len(b) && n < most && b[n] != '"'; n++ {
			if b[n] == '\\' {
				n++
			}
		}
		if n < len(b) && n < most && b[n] == '"' {
			n++
		}
	} else {
		for n < len(b) && n < most && (n == 0 || !isDelim(b[n])) {
			n++
		}
	}
	n = min(n, len(b))
	more := ""
	if n == most && n < len(b) && !isDelim(b[n]) {
		more = "…"
	}
	// As written, unless it holds bytes that would garble the message.
	if !utf8.Valid(b[:n]) || bytes.ContainsFunc(b[:n], func(r rune) bool { return r < 0x20 }) {
		return fmt.Sprintf("%q", b[:n]) + more
	}
	return string(b[:n]) + more
}

func isDelim(c byte) bool { return c == ',' || c == ']' || c == '}' || c == ':' || isSpace(c) }

// sepOrEnd skips spaces and a ',' (reporting more = true) or the closing
// byte (more = false).
func (s *scanner) sepOrEnd(close byte) (more bool, err error) {
	s.ws()
	switch s.peek() {
	case ',':
		s.i++
		return true, nil
	case close:
		s.i++
		return false, nil
	}
	return false, s.errExpected(fmt.Sprintf("',' or %q", close))
}

// number is a scanned JSON number: its text, and its value as ±m·10^e
// when the digits fit m (fits).
type number struct {
	tok     []byte
	integer bool // no fraction or exponent
	neg     bool
	fits    bool // at most 19 significant digits
	m       uint64
	e       int
}

// number scans a JSON number, reading its digits as it checks them. ok is
// false (and nothing is consumed) when no number starts here.
func (s *scanner) number(n *number) bool {
	*n = number{}
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		n.neg = true
		i++
	}
	nd := 0 // significant digits in m
	n.fits = true
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for ; i < len(b) && isDigit(b[i]); i++ {
			if nd < 19 {
				n.m = n.m*10 + uint64(b[i]-'0')
				nd++
			} else {
				n.fits = false
			}
		}
	default:
		return false
	}
	n.integer = true
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		if n.m == 0 {
			for i < len(b) && b[i] == '0' {
				i++ // leading zeros: not significant
			}
		}
		// Eight digits at a time while they fit.
		for nd+8 <= 19 && i+8 <= len(b) {
			v := binary.LittleEndian.Uint64(b[i:])
			if !eightDigits(v) {
				break
			}
			n.m = n.m*100000000 + uint64(parseEight(v))
			nd += 8
			i += 8
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
			if nd < 19 {
				n.m = n.m*10 + uint64(b[i]-'0')
				nd++
			} else {
				n.fits = false
			}
		}
		if i == d {
			return false
		}
		n.e = -(i - d) // every fraction digit scales by 10⁻¹ …
		n.integer = false
	}
	if !n.fits {
		// … except the digits beyond 19 not in m; the fallback re-reads
		// the token anyway, so only its validity matters now.
		n.e = 0
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		d := i
		x := 0
		for ; i < len(b) && isDigit(b[i]); i++ {
			if x < 100000 {
				x = x*10 + int(b[i]-'0')
			}
		}
		if i == d {
			return false
		}
		if eneg {
			x = -x
		}
		n.e += x
		n.integer = false
	}
	n.tok = b[s.i:i]
	s.i = i
	return true
}

// eightDigits reports whether the eight bytes of v (little-endian) are all
// ASCII digits.
func eightDigits(v uint64) bool {
	return (v&0xF0F0F0F0F0F0F0F0)|(((v+0x0606060606060606)&0xF0F0F0F0F0F0F0F0)>>4) == 0x3333333333333333
}

// parseEight returns the number the eight ASCII digits of v spell, the
// first byte most significant (as in simdjson and fast_float).
func parseEight(v uint64) uint32 {
	const mask = 0x000000FF000000FF
	const mul1 = 0x000F424000000064 // 100 + (1000000 << 32)
	const mul2 = 0x0000271000000001 // 1 + (10000 << 32)
	v -= 0x3030303030303030
	v = v*10 + v>>8
	return uint32((((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32)
}

// rawString scans a JSON string at s.i and returns its contents between
// the quotes, still escaped when escaped is true. The result aliases s.b.
func (s *scanner) rawString() (raw []byte, escaped bool, err error) {
	if s.peek() != '"' {
		return nil, false, s.errExpected("a string")
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], escaped, nil
		case c == '\\':
			escaped = true
			i++ // skip the escaped byte; unescape checks it
		case c < 0x20:
			return nil, false, badRequest("malformed JSON at byte %d: a control character inside a string", i)
		}
	}
	return nil, false, badRequest("malformed JSON: a string starting at byte %d is not closed", s.i)
}

// str scans a JSON string and returns its decoded value (a copy).
func (s *scanner) str() (string, error) {
	at := s.i
	raw, escaped, err := s.rawString()
	if err != nil {
		return "", err
	}
	if !escaped {
		return string(raw), nil
	}
	v, ok := unescape(raw)
	if !ok {
		return "", badRequest("malformed JSON at byte %d: a string has a bad escape", at)
	}
	return string(v), nil
}

// key scans an object key; the result aliases s.b unless it had escapes.
func (s *scanner) key() ([]byte, error) {
	s.ws()
	at := s.i
	raw, escaped, err := s.rawString()
	if err != nil {
		return nil, s.errExpected("a key string")
	}
	if escaped {
		v, ok := unescape(raw)
		if !ok {
			return nil, badRequest("malformed JSON at byte %d: a key has a bad escape", at)
		}
		raw = v
	}
	if err := s.expect(':'); err != nil {
		return nil, err
	}
	s.ws()
	return raw, nil
}

func hexVal(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case isDigit(c):
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// unescape decodes the escapes of a JSON string's contents.
func unescape(raw []byte) ([]byte, bool) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(raw) {
			return nil, false
		}
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hexVal(raw[i+1:])
			if !ok {
				return nil, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				// A pair makes one rune; a lone half becomes U+FFFD, as in
				// encoding/json.
				paired := false
				if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					if r2, ok := hexVal(raw[i+3:]); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							r, paired = d, true
							i += 6
						}
					}
				}
				if !paired {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return out, true
}

// skip scans over one JSON value of any kind.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return badRequest("malformed JSON: values nest deeper than %d levels", maxDepth)
	}
	s.ws()
	switch c := s.peek(); {
	case c == '{':
		s.i++
		if s.consume('}') {
			return nil
		}
		for {
			if _, err := s.key(); err != nil {
				return err
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			if more, err := s.sepOrEnd('}'); err != nil || !more {
				return err
			}
		}
	case c == '[':
		s.i++
		if s.consume(']') {
			return nil
		}
		for {
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			if more, err := s.sepOrEnd(']'); err != nil || !more {
				return err
			}
		}
	case c == '"':
		_, _, err := s.rawString()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		var n number
		if !s.number(&n) {
			return s.errExpected("a JSON value")
		}
		return nil
	}
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return nil
	}
	return s.errExpected("a JSON value")
}

// unsafeString views b as a string without copying, for strconv parsers,
// which do not keep their argument past a successful return; the error
// paths that do are never kept.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
