package reconcile

import (
	"io"
	"os"

	"github.com/shoalfleet/shoal/agent/internal/failpoint"
)

// halfwayHook returns the writer a download copies into. In a normal build
// that is f itself. In a failpoints build it also hits
// failpoint.DownloadPartial once the partial file holds at least half of
// the artifact's size bytes, after an fsync, so that a test killing the
// agent there finds a partial file to resume from.
func halfwayHook(f *os.File, have, size int64) io.Writer {
	if !failpoint.Enabled {
		return f
	}
	return &halfway{f: f, n: have, size: size}
}

type halfway struct {
	f       *os.File
	n, size int64
	hit     bool
}

func (h *halfway) Write(p []byte) (int, error) {
	n, err := h.f.Write(p)
	h.n += int64(n)
	if err == nil && !h.hit && 2*h.n >= h.size {
		h.hit = true
		if err := h.f.Sync(); err != nil {
			return n, err
		}
		failpoint.Hit(failpoint.DownloadPartial)
	}
	return n, err
}
