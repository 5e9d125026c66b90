package procstats

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// exposition is a parsed text exposition: values, types and help by name.
type exposition struct {
	values map[string]float64
	types  map[string]string
	help   map[string]string
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$`)
	typeLine   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter)$`)
	helpLine   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$`)
)

// parse checks text against the exposition format, as much of it as
// procstats writes: HELP, then TYPE, then one sample, for each name once.
func parse(t *testing.T, text string) exposition {
	t.Helper()
	e := exposition{values: map[string]float64{}, types: map[string]string{}, help: map[string]string{}}
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("output does not end in a newline: %q", text)
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if m := helpLine.FindStringSubmatch(line); m != nil {
			e.help[m[1]] = m[2]
			continue
		}
		if m := typeLine.FindStringSubmatch(line); m != nil {
			if _, dup := e.types[m[1]]; dup {
				t.Errorf("line %d: second TYPE for %s", i+1, m[1])
			}
			e.types[m[1]] = m[2]
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d is not HELP, TYPE or a sample: %q", i+1, line)
		}
		if _, ok := e.types[m[1]]; !ok {
			t.Errorf("line %d: sample %s before its TYPE", i+1, m[1])
		}
		if _, dup := e.values[m[1]]; dup {
			t.Errorf("line %d: second sample for %s", i+1, m[1])
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Errorf("line %d: value %q: %v", i+1, m[2], err)
		}
		e.values[m[1]] = v
	}
	return e
}

func TestWriteMetrics(t *testing.T) {
	var buf bytes.Buffer
	err := WriteMetrics(&buf,
		Metric{Name: "shoal_test_queue_records", Help: "Records queued.", Kind: Gauge, Value: 42},
		Metric{Name: "shoal_test_sent_total", Help: `Sent; a \ and a` + "\nsecond line.", Kind: Counter, Value: 1e12},
		Metric{Name: "shoal_test_ratio", Kind: Gauge, Value: 0.125},
	)
	if err != nil {
		t.Fatal(err)
	}
	e := parse(t, buf.String())
	for name, want := range map[string]float64{"shoal_test_queue_records": 42, "shoal_test_sent_total": 1e12, "shoal_test_ratio": 0.125} {
		if got, ok := e.values[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v); want %v", name, got, ok, want)
		}
	}
	if e.types["shoal_test_sent_total"] != "counter" || e.types["shoal_test_queue_records"] != "gauge" {
		t.Errorf("types = %v", e.types)
	}
	if got, want := e.help["shoal_test_sent_total"], `Sent; a \\ and a\nsecond line.`; got != want {
		t.Errorf("escaped help = %q; want %q", got, want)
	}
	if _, ok := e.help["shoal_test_ratio"]; ok {
		t.Error("a metric without help has a HELP line")
	}

	always := []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes",
		"go_gc_cycles_total", "process_start_time_seconds", "process_uptime_seconds"}
	if runtime.GOOS == "linux" {
		always = append(always, "process_resident_memory_bytes", "process_resident_memory_anon_bytes", "process_virtual_memory_bytes",
			"process_threads", "process_open_fds", "process_max_fds", "process_cpu_seconds_total")
	}
	for _, name := range always {
		if _, ok := e.values[name]; !ok {
			t.Errorf("%s missing from\n%s", name, buf.String())
		}
		if e.help[name] == "" {
			t.Errorf("%s has no help", name)
		}
	}
	if g := e.values["go_goroutines"]; g < 1 {
		t.Errorf("go_goroutines = %v", g)
	}
	if inuse, alloc := e.values["go_memstats_heap_inuse_bytes"], e.values["go_memstats_heap_alloc_bytes"]; inuse < alloc || alloc <= 0 {
		t.Errorf("heap in use %v < heap alloc %v", inuse, alloc)
	}
	if rss, anon := e.values["process_resident_memory_bytes"], e.values["process_resident_memory_anon_bytes"]; runtime.GOOS == "linux" && (anon <= 0 || rss < anon) {
		t.Errorf("RSS %v, of which anonymous %v", rss, anon)
	}
}

func TestWriteMetricsRefusesBadMetrics(t *testing.T) {
	ok := Metric{Name: "shoal_ok", Kind: Gauge}
	for _, c := range []struct {
		name  string
		extra []Metric
		want  string
	}{
		{"empty name", []Metric{{Name: "", Kind: Gauge}}, `name ""`},
		{"leading digit", []Metric{{Name: "1up", Kind: Gauge}}, `"1up"`},
		{"dash", []Metric{{Name: "shoal-agent_up", Kind: Gauge}}, `"shoal-agent_up"`},
		{"space", []Metric{{Name: "shoal up", Kind: Gauge}}, `"shoal up"`},
		{"no kind", []Metric{{Name: "shoal_up"}}, "kind"},
		{"unknown kind", []Metric{{Name: "shoal_up", Kind: "histogram"}}, "histogram"},
		{"twice", []Metric{ok, ok}, "twice"},
		{"a process metric's name", []Metric{{Name: "go_goroutines", Kind: Gauge}}, "go_goroutines is given twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteMetrics(&buf, c.extra...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v; want one that mentions %s", err, c.want)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
	// Colons and digits after the first character are allowed.
	if err := WriteMetrics(&bytes.Buffer{}, Metric{Name: "_a:b_9", Kind: Counter}); err != nil {
		t.Error(err)
	}
}

func TestValues(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 42: "42", -3: "-3", 0.5: "0.5", 1.5e-7: "1.5e-07", 123456789012: "1.23456789012e+11",
		math.Inf(1): "+Inf", math.Inf(-1): "-Inf",
	} {
		if got := string(appendValue(nil, v)); got != want {
			t.Errorf("appendValue(%v) = %q; want %q", v, got, want)
		}
	}
	if got := string(appendValue(nil, math.NaN())); got != "NaN" {
		t.Errorf("NaN = %q", got)
	}
}

// TestReadFollowsTheProcess checks that the figures move with what the
// process does, so that they are read, not made up.
func TestReadFollowsTheProcess(t *testing.T) {
	before := Read()

	const n = 50
	var started, stop sync.WaitGroup
	started.Add(n)
	stop.Add(1)
	for range n {
		go func() { started.Done(); stop.Wait() }()
	}
	started.Wait()
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = byte(i)
	}
	var files []*os.File
	if before.OpenFDs >= 0 {
		for i := range 5 {
			f, err := os.Create(filepath.Join(t.TempDir(), strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
	}
	during := Read()
	stop.Done()
	runtime.KeepAlive(big)

	if during.Goroutines < before.Goroutines+n {
		t.Errorf("goroutines %d → %d with %d more running", before.Goroutines, during.Goroutines, n)
	}
	if during.HeapAlloc < before.HeapAlloc+60<<20 {
		t.Errorf("heap %d → %d with 64 MiB more live", before.HeapAlloc, during.HeapAlloc)
	}
	if before.RSS >= 0 && during.RSS < before.RSS+60<<20 {
		t.Errorf("RSS %d → %d with 64 MiB more written", before.RSS, during.RSS)
	}
	if before.OpenFDs >= 0 {
		if during.OpenFDs != before.OpenFDs+len(files) {
			t.Errorf("open fds %d → %d with %d more files open", before.OpenFDs, during.OpenFDs, len(files))
		}
		for _, f := range files {
			f.Close()
		}
		if after := Read(); after.OpenFDs != before.OpenFDs {
			t.Errorf("open fds %d after closing them; %d before", after.OpenFDs, before.OpenFDs)
		}
	}
	if runtime.GOOS == "linux" {
		if before.Threads < 1 || before.MaxFDs < 1 || before.CPUSeconds <= 0 || before.VMS < before.RSS {
			t.Errorf("threads %d, max fds %d, CPU %vs, VMS %d, RSS %d", before.Threads, before.MaxFDs, before.CPUSeconds, before.VMS, before.RSS)
		}
	}
	if during.Uptime <= before.Uptime || !during.Start.Equal(before.Start) {
		t.Errorf("uptime %v → %v, start %v → %v", before.Uptime, during.Uptime, before.Start, during.Start)
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tshoal-agent\nState:\tS (sleeping)\nVmSize:\t 1282340 kB\nVmRSS:\t   45568 kB\nRssAnon:\t   12900 kB\nThreads:\t17\nSigQ:\t0/94359\nweird\n"
	got := ParseStatus([]byte(status))
	want := map[string]int64{"VmSize": 1282340 << 10, "VmRSS": 45568 << 10, "RssAnon": 12900 << 10, "Threads": 17}
	if len(got) != len(want) {
		t.Errorf("ParseStatus = %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d; want %d", k, got[k], v)
		}
	}
}

func TestCountFDs(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"0", "1", "2"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	if n := CountFDs(dir, false); n != 3 {
		t.Errorf("CountFDs = %d; want 3", n)
	}
	if n := CountFDs(filepath.Join(dir, "missing"), false); n != -1 {
		t.Errorf("CountFDs of a missing dir = %d; want -1", n)
	}
}

func TestHandler(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(Handler(func() []Metric {
		calls++
		return []Metric{{Name: "shoal_calls", Kind: Counter, Value: float64(calls)}}
	}))
	defer srv.Close()
	for want := 1.0; want <= 2; want++ {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if got := parse(t, buf.String()).values["shoal_calls"]; got != want {
			t.Errorf("shoal_calls = %v; want %v (the extras are read per request)", got, want)
		}
	}

	bad := httptest.NewServer(Handler(func() []Metric { return []Metric{{Name: "bad name", Kind: Gauge}} }))
	defer bad.Close()
	resp, err := http.Get(bad.URL)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body.String(), `"bad name"`) {
		t.Errorf("a bad extra metric: %d %q; want a 500 that names it", resp.StatusCode, body.String())
	}

	nilExtra := httptest.NewServer(Handler(nil))
	defer nilExtra.Close()
	if resp, err := http.Get(nilExtra.URL); err != nil || resp.StatusCode != 200 {
		t.Errorf("Handler(nil): %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}
