package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var units = []string{"shoal.service", "shoal-agent.service"}

// TestSystemdUnits runs systemd-analyze verify on the units, in a scratch
// root that holds systemd's own units and a stand-in for each ExecStart
// binary, so the check needs neither the binaries installed nor root.
func TestSystemdUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("needs systemd-analyze, which this machine lacks (apt-get install systemd; .ci/run installs it)")
	}
	var sysUnits string
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "sysinit.target")); err == nil {
			sysUnits = d
			break
		}
	}
	if sysUnits == "" {
		t.Skip("needs systemd's own units (sysinit.target), which this machine lacks (apt-get install systemd)")
	}
	root := t.TempDir()
	copyUnits(t, sysUnits, filepath.Join(root, "usr/lib/systemd/system"))
	verify := func(t *testing.T, names ...string) string {
		t.Helper()
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(root, "etc/systemd/system", name))
			if err != nil {
				t.Fatal(err)
			}
			for _, bin := range execPaths(b) {
				stub := filepath.Join(root, bin)
				if err := os.MkdirAll(filepath.Dir(stub), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
		args := append([]string{"verify", "--man=no", "--root=" + root}, names...)
		out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			out = []byte(err.Error())
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out := verify(t, units...); out != "" {
		t.Errorf("systemd-analyze verify %s:\n%s", strings.Join(units, " "), out)
	}

	// The harness must catch a broken unit, or the check above proves
	// nothing.
	broken := "[Service]\nExecStart=/usr/local/bin/shoal serve\nProtectSystm=strict\n"
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/broken.service"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := verify(t, "broken.service"); !strings.Contains(out, "ProtectSystm") {
		t.Errorf("systemd-analyze verify did not report a misspelt key: %q", out)
	}
}

// copyUnits copies the unit files of dir (not its .wants directories),
// following links: os.CopyFS refuses links, and systemd's aliases are links.
func copyUnits(t *testing.T, dir, to string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // a directory or a dangling link
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// execPaths returns the programs of a unit's Exec*= lines.
func execPaths(unit []byte) []string {
	var paths []string
	for _, line := range strings.Split(string(unit), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || !strings.HasPrefix(k, "Exec") {
			continue
		}
		f := strings.Fields(strings.TrimLeft(v, "-@:+!"))
		if len(f) > 0 {
			paths = append(paths, f[0])
		}
	}
	return paths
}

// TestUnitsHardened checks the settings the units exist for, so an edit
// cannot drop one unnoticed.
func TestUnitsHardened(t *testing.T) {
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		state := strings.TrimSuffix(u, ".service")
		for _, want := range []string{
			"DynamicUser=yes", "StateDirectory=" + state, "ProtectSystem=strict", "NoNewPrivileges=yes",
			"Restart=on-failure", "CapabilityBoundingSet=\n", "Environment=ONNXRUNTIME_LIB=/usr/local/lib/shoal/libonnxruntime.so.1",
			"EnvironmentFile=-/etc/shoal/", "--data-dir %S/" + state,
		} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("%s lacks %q", u, strings.TrimSpace(want))
			}
		}
	}
	for _, f := range []string{"agent.yaml.example", "agent.env.example", "shoal.env.example"} {
		if _, err := os.Stat(filepath.Join("systemd", f)); err != nil {
			t.Errorf("the units refer to %s: %v", f, err)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func match(t *testing.T, re, s, what string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%s: no match for %s", what, re)
	}
	return m[1]
}

// TestContainerFilesMatchTheBuild: the images use the ONNX Runtime the
// Makefile fetches, the Go that go.mod asks for, and a build image on the
// same Debian release as the runtime image (cgo links against its glibc).
func TestContainerFilesMatchTheBuild(t *testing.T) {
	ort := match(t, `(?m)^ORT_VERSION\s*:=\s*(\S+)`, read(t, "../Makefile"), "Makefile")
	// The images take the library from the path `make ort` takes it from.
	if !strings.Contains(read(t, "../Makefile"), "package/bin/napi-v6/linux/$(ORT_ARCH)/libonnxruntime.so.1") {
		t.Error("the Makefile fetches ONNX Runtime from another path in the npm package than the container files")
	}
	goLine := match(t, `(?m)^go (\d+\.\d+)`, read(t, "../go.mod"), "go.mod")
	for _, f := range []string{"container/Dockerfile.agent", "container/Dockerfile.controlplane"} {
		d := read(t, f)
		for _, want := range []string{
			"ARG ORT_VERSION=" + ort + "\n",
			"ARG GO_IMAGE=golang:" + goLine + "-bookworm\n",
			"ARG RUNTIME_IMAGE=debian:12-slim\n",
			`npm pack --silent "onnxruntime-node@${ORT_VERSION}"`,
			"package/bin/napi-v6/linux/${arch}/libonnxruntime.so.1",
			"COPY --from=ort /ort/libonnxruntime.so.1 /usr/local/lib/shoal/libonnxruntime.so.1\n",
			"ENV ONNXRUNTIME_LIB=/usr/local/lib/shoal/libonnxruntime.so.1\n",
			"CGO_ENABLED=1 go build",
			"USER 10001:10001\n",
			"VOLUME [",
		} {
			if !strings.Contains(d, want) {
				t.Errorf("%s lacks %q", f, strings.TrimSpace(want))
			}
		}
		if n := strings.Count(d, "\nFROM "); n != 3 {
			t.Errorf("%s has %d stages, want 3 (ort, build, runtime)", f, n)
		}
		if _, err := os.Stat(f + ".dockerignore"); err != nil {
			t.Errorf("%s has no .dockerignore: %v", f, err)
		}
	}
}

// TestCompose checks the compose file's wiring: three agents, each with
// its own device id, data volume and host port, all enrolled by the init
// step's tokens, and nothing published beyond the host's loopback.
func TestCompose(t *testing.T) {
	var c struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Entrypoint  []string          `yaml:"entrypoint"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(read(t, "compose.yaml")), &c); err != nil {
		t.Fatal(err)
	}
	cp, ok := c.Services["controlplane"]
	if !ok || !slices.Contains(cp.Command, "tcp://controlplane:1883") {
		t.Fatalf("controlplane service missing or not telling agents its broker: %+v", cp)
	}
	if e := c.Services["enroll"]; e.DependsOn["controlplane"].Condition != "service_healthy" || !strings.Contains(strings.Join(e.Entrypoint, " "), "token create") {
		t.Errorf("enroll init step: %+v", e)
	}
	seen := map[string]string{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("agent-%d", i)
		a, ok := c.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		if a.Environment["SHOAL_DEVICE_ID"] != name || a.Image != "shoal-agent:dev" || a.Build == nil {
			t.Errorf("%s: %+v", name, a)
		}
		if a.DependsOn["enroll"].Condition != "service_completed_successfully" {
			t.Errorf("%s does not wait for its token", name)
		}
		if !slices.Contains(a.Volumes, "enroll-tokens:/tokens:ro") {
			t.Errorf("%s: volumes %v lack the tokens, read-only", name, a.Volumes)
		}
		for _, v := range append(a.Volumes, a.Ports...) {
			if other, dup := seen[v]; dup && !strings.HasPrefix(v, "enroll-tokens:") {
				t.Errorf("%s and %s share %s", name, other, v)
			}
			seen[v] = name
		}
	}
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond the host's loopback (the API has no authentication yet)", name, p)
			}
		}
		for _, v := range s.Volumes {
			if vol, _, _ := strings.Cut(v, ":"); !strings.HasPrefix(vol, "/") && !strings.HasPrefix(vol, ".") {
				if _, ok := c.Volumes[vol]; !ok {
					t.Errorf("%s uses volume %s, which is not declared", name, vol)
				}
			}
		}
	}
}
