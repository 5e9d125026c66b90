package firmwareprofiles

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
)

// builtinFS holds the profiles shipped with Shoal; every binary that links
// this package carries them.
//
//go:embed *.yaml
var builtinFS embed.FS

var builtin = sync.OnceValues(func() ([]Profile, error) {
	return loadFS(builtinFS, ".", "builtin:")
})

// Builtin returns the profiles shipped with Shoal, sorted by name. The
// slice is the caller's; the error is only ever a broken build (the tests
// load every builtin).
func Builtin() ([]Profile, error) {
	ps, err := builtin()
	out := make([]Profile, len(ps))
	for i, p := range ps {
		out[i] = p.clone()
	}
	return out, err
}

// LoadDir loads every *.yaml and *.yml file in dir (not its
// subdirectories), sorted by name. Each file holds one profile whose name
// is the file's name without the extension; two files may not name the
// same profile. Every broken file is reported, not just the first.
func LoadDir(dir string) ([]Profile, error) {
	return loadFS(os.DirFS(dir), ".", dir+string(filepath.Separator))
}

func loadFS(fsys fs.FS, dir, prefix string) ([]Profile, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("firmware profiles: %w", err)
	}
	var ps []Profile
	var errs []error
	files := map[string]string{}
	for _, e := range entries {
		ext := path.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		source := prefix + e.Name()
		data, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		p, err := Load(data, source)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if want := strings.TrimSuffix(e.Name(), ext); p.Name != want {
			errs = append(errs, fmt.Errorf("%s: the profile is named %q but the file %q; name the file %s%s or the profile %q", source, p.Name, e.Name(), p.Name, ext, want))
			continue
		}
		if other, dup := files[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: profile %q is also defined in %s", source, p.Name, other))
			continue
		}
		files[p.Name] = source
		ps = append(ps, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps, nil
}

// Lookup returns the profile named name: from extra (operator-supplied
// profiles, which may replace a builtin of the same name) if it is there,
// else from Builtin.
func Lookup(name string, extra []Profile) (Profile, bool) {
	for _, p := range extra {
		if p.Name == name {
			return p, true
		}
	}
	ps, _ := builtin()
	for _, p := range ps {
		if p.Name == name {
			return p.clone(), true
		}
	}
	return Profile{}, false
}

// clone copies p deeply enough that changing the copy leaves p alone.
func (p Profile) clone() Profile {
	p.Match.Arch = slices.Clone(p.Match.Arch)
	p.Match.OS = slices.Clone(p.Match.OS)
	p.Match.Accelerators = slices.Clone(p.Match.Accelerators)
	if p.Match.Firmware != nil {
		f := *p.Match.Firmware
		p.Match.Firmware = &f
	}
	p.ExecutionProviders = slices.Clone(p.ExecutionProviders)
	return p
}

// Names returns the names of ps, in order: for messages that list the
// known profiles.
func Names(ps []Profile) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return names
}
