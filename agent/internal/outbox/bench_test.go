package outbox

import (
	"bufio"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkAppend measures telemetry enqueue throughput into the Badger
// outbox (one realistic window record per Append) in each durability mode
// — no sync, a sync every second (the default), a sync on every write —
// and without the free-space check, and reports the process RSS at the
// end.
func BenchmarkAppend(b *testing.B) {
	for _, m := range []struct {
		name string
		opts Options
	}{
		{"nosync", Options{SyncInterval: -1}},
		{"nosync-nospacecheck", Options{SyncInterval: -1, MinFreeBytes: -1}},
		{"sync-every-1s", Options{SyncInterval: time.Second}},
		{"sync-every-write", Options{SyncWrites: true}},
	} {
		b.Run(m.name, func(b *testing.B) {
			o, err := Open(b.TempDir(), m.opts, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			rec := record(1)
			rec.ModelName, rec.ModelVersion = "sensor-classifier", "12"
			rec.WindowStartUnixMs, rec.WindowEndUnixMs = time.Now().UnixMilli(), time.Now().UnixMilli()+10000
			rec.Predictions, rec.Errors, rec.LatencySumUs, rec.LatencyP50Us, rec.LatencyP95Us, rec.LatencyP99Us, rec.LatencyMaxUs = 1234, 3, 98765, 70, 140, 300, 900
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				rec.Seq = 0
				if _, err := o.Append(rec); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(rssMB(), "rss-MB")
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-inuse-MB")
			b.ReportMetric(float64(o.Bytes())/(1<<20), "queued-MB")
		})
	}
}

// rssMB reads this process's VmRSS.
func rssMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
