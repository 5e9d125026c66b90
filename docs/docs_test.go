// Package docs holds Shoal's documentation; its test keeps the package map
// in ARCHITECTURE.md true to the tree.
package docs

import (
	"bufio"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPackageMap: every Go package in the module has a line in the package
// map (the first code block of ARCHITECTURE.md, a package's path at the
// start of a line), and every path there is a package.
func TestPackageMap(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "github.com/shoalfleet/shoal/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, "github.com/shoalfleet/shoal"), "/")
		if rel != "" {
			pkgs[rel] = true
		}
	}
	mapped := packageMap(t, "ARCHITECTURE.md")
	for _, p := range slices.Sorted(maps.Keys(pkgs)) {
		if !mapped[p] {
			t.Errorf("package %s is missing from the package map in docs/ARCHITECTURE.md", p)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(mapped)) {
		if !pkgs[p] {
			t.Errorf("docs/ARCHITECTURE.md maps %s, which is not a package", p)
		}
	}
}

// packageMap returns the first word of each line of the first code block
// of file that does not start with a space (continuation lines do).
func packageMap(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	paths := map[string]bool{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			if in {
				return paths
			}
			in = true
			continue
		}
		if in && line != "" && line[0] != ' ' {
			paths[strings.Fields(line)[0]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("%s has no package map (a code block)", file)
	return nil
}
