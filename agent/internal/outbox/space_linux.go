package outbox

import "syscall"

func statfs(path string) (space, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return space{}, false
	}
	s := space{bytes: st.Bavail * uint64(st.Bsize), inodes: st.Ffree}
	if st.Files == 0 {
		s.inodes = ^uint64(0) // e.g. btrfs: no fixed inode count
	}
	return s, true
}
