package firmwareprofiles

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// decodeStrict parses data as one YAML document and checks it against
// Profile's shape before it is decoded: every key known and given once,
// every value of the right kind. yaml.v3's own strict mode names the Go
// type rather than the key, and misses repeated keys in nested mappings.
// It returns the line of every key and list item by path
// ("budgets.max_model_bytes", "execution_providers.0").
func decodeStrict(data []byte, source string) (map[string]int, *yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("%s: empty profile; a profile needs at least name, match.arch, execution_providers and precision", source)
		}
		return nil, nil, fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		line := next.Line
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, nil, fmt.Errorf("%s:%d: a second YAML document; give one profile per file", source, line)
	}
	if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
		return nil, nil, fmt.Errorf("%s: empty profile; a profile needs at least name, match.arch, execution_providers and precision", source)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s:%d: a profile maps keys to values (name: ..., match: ...), not a %s", source, root.Line, kindName(root))
	}
	lines := map[string]int{}
	if err := check(root, reflect.TypeOf(Profile{}), "", lines); err != nil {
		return nil, nil, fmt.Errorf("%s:%w", source, err)
	}
	return lines, root, nil
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// check walks n against t. Its errors start with the line: "12: ...".
func check(n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	if n.Kind == yaml.AliasNode {
		return fmt.Errorf("%d: %s: aliases (*name) are not supported in profiles; write the value out", n.Line, orRoot(path))
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Tag == "!!null" {
		return nil // the zero value; validate decides if that is allowed
	}
	isUnmarshaler := reflect.PointerTo(t).Implements(unmarshalerType)
	switch {
	case t.Kind() == reflect.Struct && !isUnmarshaler:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%d: %s: want a mapping of %s, not a %s", n.Line, orRoot(path), strings.Join(keysOf(t), ", "), kindName(n))
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fieldFor(t, k.Value)
			if !ok {
				return fmt.Errorf("%d: unknown key %q%s%s; the keys are: %s", k.Line, k.Value, in(path), hint(t, k.Value), strings.Join(keysOf(t), ", "))
			}
			if first, dup := seen[k.Value]; dup {
				return fmt.Errorf("%d: key %q%s is set twice (first on line %d)", k.Line, k.Value, in(path), first)
			}
			seen[k.Value] = k.Line
			p := join(path, k.Value)
			lines[p] = k.Line
			if err := check(v, f.Type, p, lines); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%d: %s: want a list, e.g. [a, b], not a %s", n.Line, path, kindName(n))
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s.%d", path, i)
			lines[p] = item.Line
			if err := check(item, t.Elem(), p, lines); err != nil {
				return err
			}
		}
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return fmt.Errorf("%d: %s: want a single value, not a %s", n.Line, path, kindName(n))
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				return fmt.Errorf("%d: %s: %q is not %s", n.Line, path, n.Value, describe(t))
			}
			return fmt.Errorf("%d: %s: %v", n.Line, path, err)
		}
		return nil
	}
}

// fieldFor returns t's field whose yaml tag is key.
func fieldFor(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.IsExported() && yamlKey(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlKey(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return tag
}

// keysOf lists t's YAML keys, sorted.
func keysOf(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if k := yamlKey(f); f.IsExported() && k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// hint suggests the key meant when key differs from one only in case or
// in '-' for '_'.
func hint(t reflect.Type, key string) string {
	alt := strings.ReplaceAll(strings.ToLower(key), "-", "_")
	if alt == key {
		return ""
	}
	if _, ok := fieldFor(t, alt); ok {
		return fmt.Sprintf(" (did you mean %q?)", alt)
	}
	return ""
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	default:
		return "text"
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "single value"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func orRoot(path string) string {
	if path == "" {
		return "profile"
	}
	return path
}
