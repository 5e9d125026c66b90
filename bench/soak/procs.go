package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalfleet/shoal/internal/procstats"
)

// proc is a child process whose output goes to a log file. It can be
// started again after it stopped (the control plane's restarts).
type proc struct {
	name string
	bin  string
	args []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current run exits
	err  error         // its exit error
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n==== soak: starting %s at %s ====\n", p.name, time.Now().Format(time.RFC3339))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// A process group of its own, so that a Ctrl-C in the terminal reaches
	// the harness only, which then stops the children in order; and
	// SIGKILL if the harness dies without doing so.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// pid returns the running process's id, 0 if it is not running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// exited reports whether the current run has ended, and how.
func (p *proc) exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false, nil
	}
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM and waits; after timeout it sends SIGKILL. It returns
// the exit error, and whether the kill was needed.
func (p *proc) stop(timeout time.Duration) (err error, killed bool) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil, false
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		killed = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err, killed
}

// tail returns the end of the log.
func (p *proc) tail(n int) string {
	data, _ := os.ReadFile(p.log)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// freeAddr returns a loopback address with a port free just now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// usage is one reading of a process.
type usage struct {
	pid        int
	rss        int64 // bytes, -1 unknown
	rssAnon    int64
	threads    int64
	fds        int   // -1 unknown
	goroutines int64 // from /metrics; -1 when the scrape failed
	heapInUse  int64
	metrics    map[string]float64 // the whole scrape; nil when it failed
}

// read reads /proc/PID and scrapes metricsURL.
func read(pid int, metricsURL string, hc *http.Client) usage {
	u := usage{pid: pid, rss: -1, rssAnon: -1, threads: -1, fds: -1, goroutines: -1, heapInUse: -1}
	if pid > 0 {
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			st := procstats.ParseStatus(data)
			u.rss, u.rssAnon, u.threads = get(st, "VmRSS"), get(st, "RssAnon"), get(st, "Threads")
		}
		u.fds = procstats.CountFDs(filepath.Join("/proc", strconv.Itoa(pid), "fd"), false)
	}
	if m, err := scrape(hc, metricsURL); err == nil {
		u.metrics = m
		u.goroutines = metric(m, "go_goroutines")
		u.heapInUse = metric(m, "go_memstats_heap_inuse_bytes")
	}
	return u
}

func get(m map[string]int64, k string) int64 {
	if v, ok := m[k]; ok {
		return v
	}
	return -1
}

func metric(m map[string]float64, name string) int64 {
	if v, ok := m[name]; ok {
		return int64(v)
	}
	return -1
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$`)

// scrape GETs a /metrics URL and returns its samples by name.
func scrape(hc *http.Client, url string) (map[string]float64, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(string(body))
}

// parseMetrics reads the samples of a text exposition without labels.
func parseMetrics(text string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("not a sample: %q", line)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out, nil
}
