package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// errStalled is the cause when a download receives nothing for a while.
var errStalled = errors.New("download stalled")

// download brings the artifact's partial file up to the manifest's size,
// resuming from what is already on disk with a Range request. It reports
// whether it resumed (so that a digest mismatch can be retried once from
// scratch: a partial file that survived a power cut may hold garbage).
//
// Server answers: 206 appends at the offset (checked against
// Content-Range); 200 means the server ignored Range, so the file starts
// over; 416 means it refused the range, so the partial file is dropped and
// the download starts over once. A download that stops midway keeps its
// bytes for the next attempt. Errors are *failure values saying whether a
// retry may help.
func (r *Reconciler) download(ctx context.Context, a *shoalv1.Artifact) (resumed bool, err error) {
	for try := 0; ; try++ {
		resumed, restart, err := r.downloadOnce(ctx, a)
		if restart && try == 0 {
			continue
		}
		return resumed, err
	}
}

func (r *Reconciler) downloadOnce(ctx context.Context, a *shoalv1.Artifact) (resumed, restart bool, err error) {
	sha, size := a.GetSha256(), a.GetSize()
	part, have := r.cfg.Store.Partial(sha)
	if part == "" {
		return false, false, permanent(fmt.Errorf("artifact sha256 %q is malformed", sha))
	}
	if have > size {
		r.log.Warn("partial download is larger than the artifact; starting over", "sha256", sha, "have", have, "size", size)
		if err := r.cfg.Store.RemovePartial(sha); err != nil {
			return false, false, transient(err)
		}
		have = 0
	}
	if have == size {
		return true, false, nil // complete from an earlier run; verification decides
	}
	u, err := resolveURL(r.server, a.GetUrl())
	if err != nil {
		return false, false, permanent(err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(r.cfg.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, false, permanent(fmt.Errorf("artifact url %q: %w", u, err))
	}
	req.Header.Set("User-Agent", "shoal-agent/"+r.cfg.AgentVersion)
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := r.cfg.HTTP.Do(req)
	if err != nil {
		return false, false, r.netErr(ctx, fmt.Errorf("GET %s: %w", u, err))
	}
	defer resp.Body.Close()

	flag := os.O_WRONLY | os.O_CREATE
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != have {
			// Not the range we asked for: start over rather than splice.
			if rerr := r.cfg.Store.RemovePartial(sha); rerr != nil {
				return false, false, transient(rerr)
			}
			return false, true, transient(fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q; starting over",
				u, have, resp.Header.Get("Content-Range")))
		}
		if total >= 0 && total != size {
			return false, false, permanent(fmt.Errorf("GET %s: the server's artifact is %d bytes; the manifest says %d", u, total, size))
		}
		flag |= os.O_APPEND
		resumed = true
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			return false, false, permanent(fmt.Errorf("GET %s: the server's artifact is %d bytes; the manifest says %d", u, resp.ContentLength, size))
		}
		if have > 0 {
			r.log.Info("server ignored the Range request; downloading from the start", "url", u, "had", have)
		}
		have = 0
		flag |= os.O_TRUNC
	case http.StatusRequestedRangeNotSatisfiable:
		if rerr := r.cfg.Store.RemovePartial(sha); rerr != nil {
			return false, false, transient(rerr)
		}
		return false, true, transient(fmt.Errorf("GET %s: the server refused the range from byte %d (416); starting over", u, have))
	default:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(snippet)))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
			return false, false, transient(err)
		}
		return false, false, permanent(err)
	}

	f, err := os.OpenFile(part, flag, 0o600)
	if err != nil {
		return false, false, transient(fmt.Errorf("open partial download: %w", err))
	}
	want := size - have
	body := &progressReader{r: io.LimitReader(resp.Body, want+1), onRead: func() { stall.Reset(r.cfg.StallTimeout) }}
	n, copyErr := io.Copy(halfwayHook(f, have, size), body)
	syncErr := f.Sync()
	closeErr := f.Close()
	switch {
	case n > want:
		_ = r.cfg.Store.RemovePartial(sha)
		return false, false, permanent(fmt.Errorf("GET %s: the server sent more than the manifest's %d bytes", u, size))
	case copyErr != nil:
		return resumed, false, r.netErr(ctx, fmt.Errorf("GET %s: interrupted after %d of %d bytes: %w", u, have+n, size, copyErr))
	case n < want:
		return resumed, false, transient(fmt.Errorf("GET %s: the body ended after %d of %d bytes", u, have+n, size))
	case syncErr != nil:
		return resumed, false, transient(fmt.Errorf("write partial download: %w", syncErr))
	case closeErr != nil:
		return resumed, false, transient(fmt.Errorf("write partial download: %w", closeErr))
	}
	return resumed, false, nil
}

// netErr classifies a network error: one caused by a stall becomes a
// clear message; the caller's own cancellation stays a cancellation.
func (r *Reconciler) netErr(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) {
		return transient(fmt.Errorf("%w: no data for %s", err, r.cfg.StallTimeout))
	}
	return transient(err)
}

// parseContentRange parses "bytes start-end/total" (total may be "*",
// returned as -1).
func parseContentRange(s string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %q: want bytes start-end/total", s)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %q: want bytes start-end/total", s)
	}
	first, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %q: want bytes start-end/total", s)
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil || start < 0 {
		return 0, 0, fmt.Errorf("Content-Range %q: bad start", s)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, fmt.Errorf("Content-Range %q: bad total", s)
		}
	}
	return start, total, nil
}

// progressReader calls onRead whenever bytes arrive (to push back the
// stall timer).
type progressReader struct {
	r      io.Reader
	onRead func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.onRead()
	}
	return n, err
}
