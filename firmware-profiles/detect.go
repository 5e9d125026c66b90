package firmwareprofiles

import (
	"bytes"
	"io/fs"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
)

// Facts describe a device, as Detect matches them against profiles.
type Facts struct {
	// Arch and OS are Go's names (runtime.GOARCH, runtime.GOOS).
	Arch, OS string
	// Board is the board model, e.g. "Raspberry Pi 4 Model B Rev 1.4";
	// empty when unknown.
	Board string
	// Firmware is the firmware or board-support version, dotted numeric
	// (a Jetson's L4T release, e.g. 36.4.0); empty when unknown.
	Firmware string
	// Accelerators name the accelerators present, e.g. nvidia-gpu.
	Accelerators []string
}

// Matches reports whether f satisfies every match rule of p.
func (p Profile) Matches(f Facts) bool {
	m := p.Match
	if len(m.Arch) > 0 && !slices.Contains(m.Arch, f.Arch) {
		return false
	}
	if len(m.OS) > 0 && !slices.Contains(m.OS, f.OS) {
		return false
	}
	if m.Board != "" {
		re := p.board
		if re == nil { // a Profile built in Go rather than loaded
			var err error
			if re, err = regexp.Compile(m.Board); err != nil {
				return false
			}
		}
		if f.Board == "" || !re.MatchString(f.Board) {
			return false
		}
	}
	for _, a := range m.Accelerators {
		if !slices.Contains(f.Accelerators, a) {
			return false
		}
	}
	if m.Firmware != nil && !m.Firmware.Contains(f.Firmware) {
		return false
	}
	return true
}

// specificity ranks how much of a device a profile's rules pin down: a
// board match beats accelerators, which beat a firmware range, which beats
// an OS rule, which beats the architecture alone.
func (p Profile) specificity() [4]int {
	m := p.Match
	var s [4]int
	if m.Board != "" {
		s[0] = 1
	}
	s[1] = len(m.Accelerators)
	if m.Firmware != nil {
		s[2] = 1
	}
	if len(m.OS) > 0 {
		s[3] = 1
	}
	return s
}

// Detect returns the builtin profile that fits f most specifically (see
// DetectAmong), and false if none matches.
func Detect(f Facts) (Profile, bool) {
	ps, err := builtin()
	if err != nil {
		return Profile{}, false
	}
	p, ok := DetectAmong(f, ps)
	return p.clone(), ok
}

// DetectAmong returns the profile of ps that matches f with the most
// specific rules: a profile that matches the board beats one that matches
// accelerators, then a firmware range, then the OS, then the architecture
// alone. Among equals the first in ps wins (Builtin and LoadDir sort by
// name).
func DetectAmong(f Facts, ps []Profile) (Profile, bool) {
	var best Profile
	var bestSpec [4]int
	found := false
	for _, p := range ps {
		if !p.Matches(f) {
			continue
		}
		if s := p.specificity(); !found || slices.Compare(s[:], bestSpec[:]) > 0 {
			best, bestSpec, found = p, s, true
		}
	}
	return best, found
}

// LocalFacts describes this machine: Go's architecture and OS, the board
// model from /proc/device-tree/model (ARM boards), a Jetson's L4T version
// from /etc/nv_tegra_release, and an NVIDIA GPU from /dev/nvidia0. What
// cannot be read is left empty.
func LocalFacts() Facts {
	return readFacts(os.DirFS("/"), runtime.GOARCH, runtime.GOOS)
}

// l4tRE reads "# R36 (release), REVISION: 4.0, GCID: ..." as 36 and 4.0.
var l4tRE = regexp.MustCompile(`^# R([0-9]+) \(release\), REVISION: ([0-9]+(?:\.[0-9]+)*)`)

// accelerators maps device nodes to the accelerator they reveal.
var accelerators = []struct{ node, name string }{
	{"dev/nvidia0", "nvidia-gpu"},
}

func readFacts(root fs.FS, goarch, goos string) Facts {
	f := Facts{Arch: goarch, OS: goos}
	if b, err := fs.ReadFile(root, "proc/device-tree/model"); err == nil {
		// The device tree stores a NUL-terminated string.
		f.Board = strings.TrimSpace(string(bytes.TrimRight(b, "\x00")))
	}
	if b, err := fs.ReadFile(root, "etc/nv_tegra_release"); err == nil {
		if m := l4tRE.FindSubmatch(b); m != nil {
			f.Firmware = string(m[1]) + "." + string(m[2])
		}
	}
	for _, a := range accelerators {
		if _, err := fs.Stat(root, a.node); err == nil {
			f.Accelerators = append(f.Accelerators, a.name)
		}
	}
	return f
}
