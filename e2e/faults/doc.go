// Package faults is Shoal's fault-injection suite: it runs the real
// `shoal` and `shoal-agent` binaries (the agent built with the
// `failpoints` tag), kills them with SIGKILL at named points of the update
// and upload paths and at random times, restarts the control plane and
// takes it away for a while, and checks the reliability guarantees of
// docs/RELIABILITY.md with exact counts.
//
// `go test ./e2e/faults` (and `make test`) runs the short mode;
// `make test-faults` runs the full mode (-faults.full, or SHOAL_FAULTS=full):
// longer outages and more random kills.
package faults
