package firmwareprofiles

import (
	"reflect"
	"runtime"
	"testing"
	"testing/fstest"
)

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name  string
		facts Facts
		want  string // "" for no match
	}{
		{"plain amd64", Facts{Arch: "amd64", OS: "linux"}, "generic-amd64"},
		{"amd64 with an NVIDIA GPU", Facts{Arch: "amd64", OS: "linux", Accelerators: []string{"nvidia-gpu"}}, "nvidia-gpu-amd64"},
		{"amd64 with another accelerator", Facts{Arch: "amd64", OS: "linux", Accelerators: []string{"npu-x"}}, "generic-amd64"},
		{"plain arm64", Facts{Arch: "arm64", OS: "linux"}, "generic-arm64"},
		{"Pi 4", Facts{Arch: "arm64", OS: "linux", Board: "Raspberry Pi 4 Model B Rev 1.4"}, "raspberry-pi-4"},
		{"Pi 400", Facts{Arch: "arm64", OS: "linux", Board: "Raspberry Pi 400 Rev 1.0"}, "raspberry-pi-4"},
		{"CM4", Facts{Arch: "arm64", OS: "linux", Board: "Raspberry Pi Compute Module 4 Rev 1.0"}, "raspberry-pi-4"},
		{"Pi 5 is not a Pi 4", Facts{Arch: "arm64", OS: "linux", Board: "Raspberry Pi 5 Model B Rev 1.0"}, "generic-arm64"},
		{"Pi 4 on a 32-bit OS", Facts{Arch: "arm", OS: "linux", Board: "Raspberry Pi 4 Model B Rev 1.4"}, ""},
		{"AGX Orin on JetPack 6", Facts{Arch: "arm64", OS: "linux", Board: "NVIDIA Jetson AGX Orin Developer Kit", Firmware: "36.4.0"}, "jetson-orin"},
		{"Orin Nano on JetPack 6", Facts{Arch: "arm64", OS: "linux", Board: "NVIDIA Jetson Orin Nano Developer Kit", Firmware: "36.3.0"}, "jetson-orin"},
		{"Orin on JetPack 5", Facts{Arch: "arm64", OS: "linux", Board: "NVIDIA Jetson AGX Orin Developer Kit", Firmware: "35.4.1"}, "generic-arm64"},
		{"Orin, L4T unknown", Facts{Arch: "arm64", OS: "linux", Board: "NVIDIA Jetson AGX Orin Developer Kit"}, "generic-arm64"},
		{"Xavier on JetPack 6 numbers", Facts{Arch: "arm64", OS: "linux", Board: "NVIDIA Jetson Xavier NX Developer Kit", Firmware: "36.4.0"}, "generic-arm64"},
		{"riscv64", Facts{Arch: "riscv64", OS: "linux"}, ""},
		{"amd64 on Windows", Facts{Arch: "amd64", OS: "windows"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := Detect(tc.facts)
			if ok != (tc.want != "") || p.Name != tc.want {
				t.Errorf("Detect(%+v) = %q, %v; want %q", tc.facts, p.Name, ok, tc.want)
			}
		})
	}
}

func TestDetectAmongPrefersSpecificRules(t *testing.T) {
	arm := []string{"arm64"}
	board := Profile{Name: "a-board", Match: Match{Arch: arm, Board: "^Board X"}}
	accel := Profile{Name: "b-accel", Match: Match{Arch: arm, Accelerators: []string{"npu"}}}
	twoAccels := Profile{Name: "c-accels", Match: Match{Arch: arm, Accelerators: []string{"npu", "gpu"}}}
	fw := Profile{Name: "d-fw", Match: Match{Arch: arm, Firmware: &VersionRange{Min: "2"}}}
	os := Profile{Name: "e-os", Match: Match{Arch: arm, OS: []string{"linux"}}}
	bare := Profile{Name: "f-bare", Match: Match{Arch: arm}}
	bare2 := Profile{Name: "g-bare", Match: Match{Arch: arm}}
	all := []Profile{bare, bare2, os, fw, accel, twoAccels, board}

	for _, tc := range []struct {
		facts Facts
		want  string
	}{
		{Facts{Arch: "arm64", OS: "linux", Board: "Board X", Firmware: "3", Accelerators: []string{"npu", "gpu"}}, "a-board"},
		{Facts{Arch: "arm64", OS: "linux", Firmware: "3", Accelerators: []string{"npu", "gpu"}}, "c-accels"},
		{Facts{Arch: "arm64", OS: "linux", Firmware: "3", Accelerators: []string{"npu"}}, "b-accel"},
		{Facts{Arch: "arm64", OS: "linux", Firmware: "3"}, "d-fw"},
		{Facts{Arch: "arm64", OS: "linux", Firmware: "1"}, "e-os"},
		{Facts{Arch: "arm64", OS: "darwin"}, "f-bare"}, // the first of equals
		{Facts{Arch: "amd64", OS: "linux"}, ""},
	} {
		p, ok := DetectAmong(tc.facts, all)
		if ok != (tc.want != "") || p.Name != tc.want {
			t.Errorf("DetectAmong(%+v) = %q, %v; want %q", tc.facts, p.Name, ok, tc.want)
		}
	}
}

func TestMatchesWithoutLoad(t *testing.T) {
	// A Profile built in Go has no compiled board regexp; Matches compiles it.
	p := Profile{Name: "x", Match: Match{Arch: []string{"arm64"}, Board: "^Pi"}}
	if !p.Matches(Facts{Arch: "arm64", Board: "Pi 4"}) || p.Matches(Facts{Arch: "arm64", Board: "Rock 5"}) || p.Matches(Facts{Arch: "arm64"}) {
		t.Error("board rule not applied")
	}
	p.Match.Board = "(" // broken: never matches
	if p.Matches(Facts{Arch: "arm64", Board: "("}) {
		t.Error("a broken board regexp matched")
	}
}

func TestReadFacts(t *testing.T) {
	jetson := fstest.MapFS{
		"proc/device-tree/model": {Data: []byte("NVIDIA Jetson AGX Orin Developer Kit\x00")},
		"etc/nv_tegra_release":   {Data: []byte("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\n")},
	}
	got := readFacts(jetson, "arm64", "linux")
	want := Facts{Arch: "arm64", OS: "linux", Board: "NVIDIA Jetson AGX Orin Developer Kit", Firmware: "36.4.0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Jetson: %+v, want %+v", got, want)
	}
	if p, _ := Detect(got); p.Name != "jetson-orin" {
		t.Errorf("a Jetson's facts detect %q", p.Name)
	}

	pi := fstest.MapFS{"proc/device-tree/model": {Data: []byte("Raspberry Pi 4 Model B Rev 1.5\x00")}}
	if got := readFacts(pi, "arm64", "linux"); got.Board != "Raspberry Pi 4 Model B Rev 1.5" || got.Firmware != "" {
		t.Errorf("Pi: %+v", got)
	}

	gpu := fstest.MapFS{"dev/nvidia0": {}, "etc/nv_tegra_release": {Data: []byte("garbage\n")}}
	if got := readFacts(gpu, "amd64", "linux"); !reflect.DeepEqual(got.Accelerators, []string{"nvidia-gpu"}) || got.Board != "" || got.Firmware != "" {
		t.Errorf("GPU box: %+v", got)
	}

	if got := readFacts(fstest.MapFS{}, "riscv64", "linux"); !reflect.DeepEqual(got, Facts{Arch: "riscv64", OS: "linux"}) {
		t.Errorf("bare: %+v", got)
	}

	if f := LocalFacts(); f.Arch != runtime.GOARCH || f.OS != runtime.GOOS {
		t.Errorf("LocalFacts() = %+v on %s/%s", f, runtime.GOOS, runtime.GOARCH)
	}
}
