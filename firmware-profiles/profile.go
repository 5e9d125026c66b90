package firmwareprofiles

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Profile is one hardware class. The YAML keys are the yaml tags below;
// testdata/ and the builtin *.yaml files show every key.
type Profile struct {
	// Name identifies the profile ([A-Za-z0-9._-], at most 64 bytes): the
	// agent's --profile, the profile a device reports, the profile an
	// artifact variant is built for.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Match says which devices Detect gives this profile.
	Match Match `yaml:"match"`
	// ExecutionProviders are ONNX Runtime execution provider names in
	// order of preference, e.g. [CUDAExecutionProvider,
	// CPUExecutionProvider].
	ExecutionProviders []string `yaml:"execution_providers"`
	// Precision is the preferred numeric precision of models built for
	// the profile.
	Precision Precision   `yaml:"precision"`
	Budgets   Budgets     `yaml:"budgets"`
	Agent     AgentLimits `yaml:"agent"`

	// Source is where the profile was loaded from (a file name, or
	// "builtin:NAME.yaml"); it prefixes every error about it.
	Source string `yaml:"-"`

	board *regexp.Regexp // Match.Board, compiled
}

// Match holds the rules a device's Facts must all satisfy. Arch is
// required; an empty rule otherwise matches anything.
type Match struct {
	// Arch lists Go architecture names (GOARCH: amd64, arm64, arm, ...).
	Arch []string `yaml:"arch"`
	// OS lists Go OS names (GOOS: linux, ...); empty is any.
	OS []string `yaml:"os"`
	// Board is a regular expression (RE2) the board model must match, as
	// read from /proc/device-tree/model, e.g. "^Raspberry Pi 4 Model B".
	Board string `yaml:"board"`
	// Accelerators must all be present on the device (e.g. nvidia-gpu).
	Accelerators []string `yaml:"accelerators"`
	// Firmware bounds the device's firmware version; nil is any. A device
	// whose firmware version is unknown does not match a profile that
	// bounds it.
	Firmware *VersionRange `yaml:"firmware"`
}

// VersionRange is a range of dotted numeric versions (36.4.0): Min is
// inclusive, Below exclusive; either may be empty, not both.
type VersionRange struct {
	Min   string `yaml:"min"`
	Below string `yaml:"below"`
}

// Budgets bound what a model may cost on the device; 0 is no bound.
type Budgets struct {
	// MaxModelBytes bounds the model file.
	MaxModelBytes ByteSize `yaml:"max_model_bytes"`
	// MaxMemoryBytes bounds the memory ONNX Runtime may use for the model.
	MaxMemoryBytes ByteSize `yaml:"max_memory_bytes"`
}

// AgentLimits are the agent's defaults on this hardware; flags and the
// agent's config file override them. 0 keeps the agent's own default.
type AgentLimits struct {
	// OutboxMaxBytes bounds the telemetry queued on disk.
	OutboxMaxBytes ByteSize `yaml:"outbox_max_bytes"`
	// TelemetryWindow is the telemetry aggregation window.
	TelemetryWindow Duration `yaml:"telemetry_window"`
	// IntraOpThreads is ONNX Runtime's intra-op thread count (0: one per
	// physical core).
	IntraOpThreads int `yaml:"intra_op_threads"`
}

// Precision is a model's numeric precision.
type Precision string

// The precisions.
const (
	FP32 Precision = "fp32"
	FP16 Precision = "fp16"
	INT8 Precision = "int8"
)

// ByteSize is a number of bytes. In YAML it is a whole number (67108864)
// or one with a unit: 64MiB, 512KiB, 2GiB (powers of 1024) or 64MB, 2GB
// (powers of 1000).
type ByteSize int64

// UnmarshalYAML reads a byte size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}

var byteUnits = []struct {
	suffix string
	factor int64
}{
	// Longest suffixes first: "MiB" before "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num, factor := s, int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, factor = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size; write bytes (67108864) or a number with a unit (64MiB, 512KiB, 2GiB, 100MB)", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("%q is negative; a size is 0 (no bound) or more", s)
	}
	if n > math.MaxInt64/factor {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * factor, nil
}

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		factor int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.factor == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.factor, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", int64(b))
}

// Duration is a time.Duration written as Go writes it: 10s, 1m30s.
type Duration time.Duration

// UnmarshalYAML reads a duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like 10s, 1m or 1m30s", n.Value)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// Load parses and validates one profile from YAML. source names the data
// in errors (a file name). Decoding is strict: an unknown or repeated key,
// or a value of the wrong kind, is an error naming the source, line and
// key.
func Load(data []byte, source string) (Profile, error) {
	lines, root, err := decodeStrict(data, source)
	if err != nil {
		return Profile{}, err
	}
	var p Profile
	if err := root.Decode(&p); err != nil {
		// decodeStrict has checked every value; this is a safety net.
		return Profile{}, fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	p.Source = source
	if err := p.validate(lines); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// MaxNameLen bounds a profile name.
const MaxNameLen = 64

var (
	nameRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	acceleratorRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	versionRE     = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)
)

// knownArch are the GOARCH values a profile may name; archHints catch the
// kernel's names for them.
var (
	knownArch = []string{"386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le", "riscv64", "s390x"}
	archHints = map[string]string{"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "armhf": "arm", "i386": "386", "i686": "386"}
	knownOS   = []string{"android", "darwin", "freebsd", "linux", "netbsd", "openbsd", "windows"}
)

// KnownExecutionProviders are the ONNX Runtime execution provider names a
// profile may list (ONNX Runtime 1.24's names).
var KnownExecutionProviders = []string{
	"ACLExecutionProvider", "ArmNNExecutionProvider", "AzureExecutionProvider",
	"CANNExecutionProvider", "CPUExecutionProvider", "CUDAExecutionProvider",
	"CoreMLExecutionProvider", "DmlExecutionProvider", "DnnlExecutionProvider",
	"MIGraphXExecutionProvider", "NnapiExecutionProvider", "NvTensorRTRTXExecutionProvider",
	"OpenVINOExecutionProvider", "QNNExecutionProvider", "ROCMExecutionProvider",
	"RknpuExecutionProvider", "TensorrtExecutionProvider", "VitisAIExecutionProvider",
	"WebGpuExecutionProvider", "XnnpackExecutionProvider",
}

// minOutboxBytes keeps room for a few of the agent's largest records
// (64 KiB each).
const minOutboxBytes = 1 << 20

// validate checks p after decoding; lines maps key paths ("agent.
// telemetry_window", "execution_providers.1") to their lines.
func (p *Profile) validate(lines map[string]int) error {
	// at locates path: its own line, else its parent's (a missing key).
	at := func(path string) string {
		for p2 := path; p2 != ""; {
			if l, ok := lines[p2]; ok {
				return fmt.Sprintf("%s:%d", p.Source, l)
			}
			i := strings.LastIndexByte(p2, '.')
			if i < 0 {
				break
			}
			p2 = p2[:i]
		}
		return p.Source
	}
	var errs []error
	// bad reports a problem with path; a message starting "is" reads on
	// from the path ("name is empty").
	bad := func(path, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		sep := ": "
		if strings.HasPrefix(msg, "is ") {
			sep = " "
		}
		errs = append(errs, fmt.Errorf("%s: %s%s%s", at(path), path, sep, msg))
	}

	switch {
	case p.Name == "":
		bad("name", `is empty; name the profile, e.g. name: rpi4-lab`)
	case len(p.Name) > MaxNameLen:
		bad("name", "%q is longer than %d bytes", p.Name, MaxNameLen)
	case !nameRE.MatchString(p.Name):
		bad("name", "%q: use letters, digits, '.', '_' and '-' only, starting with a letter or digit", p.Name)
	}

	m := &p.Match
	if len(m.Arch) == 0 {
		bad("match.arch", "is empty; list the architectures the profile is for, e.g. arch: [arm64]")
	}
	checkList(m.Arch, "match.arch", bad, func(path, a string) {
		if hint, ok := archHints[a]; ok {
			bad(path, "%q is the kernel's name; use Go's: %s", a, hint)
		} else if !contains(knownArch, a) {
			bad(path, "unknown architecture %q; use a Go GOARCH name: %s", a, strings.Join(knownArch, ", "))
		}
	})
	checkList(m.OS, "match.os", bad, func(path, o string) {
		if !contains(knownOS, o) {
			bad(path, "unknown OS %q; use a Go GOOS name: %s", o, strings.Join(knownOS, ", "))
		}
	})
	if m.Board != "" {
		re, err := regexp.Compile(m.Board)
		if err != nil {
			bad("match.board", "%q is not a regular expression: %s", m.Board, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
		p.board = re
	}
	checkList(m.Accelerators, "match.accelerators", bad, func(path, a string) {
		if !acceleratorRE.MatchString(a) {
			bad(path, "%q: name an accelerator in lower case with digits and '-', e.g. nvidia-gpu", a)
		}
	})
	if f := m.Firmware; f != nil {
		switch {
		case f.Min == "" && f.Below == "":
			bad("match.firmware", "gives neither min nor below; give one or both, or drop firmware")
		case f.Min != "" && !versionRE.MatchString(f.Min):
			bad("match.firmware.min", "%q is not a dotted version like 36.4", f.Min)
		case f.Below != "" && !versionRE.MatchString(f.Below):
			bad("match.firmware.below", "%q is not a dotted version like 37", f.Below)
		case f.Min != "" && f.Below != "" && compareVersions(f.Min, f.Below) >= 0:
			bad("match.firmware", "min %s is not below %s: no version matches", f.Min, f.Below)
		}
	}

	if len(p.ExecutionProviders) == 0 {
		bad("execution_providers", "is empty; list ONNX Runtime execution providers in order of preference, e.g. [CPUExecutionProvider]")
	}
	checkList(p.ExecutionProviders, "execution_providers", bad, func(path, ep string) {
		if contains(KnownExecutionProviders, ep) {
			return
		}
		for _, k := range KnownExecutionProviders {
			if strings.EqualFold(k, ep) || strings.EqualFold(k, ep+"ExecutionProvider") {
				bad(path, "unknown execution provider %q; did you mean %s?", ep, k)
				return
			}
		}
		bad(path, "unknown execution provider %q; the known ones are: %s", ep, strings.Join(KnownExecutionProviders, ", "))
	})

	switch p.Precision {
	case FP32, FP16, INT8:
	case "":
		bad("precision", "is missing; give fp32, fp16 or int8")
	default:
		bad("precision", "%q is not fp32, fp16 or int8", p.Precision)
	}

	b := p.Budgets
	if b.MaxModelBytes > 0 && b.MaxMemoryBytes > 0 && b.MaxModelBytes > b.MaxMemoryBytes {
		bad("budgets.max_model_bytes", "%s is more than max_memory_bytes %s: no model within it could load", b.MaxModelBytes, b.MaxMemoryBytes)
	}

	a := p.Agent
	if a.OutboxMaxBytes != 0 && a.OutboxMaxBytes < minOutboxBytes {
		bad("agent.outbox_max_bytes", "%s is under %s, too small for the agent's telemetry records; give at least 1MiB, or 0 for the agent's default", a.OutboxMaxBytes, ByteSize(minOutboxBytes))
	}
	if w := time.Duration(a.TelemetryWindow); w != 0 && (w < time.Second || w > time.Hour) {
		bad("agent.telemetry_window", "%s is outside 1s to 1h", w)
	}
	if a.IntraOpThreads < 0 || a.IntraOpThreads > 1024 {
		bad("agent.intra_op_threads", "%d is not 0 (one per core) to 1024", a.IntraOpThreads)
	}
	return errors.Join(errs...)
}

// checkList reports empty and repeated items of list and passes the others
// to each.
func checkList(list []string, path string, bad func(path, format string, args ...any), each func(path, item string)) {
	seen := map[string]bool{}
	for i, item := range list {
		ip := fmt.Sprintf("%s.%d", path, i)
		switch {
		case item == "":
			bad(ip, "is empty")
		case seen[item]:
			bad(ip, "%q is listed twice", item)
		default:
			seen[item] = true
			each(ip, item)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// compareVersions compares dotted numeric versions; missing components
// are 0 (36 == 36.0). Both must match versionRE.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y uint64
		if i < len(as) {
			x, _ = strconv.ParseUint(as[i], 10, 64)
		}
		if i < len(bs) {
			y, _ = strconv.ParseUint(bs[i], 10, 64)
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return 0
}

// Contains reports whether version v is in the range; a v that is not a
// dotted numeric version is not.
func (r VersionRange) Contains(v string) bool {
	if !versionRE.MatchString(v) {
		return false
	}
	return (r.Min == "" || compareVersions(v, r.Min) >= 0) && (r.Below == "" || compareVersions(v, r.Below) < 0)
}
