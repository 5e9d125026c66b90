//go:build !linux

package outbox

// statfs is not implemented here: the outbox writes as if there were room.
func statfs(string) (space, bool) { return space{}, false }
