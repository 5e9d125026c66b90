//go:build !linux

package outbox

// statfs reports that free space is unknown: Shoal's agent runs on Linux,
// and elsewhere (a developer's macOS build) the outbox applies no
// free-space floor and writes as if there were room.
func statfs(string) (space, bool) { return space{}, false }
