package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets (the offline-first issue): after warm-up, RSS grows by at most
// 5 MiB, and goroutines and open files not at all.
const maxRSSGrowthMiB = 5.0

// figures are one process's readings at the first sample, the first
// sample after warm-up, and the last.
type figures struct {
	id                string
	first, warm, last sample
	trend             float64 // RSS MiB per hour after warm-up, least squares
	ok                bool
	warmedUp          bool // a sample was taken after the warm-up
	// The lowest goroutine and fd counts of the first floorSamples
	// samples after warm-up and of the last ones: a goroutine caught in
	// flight (a telemetry send, a keep-alive connection that is about to
	// close) lifts one sample, a leak lifts the floor.
	warmGorFloor, endGorFloor int64
	warmFDFloor, endFDFloor   int
}

// floorSamples is how many samples a floor is taken over.
const floorSamples = 3

// figuresOf picks the samples. A reading that failed (-1) is skipped, so
// that a sample taken while a process restarted does not count.
func figuresOf(samples []sample, warmup time.Duration) figures {
	var f figures
	var valid []sample
	for _, s := range samples {
		if s.u.rss >= 0 && s.u.goroutines >= 0 && s.u.fds >= 0 {
			valid = append(valid, s)
		}
	}
	if len(valid) == 0 {
		return f
	}
	f.first, f.last = valid[0], valid[len(valid)-1]
	f.warm = f.last
	var xs, ys []float64
	found := false
	for _, s := range valid {
		if s.at >= warmup {
			if !found {
				f.warm, found = s, true
			}
			xs, ys = append(xs, s.at.Hours()), append(ys, mib(s.u.rss))
		}
	}
	f.trend = slope(xs, ys)
	f.ok, f.warmedUp = true, found
	var after []sample
	for _, s := range valid {
		if s.at >= warmup {
			after = append(after, s)
		}
	}
	if len(after) == 0 {
		after = valid[len(valid)-1:]
	}
	n := min(floorSamples, len(after))
	f.warmGorFloor, f.warmFDFloor = floors(after[:n])
	f.endGorFloor, f.endFDFloor = floors(after[len(after)-n:])
	return f
}

func floors(samples []sample) (gor int64, fds int) {
	gor, fds = math.MaxInt64, math.MaxInt
	for _, s := range samples {
		gor, fds = min(gor, s.u.goroutines), min(fds, s.u.fds)
	}
	return gor, fds
}

// slope is the least-squares slope of ys over xs; NaN for fewer than 3
// points.
func slope(xs, ys []float64) float64 {
	if len(xs) < 3 {
		return math.NaN()
	}
	mx, my := mean(xs), mean(ys)
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return math.NaN()
	}
	return num / den
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

// row is one line of the figures table: the control plane's value, and
// the agents' mean and max.
type row struct {
	name string
	cp   float64
	ag   []float64
	prec int
}

// summary prints the report and returns the exit code; res is nil after
// an interruption (then there is no final count).
func (s *soak) summary(res *result) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Println()
	fmt.Println("==== soak summary ====")
	fmt.Printf("%d agents, %s of load after warm-up %s (ran %s), %g predictions/s per agent, telemetry window %s; %s, %d CPUs (GOMAXPROCS), Go %s\n",
		len(s.agents), s.o.duration, s.o.warmup, fmtDur(s.elapsed()), s.o.rate, s.o.window, hostInfo(), runtime.NumCPU(), runtime.Version())
	fmt.Printf("CSV: %s\n", s.o.out)
	if res == nil {
		fmt.Println("INTERRUPTED: the figures run up to the interruption, and there is no final count")
	}
	fmt.Println()

	cp := figuresOf(s.cpSamples, s.o.warmup)
	var ags []figures
	for _, a := range s.agents {
		if f := figuresOf(a.samples, s.o.warmup); f.ok {
			f.id = a.id
			ags = append(ags, f)
		}
	}
	if !cp.ok && len(ags) == 0 {
		fmt.Println("no samples were taken")
		return 1
	}
	pick := func(get func(figures) float64) (float64, []float64) {
		var v []float64
		for _, f := range ags {
			v = append(v, get(f))
		}
		if !cp.ok {
			return math.NaN(), v
		}
		return get(cp), v
	}
	mk := func(name string, prec int, get func(figures) float64) row {
		if get == nil {
			return row{name: name, prec: prec}
		}
		c, a := pick(get)
		return row{name, c, a, prec}
	}
	rss := func(s sample) float64 { return mib(s.u.rss) }
	heap := func(s sample) float64 { return mib(s.u.heapInUse) }
	rows := []row{
		mk("RSS at start (MiB)", 1, func(f figures) float64 { return rss(f.first) }),
		mk("RSS after warm-up (MiB)", 1, func(f figures) float64 { return rss(f.warm) }),
		mk("RSS at end (MiB)", 1, func(f figures) float64 { return rss(f.last) }),
		mk("RSS growth after warm-up (MiB)", 2, func(f figures) float64 { return rss(f.last) - rss(f.warm) }),
		mk("RSS trend after warm-up (MiB/h)", 2, func(f figures) float64 { return f.trend }),
		mk("anonymous RSS after warm-up / at end (MiB)", -1, nil),
		mk("Go heap in use after warm-up (MiB)", 1, func(f figures) float64 { return heap(f.warm) }),
		mk("Go heap in use at end (MiB)", 1, func(f figures) float64 { return heap(f.last) }),
		mk("goroutines at start", 1, func(f figures) float64 { return float64(f.first.u.goroutines) }),
		mk("goroutines after warm-up", 1, func(f figures) float64 { return float64(f.warm.u.goroutines) }),
		mk("goroutines at end", 1, func(f figures) float64 { return float64(f.last.u.goroutines) }),
		mk(fmt.Sprintf("goroutines, lowest of %d samples: after warm-up", floorSamples), 1, func(f figures) float64 { return float64(f.warmGorFloor) }),
		mk(fmt.Sprintf("goroutines, lowest of %d samples: at end", floorSamples), 1, func(f figures) float64 { return float64(f.endGorFloor) }),
		mk("open fds at start", 1, func(f figures) float64 { return float64(f.first.u.fds) }),
		mk("open fds after warm-up", 1, func(f figures) float64 { return float64(f.warm.u.fds) }),
		mk("open fds at end", 1, func(f figures) float64 { return float64(f.last.u.fds) }),
		mk(fmt.Sprintf("open fds, lowest of %d samples: after warm-up", floorSamples), 1, func(f figures) float64 { return float64(f.warmFDFloor) }),
		mk(fmt.Sprintf("open fds, lowest of %d samples: at end", floorSamples), 1, func(f figures) float64 { return float64(f.endFDFloor) }),
		mk("OS threads after warm-up / at end", -2, nil),
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tcontrol plane\tagents: mean\tagents: max\t")
	for _, r := range rows {
		switch r.prec {
		case -1:
			c := fmt.Sprintf("%.1f / %.1f", mib(cp.warm.u.rssAnon), mib(cp.last.u.rssAnon))
			var w, l []float64
			for _, f := range ags {
				w, l = append(w, mib(f.warm.u.rssAnon)), append(l, mib(f.last.u.rssAnon))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f / %.1f\t%.1f / %.1f\t\n", r.name, c, mean(w), mean(l), maxOf(w), maxOf(l))
			continue
		case -2:
			c := fmt.Sprintf("%d / %d", cp.warm.u.threads, cp.last.u.threads)
			var w, l []float64
			for _, f := range ags {
				w, l = append(w, float64(f.warm.u.threads)), append(l, float64(f.last.u.threads))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f / %.1f\t%.0f / %.0f\t\n", r.name, c, mean(w), mean(l), maxOf(w), maxOf(l))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.name, fmtNum(r.cp, r.prec), fmtNum(mean(r.ag), r.prec), fmtNum(maxOf(r.ag), r.prec))
	}
	tw.Flush()

	// Agents whose goroutines or fds grew, by how much.
	var gorGrew, fdGrew []string
	var maxGrowth float64
	for _, f := range ags {
		id := f.id
		if d := f.endGorFloor - f.warmGorFloor; d > 0 {
			gorGrew = append(gorGrew, fmt.Sprintf("%s +%d", id, d))
		}
		if d := f.endFDFloor - f.warmFDFloor; d > 0 {
			fdGrew = append(fdGrew, fmt.Sprintf("%s +%d", id, d))
		}
		maxGrowth = math.Max(maxGrowth, rss(f.last)-rss(f.warm))
	}

	// The control plane is a new process after each restart: its figures
	// after warm-up and at the end are from different processes. Each
	// incarnation, then, on its own.
	fmt.Println()
	fmt.Println("control plane, per process (it restarts; compare like with like):")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pid\tfrom\tto\tsamples\tRSS first→last (MiB)\theap first→last (MiB)\tgoroutines first→last\tfds first→last\t")
	for _, inc := range incarnations(s.cpSamples) {
		f, l := inc[0], inc[len(inc)-1]
		fmt.Fprintf(tw, "%d\t+%s\t+%s\t%d\t%.1f → %.1f\t%.1f → %.1f\t%d → %d\t%d → %d\t\n", f.u.pid, fmtDur(f.at), fmtDur(l.at), len(inc),
			mib(f.u.rss), mib(l.u.rss), mib(f.u.heapInUse), mib(l.u.heapInUse), f.u.goroutines, l.u.goroutines, f.u.fds, l.u.fds)
	}
	tw.Flush()

	if len(s.restarts) > 0 {
		fmt.Println()
		fmt.Println("control-plane (broker) restarts:")
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "at\tSIGTERM→exit\tSIGTERM→answering\texit\tall agents reconnected after\t")
		for _, r := range s.restarts {
			exit := orOK(r.exitErr)
			if r.killed {
				exit += " (killed)"
			}
			rec := "not within " + convergeTimeout.String()
			if r.reconnected >= 0 {
				rec = r.reconnected.Round(100 * time.Millisecond).String()
			}
			fmt.Fprintf(tw, "+%s\t%s\t%s\t%s\t%s\t\n", fmtDur(r.at), r.stopTook.Round(10*time.Millisecond), r.down.Round(10*time.Millisecond), exit, rec)
		}
		tw.Flush()
	}
	var notConverged []string
	if len(s.updates) > 0 {
		fmt.Println()
		fmt.Println("model updates (push + deploy → every agent reports the version active):")
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "version\tdeployed at\tconverged after\t")
		for _, u := range s.updates {
			conv := u.converged.Round(100 * time.Millisecond).String()
			if u.converged < 0 {
				conv = "NOT: " + u.status
				notConverged = append(notConverged, fmt.Sprintf("v%d", u.version))
			}
			at := "+" + fmtDur(u.at)
			if u.version == 1 {
				at = "set-up"
			}
			fmt.Fprintf(tw, "v%d\t%s\t%s\t\n", u.version, at, conv)
		}
		tw.Flush()
	}

	fmt.Println()
	var ok, failed, modelFailed uint64
	var errs []string
	for _, a := range s.agents {
		ok += a.ok.Load()
		failed += a.failed.Load()
		modelFailed += a.modelFailed.Load()
		if a.failed.Load() > 0 {
			a.errMu.Lock()
			errs = append(errs, fmt.Sprintf("%s: %d failed, last: %s", a.id, a.failed.Load(), a.lastErr))
			a.errMu.Unlock()
		}
	}
	fmt.Printf("predictions: %d answered 200, %d failed (%d of them model failures, which the agents count)\n", ok, failed, modelFailed)
	for _, e := range errs {
		fmt.Println("  " + e)
	}
	for _, c := range s.crashes {
		fmt.Println("CRASH: " + c)
	}
	code := 0
	if res != nil {
		var agentSum int64
		for _, v := range res.agentTotals {
			if v < 0 {
				agentSum = -1
				break
			}
			agentSum += v
		}
		var got uint64
		for _, v := range res.got {
			got += v
		}
		fmt.Printf("counted by the agents themselves (shoal_agent_predictions_total, before the stop): %s\n", numOr(agentSum, "? (a scrape failed)"))
		fmt.Printf("counted by the control plane from telemetry, after the agents stopped: %d; made: %d → %s\n", got, res.total, map[bool]string{true: "EQUAL", false: "DIFFERENT"}[got == res.total && len(res.mismatched) == 0])
		for _, e := range res.stopErrs {
			fmt.Println("  agent stop: " + e)
		}
		if len(res.mismatched) > 0 {
			code = 1
			sort.Strings(res.mismatched)
			for _, id := range res.mismatched {
				fmt.Printf("  %s: made %d, control plane %d; after starting it again to drain its outbox: %d\n", id, res.expected[id], res.got[id], res.drained[id])
			}
		}
		if res.cpExit != "" {
			fmt.Println("  control plane stop: " + res.cpExit)
		}
	}

	fmt.Println()
	fmt.Println("verdict:")
	check := func(pass bool, what string) {
		fmt.Printf("  %s  %s\n", map[bool]string{true: "PASS", false: "FAIL"}[pass], what)
		if !pass && s.o.strict && code == 0 {
			code = 1
		}
	}
	if res != nil {
		check(len(res.mismatched) == 0, "predictions made = predictions in the control plane's telemetry")
	}
	warmedUp := cp.warmedUp
	for _, f := range ags {
		warmedUp = warmedUp && f.warmedUp
	}
	if !warmedUp {
		fmt.Println("  INFO  no sample after the warm-up: no verdict on growth")
	} else {
		check(maxGrowth <= maxRSSGrowthMiB, fmt.Sprintf("agent RSS growth after warm-up ≤ %.0f MiB (largest: %.2f MiB)", maxRSSGrowthMiB, maxGrowth))
		check(len(gorGrew) == 0, fmt.Sprintf("no agent's goroutines grew after warm-up (lowest of %d samples, after warm-up vs at end)", floorSamples)+list(gorGrew))
		check(len(fdGrew) == 0, fmt.Sprintf("no agent's open fds grew after warm-up (lowest of %d samples, after warm-up vs at end)", floorSamples)+list(fdGrew))
	}
	if cp.ok && warmedUp {
		cpGrowth := rss(cp.last) - rss(cp.warm)
		rssLine := fmt.Sprintf("control plane RSS growth after warm-up ≤ %.0f MiB (%.2f MiB)", maxRSSGrowthMiB, cpGrowth)
		countLine := fmt.Sprintf("control plane goroutines %d → %d, fds %d → %d after warm-up (lowest of %d samples)", cp.warmGorFloor, cp.endGorFloor, cp.warmFDFloor, cp.endFDFloor, floorSamples)
		if cp.warm.u.pid == cp.last.u.pid {
			check(cpGrowth <= maxRSSGrowthMiB, rssLine)
			check(cp.endGorFloor <= cp.warmGorFloor && cp.endFDFloor <= cp.warmFDFloor, countLine)
		} else {
			// Different processes: no verdict; the per-process table
			// above is the one to read.
			fmt.Printf("  INFO  %s, %s: different processes (it restarted in between); see the per-process table\n", rssLine, countLine)
		}
	}
	check(len(notConverged) == 0, "every model update converged on every agent"+list(notConverged))
	check(len(s.crashes) == 0, "no process exited on its own")
	return code
}

func list(items []string) string {
	if len(items) == 0 {
		return ""
	}
	return ": " + strings.Join(items, ", ")
}

// incarnations splits the control plane's samples by process.
func incarnations(samples []sample) [][]sample {
	var out [][]sample
	for _, s := range samples {
		if s.u.rss < 0 || s.u.goroutines < 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1][0].u.pid == s.u.pid {
			out[n-1] = append(out[n-1], s)
			continue
		}
		out = append(out, []sample{s})
	}
	return out
}

func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// hostInfo names the machine: CPU model and memory, from /proc.
func hostInfo() string {
	cpu, mem := "unknown CPU", ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return cpu + mem
}
