package main

import (
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoalfleet/shoal/agent"
)

// settings is everything `shoal-agent run` can be told.
type settings struct {
	agent.Config
	LogLevel  slog.Level
	LogFormat string // text or json
}

func defaultSettings() settings {
	return settings{LogLevel: slog.LevelInfo, LogFormat: "text"}
}

// option is one setting, spelled the same as a flag (--data-dir) and as a
// config-file key (data-dir:), but for a set of key=value pairs, which is
// a repeated flag in the singular (--label k=v) and a mapping in the file
// under the plural (labels:).
type option struct {
	name   string
	usage  string
	isBool bool
	set    func(s *settings, v string) error

	// A set of pairs has fileKey and setPairs instead of set. The pairs
	// given by flags replace the file's as a whole.
	fileKey  string
	setPairs func(s *settings, pairs map[string]string) error
}

// key is the option's config-file key.
func (o option) key() string {
	if o.fileKey != "" {
		return o.fileKey
	}
	return o.name
}

var options = []option{
	{name: "data-dir", usage: "directory for the identity, models and telemetry queue (required)", set: func(s *settings, v string) error { s.DataDir = v; return nil }},
	{name: "server", usage: "control plane URL, e.g. http://10.0.0.1:8080 (needed to enroll; remembered after)", set: func(s *settings, v string) error { s.ServerURL = v; return nil }},
	{name: "broker", usage: "MQTT broker URL (default: the one given at enrollment)", set: func(s *settings, v string) error { s.BrokerURL = v; return nil }},
	{name: "device-id", usage: "this device's id (needed to enroll)", set: func(s *settings, v string) error { s.DeviceID = v; return nil }},
	{name: "enroll-token", usage: "one-time enrollment token from `shoal token create` (or $SHOAL_ENROLL_TOKEN)", set: func(s *settings, v string) error { s.EnrollToken = agent.Secret(v); return nil }},
	{name: "api-addr", usage: "listen address of the local inference API (default " + agent.DefaultAPIAddr + ")", set: func(s *settings, v string) error { s.APIAddr = v; return nil }},
	{name: "onnxruntime-lib", usage: "path of libonnxruntime.so (default: $ONNXRUNTIME_LIB, the cache, the system)", set: func(s *settings, v string) error { s.ONNXRuntimeLib = v; return nil }},
	{name: "profile", usage: "firmware profile of this device, one of " + profileNames() + " (default: detected from the hardware); its limits are the defaults of outbox-max-bytes, telemetry-window and intra-op-threads", set: func(s *settings, v string) error { s.Profile = v; return nil }},
	{name: "telemetry-window", usage: "telemetry aggregation window, e.g. 10s", set: func(s *settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration (e.g. 10s, 1m)", v)
		}
		s.TelemetryWindow = d
		return nil
	}},
	{name: "stats-window", usage: "window of the data statistics of models deployed with a reference profile, sent with their telemetry; at least telemetry-window (default 60s; 0: off, no statistics kept or sent)", set: func(s *settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration (e.g. 60s, 5m; 0 turns data statistics off)", v)
		}
		if d == 0 {
			d = -1 // agent.Config: 0 is the default, negative is off
		}
		s.StatsWindow = d
		return nil
	}},
	{name: "outbox-max-bytes", usage: "bound on queued telemetry, in bytes", set: func(s *settings, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive number of bytes", v)
		}
		s.OutboxMaxBytes = n
		return nil
	}},
	{name: "outbox-sync-interval", usage: "how often queued telemetry is synced to disk: about what a power cut can lose (default 1s; 0: never, leaving it to the kernel, typically 30 s)", set: func(s *settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration (e.g. 1s, 500ms; 0 turns periodic syncs off)", v)
		}
		if d == 0 {
			d = -1 // agent.Config: 0 is the default, negative is off
		}
		s.OutboxSyncInterval = d
		return nil
	}},
	{name: "outbox-min-free-bytes", usage: "free space the telemetry queue's file system must keep for the agent to write telemetry (default: outbox-max-bytes + 8 MiB); below it records are counted and reported as dropped", set: func(s *settings, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive number of bytes", v)
		}
		s.OutboxMinFreeBytes = n
		return nil
	}},
	{name: "sync-writes", isBool: true, usage: "fsync every telemetry write", set: func(s *settings, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		s.SyncWrites = b
		return nil
	}},
	{name: "intra-op-threads", usage: "ONNX Runtime intra-op threads (0: one per core)", set: func(s *settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a number of threads (0 or more)", v)
		}
		s.IntraOpThreads = n
		return nil
	}},
	{name: "label", fileKey: "labels", usage: "a label key=value sent when the device enrolls; repeat for more (config file: labels, a mapping); change them on the control plane after", setPairs: func(s *settings, pairs map[string]string) error {
		if err := agent.ValidateLabels(pairs); err != nil {
			return err
		}
		s.Labels = nil
		if len(pairs) > 0 {
			s.Labels = pairs
		}
		return nil
	}},
	{name: "group", usage: "the device group sent when the device enrolls; change it on the control plane after", set: func(s *settings, v string) error { s.Group = v; return nil }},
	{name: "health-min-predictions", usage: "an active model version is reported healthy after this many predictions or health-min-time, whichever comes first, unless its manifest says (default 100; 0: off)", set: func(s *settings, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a number of predictions (0 or more; 0 turns the criterion off)", v)
		}
		if n == 0 {
			n = -1 // agent.Config: 0 is the default, negative is off
		}
		s.HealthMinPredictions = n
		return nil
	}},
	{name: "health-min-time", usage: "an active model version is reported healthy after this long or health-min-predictions, whichever comes first, unless its manifest says (default 30s; 0: off; both 0: at once)", set: func(s *settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m; 0 turns the criterion off)", v)
		}
		if d == 0 {
			d = -1 // agent.Config: 0 is the default, negative is off
		}
		s.HealthMinTime = d
		return nil
	}},
	{name: "log-level", usage: "debug, info, warn or error", set: func(s *settings, v string) error {
		var l slog.Level
		if err := l.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q is not one of debug, info, warn, error", v)
		}
		s.LogLevel = l
		return nil
	}},
	{name: "log-format", usage: "text or json", set: func(s *settings, v string) error {
		if v != "text" && v != "json" {
			return fmt.Errorf("%q is not text or json", v)
		}
		s.LogFormat = v
		return nil
	}},
}

// lookupOption finds the option of a flag name.
func lookupOption(name string) (option, bool) {
	for _, o := range options {
		if o.name == name {
			return o, true
		}
	}
	return option{}, false
}

// lookupKey finds the option of a config-file key.
func lookupKey(key string) (option, bool) {
	for _, o := range options {
		if o.key() == key {
			return o, true
		}
	}
	return option{}, false
}

// optionNames lists the config-file keys, for messages.
func optionNames() string {
	names := make([]string, len(options))
	for i, o := range options {
		names[i] = o.key()
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// loadFile applies a YAML or JSON config file (JSON is YAML) to s. Keys are
// the flag names (labels: for --label); an unknown or repeated key, or a
// value that does not parse, is an error naming the file, line and key.
// Each key applied is recorded in set with its file and line.
func loadFile(path string, s *settings, set map[string]string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config file %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: the config file must map keys to values (e.g. `data-dir: /var/lib/shoal-agent`)", path, root.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		opt, ok := lookupKey(name)
		if !ok {
			hint := ""
			if alt := strings.ReplaceAll(strings.ToLower(name), "_", "-"); alt != name {
				if _, ok := lookupKey(alt); ok {
					hint = fmt.Sprintf(" (did you mean %q?)", alt)
				}
			} else if o, ok := lookupOption(name); ok && o.key() != name {
				hint = fmt.Sprintf(" (did you mean %q?)", o.key())
			}
			return fmt.Errorf("%s:%d: unknown key %q%s; the keys are: %s", path, k.Line, name, hint, optionNames())
		}
		if first, dup := seen[name]; dup {
			return fmt.Errorf("%s:%d: key %q is set twice (first on line %d)", path, k.Line, name, first)
		}
		seen[name] = k.Line
		if opt.setPairs != nil {
			pairs, err := filePairs(path, name, v)
			if err != nil {
				return err
			}
			if err := opt.setPairs(s, pairs); err != nil {
				return fmt.Errorf("%s:%d: %s: %v", path, v.Line, name, err)
			}
			set[name] = fmt.Sprintf("%s:%d", path, v.Line)
			continue
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: key %q wants a single value, not a list or mapping", path, v.Line, name)
		}
		if v.Tag == "!!null" {
			return fmt.Errorf("%s:%d: key %q has no value", path, v.Line, name)
		}
		if err := opt.set(s, v.Value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, v.Line, name, err)
		}
		set[name] = fmt.Sprintf("%s:%d", path, v.Line)
	}
	return nil
}

// filePairs reads the mapping of a key=value option (labels:) from a
// config file.
func filePairs(path, name string, v *yaml.Node) (map[string]string, error) {
	if v.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: key %q wants a mapping of keys to values (e.g. %s: {site: berlin})", path, v.Line, name, name)
	}
	pairs := make(map[string]string, len(v.Content)/2)
	lines := make(map[string]int, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		pk, pv := v.Content[i], v.Content[i+1]
		if pk.Kind != yaml.ScalarNode || pk.Tag == "!!null" {
			return nil, fmt.Errorf("%s:%d: %s: a key must be a single word or string", path, pk.Line, name)
		}
		if pv.Kind != yaml.ScalarNode || pv.Tag == "!!null" {
			return nil, fmt.Errorf("%s:%d: %s: %q wants a single value (\"\" for an empty one)", path, pv.Line, name, pk.Value)
		}
		if first, dup := lines[pk.Value]; dup {
			return nil, fmt.Errorf("%s:%d: %s: %q is set twice (first on line %d)", path, pk.Line, name, pk.Value, first)
		}
		lines[pk.Value] = pk.Line
		pairs[pk.Value] = pv.Value
	}
	return pairs, nil
}
