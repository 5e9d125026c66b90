// Package deploy holds no code. Its tests check the deployment files in
// this directory — systemd units, container files, the compose file —
// against the build they deploy: systemd-analyze accepts the units, and
// the container files use the Go, Debian and ONNX Runtime versions the
// Makefile and go.mod use.
package deploy
