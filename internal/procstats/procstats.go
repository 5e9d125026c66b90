// Package procstats reads a process's own vital signs — goroutines, Go heap,
// resident memory, open file descriptors, threads, CPU time, uptime — and
// writes them, with whatever metrics the caller adds, in the Prometheus
// text exposition format (version 0.0.4), written by hand.
//
// Both binaries serve it on GET /metrics: the control plane on its HTTP
// API, the agent on its local API. It is linked into the agent binary, so
// it stays standard-library only (no Prometheus client library).
//
// The process figures come from the Go runtime (runtime/metrics) and, on
// Linux, /proc/self; a figure that cannot be read on this system is left
// out, never written as a made-up zero.
package procstats

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Kind is a Prometheus metric type.
type Kind string

// The metric types procstats writes.
const (
	Gauge   Kind = "gauge"
	Counter Kind = "counter"
)

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric is one sample without labels. Name must match
// [a-zA-Z_:][a-zA-Z0-9_:]*; a counter's name should end in _total.
type Metric struct {
	Name  string
	Help  string
	Kind  Kind
	Value float64
}

// start is when the process started, near enough: when the package was
// initialised, before main.
var start = time.Now()

// Stats is a snapshot of the process. A figure that could not be read is
// negative.
type Stats struct {
	Goroutines int
	// HeapAlloc is the bytes of heap objects, live or not yet swept.
	HeapAlloc int64
	// HeapInUse is the bytes of heap spans in use (runtime.MemStats.HeapInuse).
	HeapInUse int64
	// GoSys is every byte the Go runtime has mapped (runtime.MemStats.Sys).
	GoSys    int64
	GCCycles int64
	// RSS is the resident set (VmRSS); RSSAnon its anonymous part (Go
	// heap, C allocations such as ONNX Runtime's); VMS the virtual size.
	RSS, RSSAnon, VMS int64
	Threads           int
	OpenFDs           int
	MaxFDs            int64
	CPUSeconds        float64
	Start             time.Time
	Uptime            time.Duration
}

var runtimeSamples = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/total:bytes",
	"/gc/cycles/total:gc-cycles",
}

// Read takes a snapshot of the calling process. It does not stop the world.
func Read() Stats {
	s := Stats{
		Goroutines: -1, HeapAlloc: -1, HeapInUse: -1, GoSys: -1, GCCycles: -1,
		RSS: -1, RSSAnon: -1, VMS: -1, Threads: -1, OpenFDs: -1, MaxFDs: -1, CPUSeconds: -1,
		Start: start, Uptime: time.Since(start),
	}
	samples := make([]metrics.Sample, len(runtimeSamples))
	for i, n := range runtimeSamples {
		samples[i].Name = n
	}
	metrics.Read(samples)
	u := func(i int) int64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return -1
		}
		return int64(samples[i].Value.Uint64())
	}
	if g := u(0); g >= 0 {
		s.Goroutines = int(g)
	}
	s.HeapAlloc = u(1)
	if unused := u(2); s.HeapAlloc >= 0 && unused >= 0 {
		s.HeapInUse = s.HeapAlloc + unused
	}
	s.GoSys = u(3)
	s.GCCycles = u(4)

	readStatus(&s)
	s.OpenFDs = openFDs()
	s.CPUSeconds, s.MaxFDs = rusage()
	return s
}

// readStatus fills the memory and thread figures from /proc/self/status.
func readStatus(s *Stats) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	st := ParseStatus(data)
	if v, ok := st["VmRSS"]; ok {
		s.RSS = v
	}
	if v, ok := st["RssAnon"]; ok {
		s.RSSAnon = v
	}
	if v, ok := st["VmSize"]; ok {
		s.VMS = v
	}
	if v, ok := st["Threads"]; ok {
		s.Threads = int(v)
	}
}

// ParseStatus reads the numeric fields of a Linux /proc/PID/status file:
// sizes given in kB are returned in bytes, counts (Threads) as they are.
// Fields that are not a number (Name, State, ...) are left out.
func ParseStatus(data []byte) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) == 2 {
			if f[1] != "kB" {
				continue
			}
			n *= 1024
		}
		out[key] = n
	}
	return out
}

// openFDs counts /proc/self/fd, less the descriptor used to read it; -1
// without /proc.
func openFDs() int {
	return CountFDs("/proc/self/fd", true)
}

// CountFDs counts the entries of a /proc/PID/fd directory; -1 if it cannot
// be read. self says that the directory is the caller's own, whose reading
// holds one descriptor that is not counted.
func CountFDs(dir string, self bool) int {
	f, err := os.Open(dir)
	if err != nil {
		return -1
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return -1
	}
	if self {
		return len(names) - 1
	}
	return len(names)
}

// Metrics returns the snapshot as Prometheus metrics, leaving out the
// figures that could not be read. Names follow the Prometheus client
// libraries' where one exists, so that their dashboards work.
func (s Stats) Metrics() []Metric {
	var out []Metric
	add := func(name, help string, kind Kind, v float64) {
		if v >= 0 {
			out = append(out, Metric{Name: name, Help: help, Kind: kind, Value: v})
		}
	}
	add("go_goroutines", "Number of goroutines that currently exist.", Gauge, float64(s.Goroutines))
	add("go_memstats_heap_alloc_bytes", "Bytes of heap objects, live or not yet swept.", Gauge, float64(s.HeapAlloc))
	add("go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans.", Gauge, float64(s.HeapInUse))
	add("go_memstats_sys_bytes", "Bytes of memory the Go runtime has mapped.", Gauge, float64(s.GoSys))
	add("go_gc_cycles_total", "Completed garbage collection cycles.", Counter, float64(s.GCCycles))
	add("process_resident_memory_bytes", "Resident memory size in bytes.", Gauge, float64(s.RSS))
	add("process_resident_memory_anon_bytes", "Anonymous resident memory in bytes: the Go heap and C allocations.", Gauge, float64(s.RSSAnon))
	add("process_virtual_memory_bytes", "Virtual memory size in bytes.", Gauge, float64(s.VMS))
	add("process_threads", "Number of OS threads.", Gauge, float64(s.Threads))
	add("process_open_fds", "Number of open file descriptors.", Gauge, float64(s.OpenFDs))
	add("process_max_fds", "Maximum number of open file descriptors.", Gauge, float64(s.MaxFDs))
	add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", Counter, s.CPUSeconds)
	add("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", Gauge, float64(s.Start.UnixNano())/1e9)
	add("process_uptime_seconds", "Seconds since the process started.", Gauge, s.Uptime.Seconds())
	return out
}

// WriteMetrics writes the process's metrics, then extra, in the text
// exposition format. It checks every metric before writing anything: a bad
// name, an unknown kind or a name used twice is an error and nothing is
// written.
func WriteMetrics(w io.Writer, extra ...Metric) error {
	all := append(Read().Metrics(), extra...)
	if err := check(all); err != nil {
		return err
	}
	var b []byte
	for _, m := range all {
		b = appendMetric(b, m)
	}
	_, err := w.Write(b)
	return err
}

func check(ms []Metric) error {
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		if !validName(m.Name) {
			return fmt.Errorf("procstats: metric name %q is not [a-zA-Z_:][a-zA-Z0-9_:]*", m.Name)
		}
		if m.Kind != Gauge && m.Kind != Counter {
			return fmt.Errorf("procstats: metric %s: kind %q is not gauge or counter", m.Name, m.Kind)
		}
		if seen[m.Name] {
			return fmt.Errorf("procstats: metric %s is given twice", m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

func validName(n string) bool {
	if n == "" {
		return false
	}
	for i, c := range n {
		switch {
		case c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func appendMetric(b []byte, m Metric) []byte {
	if m.Help != "" {
		b = append(b, "# HELP "...)
		b = append(b, m.Name...)
		b = append(b, ' ')
		b = append(b, helpEscaper.Replace(m.Help)...)
		b = append(b, '\n')
	}
	b = append(b, "# TYPE "...)
	b = append(b, m.Name...)
	b = append(b, ' ')
	b = append(b, m.Kind...)
	b = append(b, '\n')
	b = append(b, m.Name...)
	b = append(b, ' ')
	b = appendValue(b, m.Value)
	return append(b, '\n')
}

func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// Handler serves WriteMetrics with the metrics extra returns (extra may be
// nil). A metric the caller got wrong is a 500 that says which.
func Handler(extra func() []Metric) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var more []Metric
		if extra != nil {
			more = extra()
		}
		var buf bytes.Buffer
		if err := WriteMetrics(&buf, more...); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		w.Write(buf.Bytes())
	})
}
