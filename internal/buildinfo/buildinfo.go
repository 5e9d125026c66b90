// Package buildinfo holds the version stamped into both binaries at link
// time (make build sets it from git describe).
package buildinfo

// Version is the Shoal version; "dev" unless set with -ldflags -X.
var Version = "dev"
