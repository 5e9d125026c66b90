package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// progressReader reports how much of a known size has been read, on one
// terminal line redrawn at most every 200ms, when w is a terminal.
type progressReader struct {
	r     io.Reader
	w     io.Writer
	label string
	total int64
	done  atomic.Int64
	last  time.Time
	start time.Time
}

// openUpload opens the file at path for upload, showing progress on w
// (withProgress). what names the file in errors ("model file").
func openUpload(path, what string, w io.Writer) (io.Reader, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", what, err)
	}
	var body io.Reader = f
	if fi, err := f.Stat(); err == nil {
		body = withProgress(f, w, "uploading "+path, fi.Size())
	}
	return body, f.Close, nil
}

// withProgress wraps r so that reading it shows progress on w, if w is a
// terminal and the total is large enough to be worth showing.
func withProgress(r io.Reader, w io.Writer, label string, total int64) io.Reader {
	f, ok := w.(*os.File)
	if !ok || total < 4<<20 {
		return r
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return r
	}
	return &progressReader{r: r, w: w, label: label, total: total, start: time.Now()}
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	done := p.done.Add(int64(n))
	if now := time.Now(); now.Sub(p.last) > 200*time.Millisecond || err == io.EOF {
		p.last = now
		pct := float64(done) / float64(p.total) * 100
		rate := float64(done) / now.Sub(p.start).Seconds()
		fmt.Fprintf(p.w, "\r%s %5.1f%% %s / %s  %s/s   ", p.label, pct, humanBytes(done), humanBytes(p.total), humanBytes(int64(rate)))
		if err == io.EOF {
			fmt.Fprintln(p.w)
		}
	}
	return n, err
}
