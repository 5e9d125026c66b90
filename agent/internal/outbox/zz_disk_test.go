package outbox

import (
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func allocated(dir string) int64 {
	var n int64
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
	}
	return n
}

func TestZZDisk(t *testing.T) {
	if os.Getenv("EXP_DISK") == "" {
		t.Skip()
	}
	dir := t.TempDir()
	o, err := Open(dir, Options{MinFreeBytes: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var peak, cur atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			a := allocated(dir)
			cur.Store(a)
			if a > peak.Load() {
				peak.Store(a)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	rec := record(1)
	rec.ModelName, rec.ModelVersion = "sensor-classifier", "12"
	rec.Predictions, rec.Errors, rec.LatencySumUs, rec.LatencyP50Us, rec.LatencyP95Us, rec.LatencyP99Us, rec.LatencyMaxUs = 1234, 3, 98765, 70, 140, 300, 900
	phase := func(name string) {
		time.Sleep(3 * time.Second)
		t.Logf("%-28s queued %5.1f MiB, disk now %5.1f MiB, peak %5.1f MiB", name, float64(o.Bytes())/(1<<20), float64(allocated(dir))/(1<<20), float64(peak.Load())/(1<<20))
	}
	for i := 0; i < 400000; i++ {
		rec.Seq = 0
		o.Append(rec)
	}
	phase("400k appends (full, drops)")
	// steady: append 1, ack oldest 1 (queue full), 200k times
	for i := 0; i < 100000; i++ {
		rec.Seq = 0
		o.Append(rec)
		if i%100 == 99 {
			first := o.LastSeq() - uint64(o.Len()) + 1
			o.Ack(first, first+99)
		}
	}
	phase("100k append + ack")
	first := o.LastSeq() - uint64(o.Len()) + 1
	for o.Len() > 0 {
		o.Ack(first, first+99)
		first += 100
	}
	phase("drained")
	for i := 0; i < 400000; i++ {
		rec.Seq = 0
		o.Append(rec)
	}
	phase("refilled 400k")
	close(stop)
	runtime.GC()
	o.Close()
}
