package datastats

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// benchProfile returns a profile of features numeric inputs with 20 bins
// each, made from 2,000 random rows, and a 10-class label.
func benchProfile(b *testing.B, features int) *shoalv1.ReferenceProfile {
	b.Helper()
	r := newRand(7)
	in := Table{Name: "x"}
	for j := range features {
		in.Columns = append(in.Columns, Column{Name: fmt.Sprintf("f%d", j)})
	}
	out := Table{Name: "label", Columns: []Column{{Name: "label", Classes: 10}}}
	for range 2000 {
		row := make([]float64, features)
		for j := range row {
			row[j] = r.NormFloat64() * float64(j+1)
		}
		in.Rows = append(in.Rows, row)
		out.Rows = append(out.Rows, []float64{float64(r.IntN(10))})
	}
	p, err := NewProfile(in, out, ProfileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// benchRows returns n random rows of features FP32 values, flat, as an
// agent gets them from a request.
func benchRows(features, n int) []float32 {
	r := newRand(8)
	v := make([]float32, features*n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * float64(i%features+1))
	}
	return v
}

// BenchmarkObserve measures binning and the running statistics of live
// inputs (FP32, 20 bins a feature), one Observe call per op of rows rows;
// ns/value is the cost of one feature value, lock included.
func BenchmarkObserve(b *testing.B) {
	for _, c := range []struct{ features, rows int }{{4, 1}, {4, 64}, {784, 1}, {784, 64}} {
		b.Run(fmt.Sprintf("features=%d/rows=%d", c.features, c.rows), func(b *testing.B) {
			a := newAcc(b, benchProfile(b, c.features))
			// At least 64 Ki different values, so that the branch predictor
			// cannot learn them.
			pool := max(2, (64<<10)/(c.features*c.rows))
			data := benchRows(c.features, pool*c.rows)
			calls := make([]any, pool)
			for i := range calls {
				calls[i] = data[i*c.features*c.rows : (i+1)*c.features*c.rows]
			}
			n := 0
			for b.Loop() {
				if err := a.Observe(calls[n%pool], nil); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*c.rows*c.features), "ns/value")
		})
	}
}

// BenchmarkObserveParallel measures the lock: one 4-feature row and its
// label per Observe from GOMAXPROCS goroutines, into one Accumulator
// (shared) or one each (unshared, no contention).
func BenchmarkObserveParallel(b *testing.B) {
	p := benchProfile(b, 4)
	data := benchRows(4, 256)
	labels := make([]int64, 256)
	for i := range labels {
		labels[i] = int64(i % 10)
	}
	for _, shared := range []bool{true, false} {
		name := "unshared"
		if shared {
			name = "shared"
		}
		b.Run(name, func(b *testing.B) {
			one := newAcc(b, p)
			b.RunParallel(func(pb *testing.PB) {
				a := one
				if !shared {
					a = newAcc(b, p)
				}
				for i := 0; pb.Next(); i++ {
					k := i % 256
					if err := a.Observe(data[4*k:4*k+4], labels[k:k+1]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkStatsReport encodes the StatsReport of a window of rows
// inferences of a 20-feature model (20 bins a feature) with a 10-class
// label, and reports its size per feature.
func BenchmarkStatsReport(b *testing.B) {
	p := benchProfile(b, 20)
	for _, rows := range []int{100, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			a := newAcc(b, p)
			const chunk = 1000
			data := benchRows(20, chunk)
			for done := 0; done < rows; done += chunk {
				if err := a.Observe(data[:20*min(chunk, rows-done)], nil); err != nil {
					b.Fatal(err)
				}
			}
			in, out := a.Snapshot()
			rep := &shoalv1.StatsReport{
				SchemaVersion: SchemaVersion, DeviceId: "edge-000123", Seq: 4567,
				ModelName: "sensor-classifier", ModelVersion: "12",
				WindowStartUnixMs: 1_780_000_000_000, WindowEndUnixMs: 1_780_000_060_000,
				Inputs: in, Outputs: out,
			}
			var size int
			for b.Loop() {
				buf, err := proto.Marshal(rep)
				if err != nil {
					b.Fatal(err)
				}
				size = len(buf)
			}
			b.ReportMetric(float64(size), "bytes")
			b.ReportMetric(float64(proto.Size(&shoalv1.StatsReport{Inputs: in}))/20, "bytes/feature")
		})
	}
}

// BenchmarkMergeReports merges the input statistics of 1,000 devices'
// reports, 20 features of 20 bins each, as the control plane aggregates a
// window of a fleet.
func BenchmarkMergeReports(b *testing.B) {
	const devices, features = 1000, 20
	p := benchProfile(b, features)
	a := newAcc(b, p)
	data := benchRows(features, 5000)
	reports := make([][]*shoalv1.FeatureStats, devices)
	for d := range reports {
		off := (d % 50) * 100 * features
		if err := a.Observe(data[off:off+100*features], nil); err != nil {
			b.Fatal(err)
		}
		reports[d], _ = a.SnapshotAndReset()
	}
	n := 0
	for b.Loop() {
		total := make([]*shoalv1.FeatureStats, features)
		for i, s := range reports[0] {
			total[i] = proto.CloneOf(s)
		}
		for _, r := range reports[1:] {
			if err := MergeAllInto(total, r); err != nil {
				b.Fatal(err)
			}
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*devices), "ns/report")
}

// BenchmarkCompare computes PSI, JS and KS of a 20-bin feature.
func BenchmarkCompare(b *testing.B) {
	p := benchProfile(b, 1)
	a := newAcc(b, p)
	if err := a.Observe(benchRows(1, 500), nil); err != nil {
		b.Fatal(err)
	}
	in, _ := a.Snapshot()
	for b.Loop() {
		if _, err := Compare(p.Inputs[0].Reference, in[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewProfile profiles 100,000 training rows of 20 features.
func BenchmarkNewProfile(b *testing.B) {
	const rows, features = 100_000, 20
	flat := benchRows(features, rows)
	in := Table{Name: "x"}
	for j := range features {
		in.Columns = append(in.Columns, Column{Name: fmt.Sprintf("f%d", j)})
	}
	for i := range rows {
		row := make([]float64, features)
		for j := range row {
			row[j] = float64(flat[i*features+j])
		}
		in.Rows = append(in.Rows, row)
	}
	for b.Loop() {
		if _, err := NewProfile(in, Table{}, ProfileOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeProfile decodes and validates the profile of a
// 784-feature model (20 bins a feature), as an agent does per deployment.
func BenchmarkDecodeProfile(b *testing.B) {
	enc, err := EncodeProfile(benchProfile(b, 784))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DecodeProfile(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(enc)), "bytes")
}
