// Package onnxrt is Shoal's adapter to ONNX Runtime, shared by the agent and
// the control plane: it finds and loads the shared library, opens sessions,
// converts tensors between Go, ONNX Runtime and the wire format, and builds
// and checks self-tests.
package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Version is the ONNX Runtime release Shoal is built and tested against.
const Version = "1.24.1"

// EnvVar names the environment variable that may point at the library.
const EnvVar = "ONNXRUNTIME_LIB"

var (
	initMu   sync.Mutex
	initPath string
)

// DefaultCachePath is where `make ort` puts the library:
// $XDG_CACHE_HOME (or ~/.cache)/shoal/onnxruntime/<version>/linux-<arch>/libonnxruntime.so.1.
func DefaultCachePath() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		base = filepath.Join(home, ".cache")
	}
	arch := "x64"
	if runtime.GOARCH == "arm64" {
		arch = "arm64"
	}
	return filepath.Join(base, "shoal", "onnxruntime", Version, "linux-"+arch, "libonnxruntime.so.1")
}

// Init loads the ONNX Runtime library and initialises its environment. It
// tries, in order: flagPath (e.g. --onnxruntime-lib), $ONNXRUNTIME_LIB, the
// cache (DefaultCachePath), then the system's library search path. The first
// that loads wins; later calls return the loaded path. When none loads, the
// error lists every path tried, why each failed, and how to get the library.
func Init(flagPath string) (string, error) {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath != "" {
		return initPath, nil
	}
	type candidate struct{ path, from string }
	var cands []candidate
	if flagPath != "" {
		cands = append(cands, candidate{flagPath, "--onnxruntime-lib"})
	}
	if p := os.Getenv(EnvVar); p != "" {
		cands = append(cands, candidate{p, "$" + EnvVar})
	}
	if p := DefaultCachePath(); p != "" {
		cands = append(cands, candidate{p, "cache"})
	}
	cands = append(cands, candidate{"libonnxruntime.so.1", "system library path"}, candidate{"libonnxruntime.so", "system library path"})

	var tried []string
	for _, c := range cands {
		if strings.ContainsRune(c.path, '/') {
			if _, err := os.Stat(c.path); err != nil {
				tried = append(tried, fmt.Sprintf("  %s (%s): %v", c.path, c.from, errors.Unwrap(err)))
				continue
			}
		}
		ort.SetSharedLibraryPath(c.path)
		// Fatal only: every error ORT has is also returned as a Go error,
		// which callers log through slog (rate-limited); ORT's own error
		// lines would go to stderr once per failed run, unbounded.
		if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil {
			tried = append(tried, fmt.Sprintf("  %s (%s): %v", c.path, c.from, err))
			continue
		}
		ort.DisableTelemetry()
		initPath = c.path
		return c.path, nil
	}
	return "", fmt.Errorf("cannot load the ONNX Runtime %s library; tried:\n%s\n"+
		"Get it with `make ort` (fetches libonnxruntime.so.1 from the npm package onnxruntime-node@%s into %s), "+
		"or point --onnxruntime-lib or $%s at a libonnxruntime.so %s",
		Version, strings.Join(tried, "\n"), Version, filepath.Dir(DefaultCachePath()), EnvVar, Version)
}

// MustInitForTest loads the library for tests; it fails the caller with the
// full explanation if it cannot.
func MustInitForTest(t interface {
	Helper()
	Fatalf(string, ...any)
}) {
	t.Helper()
	if _, err := Init(""); err != nil {
		t.Fatalf("%v", err)
	}
}
