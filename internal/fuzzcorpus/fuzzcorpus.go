// Package fuzzcorpus keeps the seed corpora of Shoal's fuzz targets: files
// under a package's testdata/fuzz/{FuzzName}/ in the format `go test -fuzz`
// reads ("go test fuzz v1"). Seeds are generated from real messages by a
// test in the package that owns the fuzz target; that test rewrites them
// with -update-fuzz-corpus and otherwise checks the committed files: each
// seed is there, the valid ones are accepted and the malformed ones are
// refused. To regenerate a package's seeds:
//
//	go test -run 'Corpus$' . -args -update-fuzz-corpus
//
// It is for tests only; no binary links it.
package fuzzcorpus

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update-fuzz-corpus", false, "rewrite the generated seed corpora under testdata/fuzz")

const header = "go test fuzz v1"

// Seed is one corpus entry: the arguments of a fuzz target, in order.
type Seed struct {
	// Name is the file name under testdata/fuzz/{target}/.
	Name   string
	Values []any
	// Valid marks a message the decoder must accept; the others must be
	// refused.
	Valid bool
}

// Sync writes the seeds of target (with -update-fuzz-corpus) or checks the
// committed ones: every seed's file exists and parses, accept returns nil
// for the values of each valid seed and an error for each malformed one.
// It checks the committed values, not the freshly generated ones: a
// signature differs on every run, and what matters is that what was
// committed still means what its name says.
func Sync(t testing.TB, target string, seeds []Seed, accept func(values []any) error) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range seeds {
			b, err := Marshal(s.Values...)
			if err != nil {
				t.Fatalf("seed %s: %v", s.Name, err)
			}
			if err := os.WriteFile(filepath.Join(dir, s.Name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range seeds {
		path := filepath.Join(dir, s.Name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (regenerate: go test -run '^%s$' . -args -update-fuzz-corpus, in this package's directory)", path, err, t.Name())
			continue
		}
		vals, err := Unmarshal(b)
		if err != nil {
			t.Errorf("seed %s: %v", path, err)
			continue
		}
		if len(vals) != len(s.Values) {
			t.Errorf("seed %s has %d values; the target takes %d (regenerate with -update-fuzz-corpus)", path, len(vals), len(s.Values))
			continue
		}
		err = accept(vals)
		switch {
		case s.Valid && err != nil:
			t.Errorf("valid seed %s is refused: %v (regenerate with -update-fuzz-corpus if the message format changed)", path, err)
		case !s.Valid && err == nil:
			t.Errorf("malformed seed %s is accepted", path)
		}
	}
}

// Marshal encodes values as a corpus file, as the go command does.
func Marshal(values ...any) ([]byte, error) {
	if len(values) == 0 {
		return nil, errors.New("a corpus entry needs at least one value")
	}
	b := bytes.NewBufferString(header + "\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(b, "string(%q)\n", v)
		case byte:
			fmt.Fprintf(b, "byte(%q)\n", v)
		case bool, int, int8, int16, int64, uint, uint16, uint32, uint64:
			fmt.Fprintf(b, "%T(%v)\n", v, v)
		default:
			return nil, fmt.Errorf("corpus values of type %T are not supported", v)
		}
	}
	return b.Bytes(), nil
}

// Unmarshal decodes a corpus file holding the types Marshal writes.
func Unmarshal(b []byte) ([]any, error) {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 0 || lines[0] != header {
		return nil, fmt.Errorf("not a corpus file: the first line must be %q", header)
	}
	var out []any
	for i, line := range lines[1:] {
		v, err := parseValue(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+2, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("a corpus file holds at least one value")
	}
	return out, nil
}

func parseValue(line string) (any, error) {
	expr, err := parser.ParseExpr(line)
	if err != nil {
		return nil, err
	}
	call, ok := expr.(*ast.CallExpr)
	if !ok || len(call.Args) != 1 {
		return nil, fmt.Errorf("%q is not a conversion T(literal)", line)
	}
	var typ string
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		typ = fn.Name
	case *ast.ArrayType:
		if elt, ok := fn.Elt.(*ast.Ident); ok && fn.Len == nil && (elt.Name == "byte" || elt.Name == "uint8") {
			typ = "[]byte"
		}
	}
	if id, ok := call.Args[0].(*ast.Ident); ok && typ == "bool" {
		switch id.Name {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	arg, neg := call.Args[0], ""
	if u, ok := arg.(*ast.UnaryExpr); ok && u.Op == token.SUB {
		arg, neg = u.X, "-"
	}
	lit, ok := arg.(*ast.BasicLit)
	if !ok || (neg != "" && (lit.Kind != token.INT || (typ != "int" && typ != "int64"))) {
		return nil, fmt.Errorf("%q: the argument is not a literal", line)
	}
	switch {
	case typ == "[]byte" && lit.Kind == token.STRING:
		s, err := strconv.Unquote(lit.Value)
		return []byte(s), err
	case typ == "string" && lit.Kind == token.STRING:
		return strconv.Unquote(lit.Value)
	case (typ == "byte" || typ == "uint8") && lit.Kind == token.CHAR:
		r, _, _, err := strconv.UnquoteChar(lit.Value[1:len(lit.Value)-1], '\'')
		if err != nil || r > 0xff {
			return nil, fmt.Errorf("%q is not a byte", line)
		}
		return byte(r), nil
	case (typ == "byte" || typ == "uint8") && lit.Kind == token.INT:
		n, err := strconv.ParseUint(lit.Value, 0, 8)
		return byte(n), err
	case lit.Kind == token.INT:
		switch typ {
		case "int", "int64":
			n, err := strconv.ParseInt(neg+lit.Value, 0, 64)
			if typ == "int" {
				return int(n), err
			}
			return n, err
		case "uint64", "uint":
			n, err := strconv.ParseUint(lit.Value, 0, 64)
			if typ == "uint" {
				return uint(n), err
			}
			return n, err
		case "uint32":
			n, err := strconv.ParseUint(lit.Value, 0, 32)
			return uint32(n), err
		}
	}
	return nil, fmt.Errorf("%q: unsupported value", line)
}
