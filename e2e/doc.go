// Package e2e holds Shoal's end-to-end tests: the real `shoal` and
// `shoal-agent` binaries as processes, and whole fleets in one process
// (control plane + agents over the embedded MQTT broker, real Badger, real
// ONNX Runtime).
package e2e
