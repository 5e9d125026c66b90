// Package firmwareprofiles describes classes of device hardware — a
// Raspberry Pi 4, a Jetson Orin, a plain amd64 box — and loads those
// descriptions from YAML.
//
// A profile says which devices it is for (match rules: architecture, OS,
// board, accelerators, firmware version range), how a model should run there
// (ONNX Runtime execution providers in order of preference, precision), what
// a model may cost (size and memory budgets) and how the agent should behave
// (outbox bound, telemetry window, inference threads).
//
// The profiles in this directory are embedded, so every binary that links
// the package carries them (Builtin); operators can add their own with
// LoadDir. The agent detects its profile
// from the machine (Detect(LocalFacts())) or is told one by name, reports
// it, and takes its limits from it; the control plane will use the same
// profiles for per-profile artifact variants and budget gates.
//
// The package is linked into the agent binary: standard library and
// gopkg.in/yaml.v3 only.
package firmwareprofiles
