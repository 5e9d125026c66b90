package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/shoalfleet/shoal/agent"
	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
)

// renderOption gives each option's value in settings as the text (or, for
// labels, the mapping) that sets it, by config-file key, for
// FuzzConfigFile's round trip. A new option needs a line here.
var renderOption = map[string]func(s settings) any{
	"data-dir":         func(s settings) any { return s.DataDir },
	"server":           func(s settings) any { return s.ServerURL },
	"broker":           func(s settings) any { return s.BrokerURL },
	"device-id":        func(s settings) any { return s.DeviceID },
	"enroll-token":     func(s settings) any { return s.EnrollToken.Reveal() },
	"api-addr":         func(s settings) any { return s.APIAddr },
	"onnxruntime-lib":  func(s settings) any { return s.ONNXRuntimeLib },
	"profile":          func(s settings) any { return s.Profile },
	"telemetry-window": func(s settings) any { return s.TelemetryWindow.String() },
	"outbox-max-bytes": func(s settings) any { return strconv.FormatInt(s.OutboxMaxBytes, 10) },
	"stats-window": func(s settings) any {
		if s.StatsWindow < 0 {
			return "0" // off
		}
		return s.StatsWindow.String()
	},
	"outbox-sync-interval": func(s settings) any {
		if s.OutboxSyncInterval < 0 {
			return "0" // off
		}
		return s.OutboxSyncInterval.String()
	},
	"outbox-min-free-bytes": func(s settings) any { return strconv.FormatInt(s.OutboxMinFreeBytes, 10) },
	"sync-writes":           func(s settings) any { return strconv.FormatBool(s.SyncWrites) },
	"intra-op-threads":      func(s settings) any { return strconv.Itoa(s.IntraOpThreads) },
	"log-level":             func(s settings) any { return s.LogLevel.String() },
	"log-format":            func(s settings) any { return s.LogFormat },
	"labels":                func(s settings) any { return s.Labels },
	"group":                 func(s settings) any { return s.Group },
	"health-min-predictions": func(s settings) any {
		if s.HealthMinPredictions < 0 {
			return "0" // off
		}
		return strconv.FormatInt(s.HealthMinPredictions, 10)
	},
	"health-min-time": func(s settings) any {
		if s.HealthMinTime < 0 {
			return "0" // off
		}
		return s.HealthMinTime.String()
	},
}

// FuzzConfigFile loads arbitrary config files (YAML or JSON), allocating
// in proportion to their size. A file is either refused with an error that
// names it (and never shows the enrollment token), or it sets exactly the
// options its top-level keys name, each recorded with the file and line,
// to values within their ranges; writing those settings out and loading
// them again gives the same settings. Seeds: testdata/fuzz/FuzzConfigFile, from the config
// files in testdata/ and TestFuzzConfigFileCorpus.
func FuzzConfigFile(f *testing.F) {
	for _, o := range options {
		if renderOption[o.key()] == nil {
			f.Fatalf("option %q has no renderOption entry in config_fuzz_test.go", o.key())
		}
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "shoal-agent.yaml")
	again := filepath.Join(dir, "again.yaml")
	where := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:[1-9][0-9]*$`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, set := defaultSettings(), map[string]string{}
		var err error
		if n := fuzzcorpus.Allocated(func() { err = loadFile(path, &s, set) }); n > fuzzcorpus.AllocBudget(len(data)) {
			t.Fatalf("loading a %d-byte file allocated %d bytes", len(data), n)
		}
		var doc yaml.Node
		yamlErr := yaml.Unmarshal(data, &doc)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			if tok := tokenIn(&doc); len(tok) >= 16 && strings.Contains(withoutOthers(err.Error(), &doc, tok, path), tok) {
				t.Fatalf("error %q shows the enrollment token", err)
			}
			return
		}
		if yamlErr != nil {
			t.Fatalf("loaded a file that is not YAML: %v", yamlErr)
		}
		var keys []string
		if len(doc.Content) > 0 {
			for i := 0; i < len(doc.Content[0].Content); i += 2 {
				keys = append(keys, doc.Content[0].Content[i].Value)
			}
		}
		for name, at := range set {
			if !slices.Contains(keys, name) || !where.MatchString(at) {
				t.Fatalf("set records %q at %q; the file's keys are %q", name, at, keys)
			}
		}
		if len(set) != len(keys) {
			t.Fatalf("set records %d keys; the file has %q", len(set), keys)
		}
		if s.TelemetryWindow < 0 || s.OutboxMaxBytes < 0 || s.OutboxMinFreeBytes < 0 || s.IntraOpThreads < 0 || (s.LogFormat != "text" && s.LogFormat != "json") ||
			agent.ValidateLabels(s.Labels) != nil || (s.Labels != nil && len(s.Labels) == 0) {
			t.Fatalf("out-of-range settings loaded: %+v", s)
		}
		out := map[string]any{}
		for name := range set {
			out[name] = renderOption[name](s)
		}
		b, err := yaml.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(again, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s2, set2 := defaultSettings(), map[string]string{}
		if err := loadFile(again, &s2, set2); err != nil {
			t.Fatalf("the loaded settings, written out, do not load: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(s2, s) || len(set2) != len(set) {
			t.Fatalf("settings written out and loaded again differ:\n got %+v\nwant %+v\n%s", s2, s, b)
		}
	})
}

// tokenIn returns the enroll-token value of a config document, if any.
func tokenIn(doc *yaml.Node) string {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return ""
	}
	m := doc.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		if m[i].Value == "enroll-token" && m[i+1].Kind == yaml.ScalarNode {
			return m[i+1].Value
		}
	}
	return ""
}

// withoutOthers removes from msg what an error may rightly quote: the
// path and every key and value of doc other than the token.
func withoutOthers(msg string, doc *yaml.Node, tok, path string) string {
	msg = strings.ReplaceAll(msg, path, "")
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Value != "" && n.Value != tok {
			msg = strings.ReplaceAll(msg, n.Value, "")
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(doc)
	return msg
}

func fuzzConfigSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	var seeds []fuzzcorpus.Seed
	for _, name := range []string{"good.yaml", "good.json", "empty.yaml"} {
		b, _ := os.ReadFile(filepath.Join("testdata", name)) // read in -update-fuzz-corpus runs only
		seeds = append(seeds, fuzzcorpus.Seed{Name: "file-" + name, Valid: true, Values: []any{b}})
	}
	for _, name := range []string{"bool.bad.yaml", "duplicate.bad.yaml", "duration.bad.yaml", "list.bad.yaml", "loglevel.bad.yaml",
		"nested.bad.yaml", "null.bad.yaml", "syntax.bad.yaml", "threads.bad.json", "typo-key.bad.yaml", "unknown-key.bad.yaml", "unknown.bad.json",
		"labels.bad.yaml", "label-key.bad.yaml", "label-flag.bad.yaml"} {
		b, _ := os.ReadFile(filepath.Join("testdata", name))
		seeds = append(seeds, fuzzcorpus.Seed{Name: "file-" + name, Values: []any{b}})
	}
	for _, s := range []struct {
		name  string
		valid bool
		text  string
	}{
		{"flow-mapping", true, `{data-dir: /d, sync-writes: true, log-level: WARN+2, telemetry-window: 1h2m3.5s}`},
		{"quoted-and-tagged", true, "data-dir: !!str 123\nenroll-token: 'it''s a long secret token'\nintra-op-threads: 16\n"},
		{"document-markers", true, "---\noutbox-max-bytes: 9223372036854775807\n...\n"},
		{"anchor-alias", false, "data-dir: &d /a\nprofile: *d\n"},
		{"merge-key", false, "base: &b {data-dir: /a}\n<<: *b\n"},
		{"two-documents", true, "data-dir: /a\n---\ndata-dir: /b\n"},
		{"overflow", false, "outbox-max-bytes: 9223372036854775808\n"},
		{"tab-indent", false, "data-dir:\n\t/a\n"},
		{"token-then-bad-key", false, "enroll-token: 9f8e7d6c5b4a3f2e1d0c\nbrokers: x\n"},
		{"labels-flow", true, `{labels: {site: berlin, "1": "", "a b": "c=d"}, group: g}`},
		{"labels-empty", true, "labels: {}\n"},
		{"labels-duplicate", false, "labels:\n  a: 1\n  a: 2\n"},
		{"labels-null-value", false, "labels:\n  a:\n"},
		{"labels-nested", false, "labels:\n  a: [1, 2]\n"},
	} {
		seeds = append(seeds, fuzzcorpus.Seed{Name: s.name, Valid: s.valid, Values: []any{[]byte(s.text)}})
	}
	return seeds
}

// TestFuzzConfigFileCorpus keeps testdata/fuzz/FuzzConfigFile in step with
// the seeds above (-update-fuzz-corpus rewrites it): the good files load,
// the bad ones do not.
func TestFuzzConfigFileCorpus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	fuzzcorpus.Sync(t, "FuzzConfigFile", fuzzConfigSeeds(t), func(v []any) error {
		if err := os.WriteFile(path, v[0].([]byte), 0o600); err != nil {
			t.Fatal(err)
		}
		s := defaultSettings()
		return loadFile(path, &s, map[string]string{})
	})
}
