package firmwareprofiles

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func loadFile(t *testing.T, path string) (Profile, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Load(b, path)
}

func TestLoadGood(t *testing.T) {
	p, err := loadFile(t, "testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Profile{
		Name:        "lab-board_2.1",
		Description: "A lab board with every key set",
		Match: Match{
			Arch: []string{"arm64", "amd64"}, OS: []string{"linux"}, Board: "^Lab Board",
			Accelerators: []string{"nvidia-gpu", "npu-x"}, Firmware: &VersionRange{Min: "2.1", Below: "3"},
		},
		ExecutionProviders: []string{"CUDAExecutionProvider", "CPUExecutionProvider"},
		Precision:          FP16,
		Budgets:            Budgets{MaxModelBytes: 100_000_000, MaxMemoryBytes: 1 << 30},
		Agent:              AgentLimits{OutboxMaxBytes: 8 << 20, TelemetryWindow: Duration(90 * time.Second), IntraOpThreads: 2},
		Source:             "testdata/good.yaml",
	}
	if p.board == nil || !p.board.MatchString("Lab Board v2") {
		t.Errorf("board regexp not compiled: %v", p.board)
	}
	p.board = nil
	if !reflect.DeepEqual(p, want) {
		t.Errorf("good.yaml:\n got %+v\nwant %+v", p, want)
	}

	p, err = loadFile(t, "testdata/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "minimal" || p.Budgets != (Budgets{}) || p.Agent != (AgentLimits{}) || p.Match.Firmware != nil {
		t.Errorf("minimal.yaml: %+v", p)
	}
}

// TestLoadBad: every testdata/*.bad.yaml must be in the table, and fail
// with its error.
func TestLoadBad(t *testing.T) {
	want := map[string]string{
		"accelerator":       `:4: match.accelerators.0: "NVIDIA GPU": name an accelerator in lower case`,
		"arch-scalar":       `:3: match.arch: want a list, e.g. [a, b], not a single value`,
		"bad-name":          `:1: name: "pi 4/b": use letters, digits, '.', '_' and '-' only`,
		"board":             `:4: match.board: "Raspberry Pi (4" is not a regular expression: missing closing )`,
		"duplicate-ep":      `:3: execution_providers.1: "CPUExecutionProvider" is listed twice`,
		"duplicate-key":     `:4: key "arch" in match is set twice (first on line 3)`,
		"duration":          `:6: agent.telemetry_window: "10 seconds" is not a duration; write it like 10s`,
		"empty":             `: empty profile; a profile needs at least name, match.arch, execution_providers and precision`,
		"empty-name":        `:1: name is empty; name the profile`,
		"ep-case":           `:3: execution_providers.0: unknown execution provider "cuda"; did you mean CUDAExecutionProvider?`,
		"firmware":          `:4: match.firmware: min 36.4 is not below 36.2: no version matches`,
		"firmware-version":  `:5: match.firmware.min: "R36" is not a dotted version like 36.4`,
		"hyphen-key":        `:6: unknown key "max-model-bytes" in budgets (did you mean "max_model_bytes"?); the keys are: max_memory_bytes, max_model_bytes`,
		"kernel-arch":       `:3: match.arch.0: "aarch64" is the kernel's name; use Go's: arm64`,
		"list":              `:1: a profile maps keys to values (name: ..., match: ...), not a list`,
		"model-over-memory": `:6: budgets.max_model_bytes: 1GiB is more than max_memory_bytes 512MiB`,
		"negative-budget":   `:6: budgets.max_model_bytes: "-1" is negative`,
		"negative-threads":  `:6: agent.intra_op_threads: -2 is not 0 (one per core) to 1024`,
		"nested":            `:2: name: want a single value, not a mapping`,
		"no-arch":           `:2: match.arch is empty; list the architectures`,
		"no-ep":             `.bad.yaml: execution_providers is empty; list ONNX Runtime execution providers`,
		"no-name":           `.bad.yaml: name is empty`,
		"os":                `:4: match.os.0: unknown OS "ubuntu"; use a Go GOOS name: android, darwin`,
		"precision":         `:4: precision: "fp64" is not fp32, fp16 or int8`,
		"several":           "several.bad.yaml:1: name is empty; name the profile, e.g. name: rpi4-lab\ntestdata/several.bad.yaml:4: precision: \"fp8\" is not",
		"size":              `:6: budgets.max_memory_bytes: "2 gigs" is not a size; write bytes (67108864) or a number with a unit`,
		"small-outbox":      `:6: agent.outbox_max_bytes: 4KiB is under 1MiB`,
		"syntax":            `.bad.yaml: line 1: did not find expected ',' or ']'`,
		"threads":           `:6: agent.intra_op_threads: "many" is not a whole number`,
		"two-docs":          `:5: a second YAML document; give one profile per file`,
		"unknown-ep":        `:5: execution_providers.1: unknown execution provider "FPGAExecutionProvider"; the known ones are: ACLExecutionProvider,`,
		"unknown-key":       `:4: unknown key "boards" in match; the keys are: accelerators, arch, board, firmware, os`,
		"window-range":      `:6: agent.telemetry_window: 100ms is outside 1s to 1h`,
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("%s has no expected error in the table", f)
			}
			delete(want, name)
			_, err := loadFile(t, f)
			if err == nil || !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), f) {
				t.Errorf("Load(%s) = %v;\nwant an error starting %q and containing %q", f, err, f, w)
			}
		})
	}
	for name := range want {
		t.Errorf("testdata/%s.bad.yaml is missing", name)
	}
}

func TestBuiltinsLoad(t *testing.T) {
	ps, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.yaml")
	if len(ps) != len(files) || len(ps) < 4 {
		t.Fatalf("Builtin() has %d profiles, the directory %d files: %v", len(ps), len(files), Names(ps))
	}
	for i, want := range []string{"generic-amd64", "generic-arm64", "jetson-orin", "nvidia-gpu-amd64", "raspberry-pi-4"} {
		if i >= len(ps) || ps[i].Name != want {
			t.Errorf("Builtin()[%d] = %q, want %q (sorted by name)", i, Names(ps), want)
		}
	}
	for _, p := range ps {
		if p.Description == "" || p.Source != "builtin:"+p.Name+".yaml" {
			t.Errorf("%s: description %q, source %q", p.Name, p.Description, p.Source)
		}
		if p.Budgets.MaxModelBytes == 0 || p.Budgets.MaxMemoryBytes == 0 || p.Agent.OutboxMaxBytes == 0 || p.Agent.TelemetryWindow == 0 {
			t.Errorf("%s: a shipped profile sets every budget and limit: %+v %+v", p.Name, p.Budgets, p.Agent)
		}
		if last := p.ExecutionProviders[len(p.ExecutionProviders)-1]; last != "CPUExecutionProvider" {
			t.Errorf("%s: execution providers end with %s; a shipped profile falls back to the CPU", p.Name, last)
		}
	}
}

func TestBuiltinIsACopy(t *testing.T) {
	ps, _ := Builtin()
	ps[0].Name = "changed"
	ps[0].Match.Arch[0] = "changed"
	ps[0].ExecutionProviders[0] = "changed"
	p, ok := Lookup("generic-amd64", nil)
	if !ok || p.Match.Arch[0] != "amd64" || p.ExecutionProviders[0] != "CPUExecutionProvider" {
		t.Errorf("changing Builtin's result changed the builtins: %+v", p)
	}
}

func TestLookup(t *testing.T) {
	p, ok := Lookup("raspberry-pi-4", nil)
	if !ok || p.Precision != INT8 || p.Agent.IntraOpThreads != 3 {
		t.Errorf("Lookup(raspberry-pi-4) = %+v, %v", p, ok)
	}
	if _, ok := Lookup("rpi4", nil); ok {
		t.Error("Lookup(rpi4) found a profile that does not exist")
	}
	mine := Profile{Name: "raspberry-pi-4", Precision: FP32}
	extra := []Profile{{Name: "lab"}, mine}
	if p, ok := Lookup("raspberry-pi-4", extra); !ok || p.Precision != FP32 {
		t.Errorf("an operator profile should replace the builtin of its name: %+v", p)
	}
	if p, ok := Lookup("lab", extra); !ok || p.Name != "lab" {
		t.Errorf("Lookup(lab) = %+v, %v", p, ok)
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const body = "match: {arch: [arm64]}\nexecution_providers: [CPUExecutionProvider]\nprecision: int8\n"
	write("zeta.yaml", "name: zeta\n"+body)
	write("alpha.yml", "name: alpha\n"+body)
	write("README.md", "not a profile")
	if err := os.Mkdir(filepath.Join(dir, "old.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	ps, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(Names(ps), ","); got != "alpha,zeta" || ps[0].Source != filepath.Join(dir, "alpha.yml") {
		t.Errorf("LoadDir = %s (source %s)", got, ps[0].Source)
	}

	write("mismatch.yaml", "name: other\n"+body)
	write("zeta.yml", "name: zeta\n"+body)
	write("broken.yaml", "name: broken\nprecision: fp8\n"+body)
	_, err = LoadDir(dir)
	for _, w := range []string{
		filepath.Join(dir, "mismatch.yaml") + `: the profile is named "other" but the file "mismatch.yaml"`,
		filepath.Join(dir, "zeta.yml") + `: profile "zeta" is also defined in ` + filepath.Join(dir, "zeta.yaml"),
		filepath.Join(dir, "broken.yaml") + `:5: key "precision" is set twice (first on line 2)`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("LoadDir = %v;\nwant an error containing %q", err, w)
		}
	}

	if _, err := LoadDir(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("LoadDir(missing) = %v", err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "64MiB": 64 << 20, "512 KiB": 512 << 10, "2GiB": 2 << 30, "1TiB": 1 << 40,
		"100MB": 100e6, "3KB": 3000, "2GB": 2e9, "7B": 7,
	} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5GiB", "-1", "-1MiB", "12 parsecs", "9999999999TiB", "0x10"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", in, got)
		}
	}
	for b, want := range map[ByteSize]string{0: "0B", 1000: "1000B", 2048: "2KiB", 64 << 20: "64MiB", 3 << 30: "3GiB", 1536 << 10: "1536KiB"} {
		if got := b.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
	}
}

func TestVersionRange(t *testing.T) {
	r := VersionRange{Min: "36.0", Below: "37"}
	for v, want := range map[string]bool{
		"36": true, "36.0": true, "36.4.3": true, "36.99.99": true, "37": false, "37.0.1": false,
		"35.6.0": false, "": false, "R36": false, "36.4-rc1": false, "36.": false,
	} {
		if got := r.Contains(v); got != want {
			t.Errorf("%+v.Contains(%q) = %v, want %v", r, v, got, want)
		}
	}
	if (VersionRange{Min: "1.10"}).Contains("1.9") || !(VersionRange{Min: "1.10"}).Contains("1.10.0") || !(VersionRange{Below: "2"}).Contains("1.999") {
		t.Error("versions compare numerically per component (1.9 < 1.10), with open ends")
	}
}
