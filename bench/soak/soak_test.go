package main

import (
	"math"
	"testing"
	"time"
)

func TestNextEvent(t *testing.T) {
	m := time.Minute
	for _, c := range []struct {
		sample, restart, update, end time.Duration
		restarts, updates            bool
		wantAt                       time.Duration
		want                         string
	}{
		{0, 5 * m, 7 * m, 30 * m, true, true, 0, "sample"},
		{5 * m, 5 * m, 7 * m, 30 * m, true, true, 5 * m, "sample"}, // a tie: read the figures first
		{5*m + 30*time.Second, 5 * m, 7 * m, 30 * m, true, true, 5 * m, "restart"},
		{8 * m, 35 * m, 7 * m, 30 * m, true, true, 7 * m, "update"},
		{8 * m, 7 * m, 7 * m, 30 * m, true, true, 7 * m, "restart"}, // restart, then update
		{8 * m, 5 * m, 7 * m, 30 * m, false, false, 8 * m, "sample"},
		{30 * m, 30 * m, 30 * m, 30 * m, true, true, 30 * m, "sample"},
		{31 * m, 30 * m, 30 * m, 30 * m, true, true, 30 * m, "end"}, // nothing starts at the end
	} {
		at, what := nextEvent(c.sample, c.restart, c.update, c.end, c.restarts, c.updates)
		if at != c.wantAt || what != c.want {
			t.Errorf("nextEvent(%v, %v, %v, end %v) = %v %s; want %v %s", c.sample, c.restart, c.update, c.end, at, what, c.wantAt, c.want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics("# HELP go_goroutines Goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\nprocess_cpu_seconds_total 1.5e+02\n\n")
	if err != nil || m["go_goroutines"] != 42 || m["process_cpu_seconds_total"] != 150 || len(m) != 2 {
		t.Errorf("parseMetrics = %v, %v", m, err)
	}
	for _, bad := range []string{"go_goroutines\n", "go_goroutines x\n", `up{job="a"} 1`} {
		if _, err := parseMetrics(bad); err == nil {
			t.Errorf("parseMetrics(%q) did not fail", bad)
		}
	}
}

func TestFigures(t *testing.T) {
	at := func(min int, rssMiB, gor int64, fds int) sample {
		return sample{at: time.Duration(min) * time.Minute, u: usage{pid: 1, rss: rssMiB << 20, goroutines: gor, fds: fds}}
	}
	failed := sample{at: 3 * time.Minute, u: usage{pid: 0, rss: -1, goroutines: -1, fds: -1}}
	f := figuresOf([]sample{at(0, 40, 20, 10), at(2, 44, 21, 11), failed, at(4, 45, 22, 12), at(5, 46, 22, 12), at(6, 47, 22, 12), at(7, 48, 22, 12)}, 3*time.Minute)
	if !f.ok || f.first.at != 0 || f.warm.at != 4*time.Minute || f.last.at != 7*time.Minute {
		t.Fatalf("first %v, after warm-up %v, last %v; want 0, 4m (the failed reading at 3m skipped), 7m", f.first.at, f.warm.at, f.last.at)
	}
	// 1 MiB a minute after warm-up is 60 MiB an hour.
	if math.Abs(f.trend-60) > 1e-9 {
		t.Errorf("trend = %v MiB/h; want 60", f.trend)
	}
	// A goroutine or fd caught in flight lifts one sample, not the floor.
	g := figuresOf([]sample{at(4, 45, 22, 12), at(5, 45, 23, 13), at(6, 45, 22, 12), at(7, 45, 22, 12), at(8, 45, 22, 12), at(9, 45, 24, 12)}, 3*time.Minute)
	if g.warmGorFloor != 22 || g.endGorFloor != 22 || g.warmFDFloor != 12 || g.endFDFloor != 12 {
		t.Errorf("floors with spikes: goroutines %d → %d, fds %d → %d; want 22 → 22, 12 → 12", g.warmGorFloor, g.endGorFloor, g.warmFDFloor, g.endFDFloor)
	}
	// A leak lifts it.
	h := figuresOf([]sample{at(4, 45, 22, 12), at(5, 45, 22, 12), at(6, 45, 22, 12), at(7, 45, 23, 13), at(8, 45, 23, 13), at(9, 45, 24, 13)}, 3*time.Minute)
	if h.endGorFloor != 23 || h.endFDFloor != 13 {
		t.Errorf("floors with a leak: goroutines %d, fds %d; want 23, 13", h.endGorFloor, h.endFDFloor)
	}
	if f := figuresOf([]sample{failed}, 0); f.ok {
		t.Error("figures from failed readings only")
	}
	if !math.IsNaN(slope([]float64{1, 2}, []float64{1, 2})) {
		t.Error("a slope from two points")
	}
}

func TestIncarnations(t *testing.T) {
	s := func(pid int) sample { return sample{u: usage{pid: pid, rss: 1, goroutines: 1}} }
	down := sample{u: usage{pid: 0, rss: -1, goroutines: -1}}
	got := incarnations([]sample{s(10), s(10), down, s(20), s(30), s(30)})
	if len(got) != 3 || len(got[0]) != 2 || got[1][0].u.pid != 20 || len(got[2]) != 2 {
		t.Errorf("incarnations = %v", got)
	}
}
