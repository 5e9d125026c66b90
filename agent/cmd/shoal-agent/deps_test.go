package main

import (
	"flag"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

var updateDeps = flag.Bool("update", false, "rewrite deps.txt from the current build")

// TestDependencies guards what the device binary links: the modules it
// depends on must match deps.txt (regenerate with `go test -run
// TestDependencies -update` and review the diff), and the control plane's
// heavy dependencies must never appear.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		if m != "github.com/shoalfleet/shoal" {
			seen[m] = true
		}
	}
	var mods []string
	for m := range seen {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	got := "# Modules linked into shoal-agent (go test -run TestDependencies -update).\n" + strings.Join(mods, "\n") + "\n"
	for _, banned := range []string{"github.com/gin-gonic/gin", "github.com/mochi-mqtt/server/v2", "github.com/spf13/cobra", "github.com/advancedclimatesystems/gonnx", "gorgonia.org/tensor"} {
		if seen[banned] {
			t.Errorf("the agent links %s, which belongs to the control plane only", banned)
		}
	}
	if *updateDeps {
		if err := os.WriteFile("deps.txt", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("deps.txt")
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if string(want) != got {
		t.Errorf("the agent's dependencies changed; review and run `go test ./agent/cmd/shoal-agent -run TestDependencies -update`.\ngot:\n%s\nwant:\n%s", got, want)
	}
}
