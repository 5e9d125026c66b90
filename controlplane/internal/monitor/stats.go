package monitor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Data statistics (DESIGN §7). A telemetry record that closes an agent's
// statistics window carries the inputs' and outputs' FeatureStats of its
// model version. When such a record is stored for the first time, its
// statistics are merged, in the same transaction, into aggregates of its
// model version and drift window, one per cohort of its device: CohortAll,
// its firmware profile's ("profile:{profile}") and, for each of
// StatsConfig.CohortLabels the device has a non-empty value of, that
// label's ("label:{key}={value}"). The drift window of a
// record is the one holding the last millisecond of its statistics,
// [k·W, (k+1)·W) with k = ⌊(window_end_unix_ms − 1) / W⌋.
//
// The first statistics merged into an aggregate fix its shape: the names
// and numbers of bins of its features. Statistics of another shape are
// skipped for that aggregate and counted (IngestStats.StatsMismatched):
// devices running one model version bin with the same reference profile,
// so a mismatch is a faulty or hostile device. Records are stored and
// acknowledged whatever becomes of their statistics.

const (
	// CohortAll is the cohort of every device.
	CohortAll = "all"
	// CohortProfilePrefix starts the cohort of the devices of one firmware
	// profile: "profile:rpi4". ':' is in no name, so no cohort collides.
	CohortProfilePrefix = "profile:"
	// CohortLabelPrefix starts the cohort of the devices with one value
	// of a label: "label:region=eu".
	CohortLabelPrefix = "label:"
	// MaxCohortLabels bounds StatsConfig.CohortLabels.
	MaxCohortLabels = 4
	// DefaultStatsWindow is the drift window when StatsConfig sets none.
	DefaultStatsWindow = time.Hour
)

// Bounds on the statistics of one record, which keep an aggregate under
// about 120 KB (a name of up to 256 bytes and 6 fixed fields per feature,
// up to 10 bytes per bin count), and on what one batch writes, so that with
// the bounds of MaxBatchBytes a batch still fits in one transaction. A
// record over them is stored without its statistics aggregated
// (IngestStats.StatsInvalid).
const (
	// MaxStatsFeatures bounds a record's input and output features
	// together.
	MaxStatsFeatures = 256
	// MaxStatsBins bounds the bins of a record's features together; a
	// feature has at most datastats.MaxBins.
	MaxStatsBins = 4096
	// MaxBatchStatsBytes bounds the aggregates one batch writes, keys and
	// encoded values, whatever the number of cohorts: a record's
	// statistics go to up to 2+MaxCohortLabels aggregates, and counting
	// the keys bounds the number of aggregates as well as their bytes.
	// Statistics that would take a batch over it are left out for good
	// (IngestStats.StatsOverLimit): sent again, the record is a duplicate.
	MaxBatchStatsBytes = 256 << 10
)

// StatsConfig configures the aggregation of data statistics.
type StatsConfig struct {
	// Window is the drift window; DefaultStatsWindow if 0. It must divide
	// a day evenly, so that windows start at the same times each day.
	Window time.Duration
	// Device returns a device's firmware profile ("" if it has none) and
	// labels. With nil, or on error, a device's statistics go to
	// CohortAll only.
	Device func(ctx context.Context, deviceID string) (profile string, labels map[string]string, err error)
	// CohortLabels are the label keys ("region", "site") whose values
	// make cohorts: at most MaxCohortLabels, each a name of letters,
	// digits, '.', '_' and '-' (CheckCohortLabels).
	CohortLabels []string
}

// CheckCohortLabels returns an error unless keys are valid
// StatsConfig.CohortLabels: at most MaxCohortLabels distinct label keys
// of 1 to 63 letters, digits, '.', '_' and '-' ('/', allowed in label
// keys, is not in a cohort).
func CheckCohortLabels(keys []string) error {
	if len(keys) > MaxCohortLabels {
		return fmt.Errorf("%d cohort labels given; at most %d are allowed", len(keys), MaxCohortLabels)
	}
	for i, k := range keys {
		if err := checkName("cohort label", k); err != nil {
			return err
		}
		if len(k) > maxLabelKeyLen {
			return fmt.Errorf("cohort label %.20q... is %d characters; a label key has at most %d", k, len(k), maxLabelKeyLen)
		}
		if slices.Contains(keys[:i], k) {
			return fmt.Errorf("cohort label %q is given twice", k)
		}
	}
	return nil
}

// maxLabelKeyLen is the fleet's bound on a label key (and value).
const maxLabelKeyLen = 63

// CheckCohort returns an error unless c is a cohort the monitor may keep:
// CohortAll, "profile:{profile}" or "label:{key}={value}".
func CheckCohort(c string) error {
	if c == CohortAll {
		return nil
	}
	if p, ok := strings.CutPrefix(c, CohortProfilePrefix); ok && checkName("profile", p) == nil {
		return nil
	}
	if kv, ok := strings.CutPrefix(c, CohortLabelPrefix); ok {
		k, v, ok := strings.Cut(kv, "=")
		if ok && checkName("label", k) == nil && checkName("label value", v) == nil {
			return nil
		}
	}
	return fmt.Errorf("cohort %.40q is neither %q, nor %q followed by a firmware profile, nor %q followed by key=value", c, CohortAll, CohortProfilePrefix, CohortLabelPrefix)
}

// profileTTL is how long a device's profile and labels are cached: its
// statistics may land in its old cohorts for this long after they change.
const profileTTL = 5 * time.Minute

// maxCachedProfiles bounds the device cache; it is emptied when full.
const maxCachedProfiles = 100_000

// cachedProfile is a device's cohorts as of at.
type cachedProfile struct {
	cohorts []string
	at      time.Time
}

// statsState is the Monitor's statistics configuration and device cache.
type statsState struct {
	mu     sync.Mutex
	window time.Duration
	device func(ctx context.Context, deviceID string) (string, map[string]string, error)
	labels []string
	cache  map[string]cachedProfile
}

// ConfigureStats sets how data statistics are aggregated. Call it before
// the Monitor receives telemetry. It returns an error if cfg.Window is
// not a positive divisor of 24h of whole milliseconds, or
// cfg.CohortLabels are not valid (CheckCohortLabels).
func (m *Monitor) ConfigureStats(cfg StatsConfig) error {
	w := cfg.Window
	if w == 0 {
		w = DefaultStatsWindow
	}
	if w < time.Millisecond || w%time.Millisecond != 0 || (24*time.Hour)%w != 0 {
		return fmt.Errorf("drift window %v: want a whole number of milliseconds that divides 24h (1h, 30m, 15m, ...)", cfg.Window)
	}
	if err := CheckCohortLabels(cfg.CohortLabels); err != nil {
		return err
	}
	s := &m.statsCfg
	s.mu.Lock()
	defer s.mu.Unlock()
	s.window, s.device, s.labels, s.cache = w, cfg.Device, slices.Clone(cfg.CohortLabels), map[string]cachedProfile{}
	return nil
}

// StatsWindowDuration returns the drift window.
func (m *Monitor) StatsWindowDuration() time.Duration {
	m.statsCfg.mu.Lock()
	defer m.statsCfg.mu.Unlock()
	return m.statsCfg.window
}

// cohorts returns the cohorts of device id's statistics: CohortAll, its
// profile's if it has one, and those of its values of the cohort labels.
func (m *Monitor) cohorts(id string) []string {
	s := &m.statsCfg
	s.mu.Lock()
	get, keys := s.device, s.labels
	c, ok := s.cache[id]
	s.mu.Unlock()
	now := m.now()
	if get == nil {
		return []string{CohortAll}
	}
	if !ok || now.Sub(c.at) >= profileTTL || now.Before(c.at) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, labels, err := get(ctx, id)
		cancel()
		if err != nil {
			m.logLimited("profile", id, "cannot tell the device's profile and labels; its data statistics go to the \"all\" cohort only", "device", id, "err", err)
			return []string{CohortAll}
		}
		cohorts := []string{CohortAll}
		if p != "" && checkName("profile", p) == nil {
			cohorts = append(cohorts, CohortProfilePrefix+p)
		}
		for _, k := range keys {
			// A label without a value, or with one no cohort can hold
			// (the fleet allows none), makes no cohort.
			if v := labels[k]; v != "" && checkName("label value", v) == nil {
				cohorts = append(cohorts, CohortLabelPrefix+k+"="+v)
			}
		}
		c = cachedProfile{cohorts: cohorts, at: now}
		s.mu.Lock()
		if len(s.cache) >= maxCachedProfiles {
			clear(s.cache)
		}
		s.cache[id] = c
		s.mu.Unlock()
	}
	return c.cohorts
}

// hasStats reports whether r carries data statistics.
func hasStats(r *shoalv1.TelemetryRecord) bool {
	return len(r.GetInputStats())+len(r.GetOutputStats()) > 0
}

// checkRecordStats returns an error, naming the field at fault, unless
// r's statistics are within the bounds above and each is consistent in
// itself (datastats.ValidateStats against its own number of bins).
func checkRecordStats(r *shoalv1.TelemetryRecord) error {
	if r.GetWindowEndUnixMs() <= 0 {
		return fmt.Errorf("window_end_unix_ms is %d; statistics need a window end after 1970", r.GetWindowEndUnixMs())
	}
	if n := len(r.GetInputStats()) + len(r.GetOutputStats()); n > MaxStatsFeatures {
		return fmt.Errorf("%d features of statistics; the limit is %d", n, MaxStatsFeatures)
	}
	bins := 0
	for _, side := range []struct {
		role  string
		stats []*shoalv1.FeatureStats
	}{{"input_stats", r.GetInputStats()}, {"output_stats", r.GetOutputStats()}} {
		seen := make(map[string]bool, len(side.stats))
		for i, s := range side.stats {
			n := len(s.GetBinCounts())
			if n == 0 || n > datastats.MaxBins {
				return fmt.Errorf("%s[%d]: %d bins; want 1 to %d", side.role, i, n, datastats.MaxBins)
			}
			if bins += n; bins > MaxStatsBins {
				return fmt.Errorf("%s[%d] brings the bins to more than %d, the limit", side.role, i, MaxStatsBins)
			}
			if l := len(s.GetName()); l == 0 || l > datastats.MaxNameLen {
				return fmt.Errorf("%s[%d]: name is %d bytes; want 1 to %d", side.role, i, l, datastats.MaxNameLen)
			}
			if seen[s.GetName()] {
				return fmt.Errorf("%s[%d]: feature %q appears twice", side.role, i, s.GetName())
			}
			seen[s.GetName()] = true
			// A categorical profile with one class per bin checks the
			// statistics against their own shape.
			self := &shoalv1.FeatureProfile{Name: s.GetName(), Categorical: true, Classes: uint32(n)}
			if err := datastats.ValidateStats(self, s); err != nil {
				return fmt.Errorf("%s[%d]: %w", side.role, i, err)
			}
		}
	}
	return nil
}

// statsBatch gathers one batch's statistics by aggregate, so that each
// aggregate is read and written once. It lives for one transaction
// attempt.
type statsBatch struct {
	window        int64 // ms
	cohorts       []string
	keys          [][]byte // in the order first seen
	aggs          map[string]*shoalv1.StatsReport
	sizes         map[string]int
	total         int // of sizes
	merged        uint64
	mismatched    uint64
	overLimit     uint64
	mismatchError error // the first, for the log
}

func newStatsBatch(window time.Duration, cohorts []string) *statsBatch {
	return &statsBatch{
		window:  window.Milliseconds(),
		cohorts: cohorts,
		aggs:    map[string]*shoalv1.StatsReport{},
		sizes:   map[string]int{},
	}
}

// add merges a new record's statistics (already checked) into its
// aggregates.
func (sb *statsBatch) add(tx store.Tx, r *shoalv1.TelemetryRecord) error {
	bucket := (r.GetWindowEndUnixMs() - 1) / sb.window
	var mismatched, over, merged bool
	for _, cohort := range sb.cohorts {
		key := statsKey(r.GetModelName(), r.GetModelVersion(), cohort, uint64(bucket))
		agg, err := sb.load(tx, key)
		if err != nil {
			return err
		}
		next, err := mergeRecord(agg, r)
		if err != nil {
			mismatched = true
			if sb.mismatchError == nil {
				sb.mismatchError = err
			}
			continue
		}
		// The key is counted too, and the window's bounds write sets.
		size := len(key) + proto.Size(next) + windowBoundsSize
		if sb.total-sb.sizes[string(key)]+size > MaxBatchStatsBytes {
			over = true
			continue
		}
		sb.total += size - sb.sizes[string(key)]
		sb.sizes[string(key)] = size
		if _, seen := sb.aggs[string(key)]; !seen {
			sb.keys = append(sb.keys, key)
		}
		sb.aggs[string(key)] = next
		merged = true
	}
	switch {
	case mismatched:
		sb.mismatched++
	case over:
		sb.overLimit++
	}
	if merged && !mismatched && !over {
		sb.merged++
	}
	return nil
}

// windowBoundsSize bounds the encoded window start and end that write
// adds to an aggregate.
const windowBoundsSize = 2 * (1 + 10)

// load returns the aggregate at key: the batch's, the stored one, or nil.
func (sb *statsBatch) load(tx store.Tx, key []byte) (*shoalv1.StatsReport, error) {
	if agg, ok := sb.aggs[string(key)]; ok {
		return agg, nil
	}
	v, err := tx.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read statistics %s: %w", key, err)
	}
	agg := new(shoalv1.StatsReport)
	if err := proto.Unmarshal(v, agg); err != nil {
		return nil, fmt.Errorf("decode statistics %s: %w", key, err)
	}
	sb.sizes[string(key)] = 0 // counted when written
	return agg, nil
}

// mergeRecord returns agg with r's statistics merged in, or a new
// aggregate of r's if agg is nil; agg is not changed. It returns an error
// if r's statistics are not of agg's shape or a count would overflow.
func mergeRecord(agg *shoalv1.StatsReport, r *shoalv1.TelemetryRecord) (*shoalv1.StatsReport, error) {
	if agg == nil {
		return &shoalv1.StatsReport{
			SchemaVersion: SchemaVersion,
			ModelName:     r.GetModelName(),
			ModelVersion:  r.GetModelVersion(),
			Seq:           1,
			Inputs:        cloneStats(r.GetInputStats()),
			Outputs:       cloneStats(r.GetOutputStats()),
		}, nil
	}
	next := proto.CloneOf(agg)
	if err := datastats.MergeAllInto(next.Inputs, r.GetInputStats()); err != nil {
		return nil, fmt.Errorf("input_stats: %w", err)
	}
	if err := datastats.MergeAllInto(next.Outputs, r.GetOutputStats()); err != nil {
		return nil, fmt.Errorf("output_stats: %w", err)
	}
	next.Seq = addCapped(next.Seq, 1)
	return next, nil
}

func cloneStats(s []*shoalv1.FeatureStats) []*shoalv1.FeatureStats {
	out := make([]*shoalv1.FeatureStats, len(s))
	for i := range s {
		out[i] = proto.CloneOf(s[i])
	}
	return out
}

// write stores the updated aggregates, with their windows' bounds.
func (sb *statsBatch) write(tx store.Tx) error {
	for _, k := range sb.keys {
		agg := sb.aggs[string(k)]
		_, _, _, bucket, _ := parseStatsKey(k)
		agg.WindowStartUnixMs = int64(bucket) * sb.window
		agg.WindowEndUnixMs = agg.WindowStartUnixMs + sb.window
		v, err := proto.Marshal(agg)
		if err != nil {
			return fmt.Errorf("encode statistics %s: %w", k, err)
		}
		if err := tx.Set(k, v); err != nil {
			return fmt.Errorf("write statistics %s: %w", k, err)
		}
	}
	return nil
}

// StatsWindow is the data statistics of one model version, cohort and
// drift window: the statistics of every record of the window merged.
type StatsWindow struct {
	Model   string
	Version string
	Cohort  string
	Start   time.Time // inclusive
	End     time.Time // exclusive
	// Records is how many telemetry records were merged.
	Records uint64
	// Samples is how many rows were observed: the largest count + missing
	// + nan of any feature (every feature of a side sees every row).
	Samples uint64
	Inputs  []*shoalv1.FeatureStats
	Outputs []*shoalv1.FeatureStats
}

// StatsWindows returns the statistics windows of model (of version, or of
// every version if version is ""), of every cohort, that end after since,
// ordered by version, cohort and start.
// Errors: Invalid (model or version is not a valid name), Internal.
func (m *Monitor) StatsWindows(ctx context.Context, model, version string, since time.Time) ([]StatsWindow, error) {
	const op = "monitor.StatsWindows"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkName("model name", model); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "data statistics of a model")
	}
	prefix := statsPrefix + model + "/"
	if version != "" {
		if err := checkName("version", version); err != nil {
			return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "data statistics of model %q", model)
		}
		prefix += version + "/"
	}
	out := []StatsWindow{}
	err := m.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(prefix), func(k, v []byte) error {
			_, ver, cohort, _, ok := parseStatsKey(k)
			if !ok {
				return fmt.Errorf("malformed statistics key %q", k)
			}
			var agg shoalv1.StatsReport
			if err := proto.Unmarshal(v, &agg); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			end := time.UnixMilli(agg.GetWindowEndUnixMs()).UTC()
			if !end.After(since) {
				return nil
			}
			out = append(out, StatsWindow{
				Model:   model,
				Version: ver,
				Cohort:  cohort,
				Start:   time.UnixMilli(agg.GetWindowStartUnixMs()).UTC(),
				End:     end,
				Records: agg.GetSeq(),
				Samples: samplesOf(&agg),
				Inputs:  agg.GetInputs(),
				Outputs: agg.GetOutputs(),
			})
			return nil
		})
	})
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read data statistics of model %q", model)
	}
	return out, nil
}

// samplesOf returns the rows an aggregate saw.
func samplesOf(agg *shoalv1.StatsReport) uint64 {
	var n uint64
	for _, s := range slices.Concat(agg.GetInputs(), agg.GetOutputs()) {
		n = max(n, addCapped(addCapped(s.GetCount(), s.GetMissing()), s.GetNan()))
	}
	return n
}

// statsKey is monitor/stats/{model}/{version}/{cohort}/{window index, 16
// hex digits}: a cohort's windows are in time order.
func statsKey(model, version, cohort string, bucket uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%s/%s/%016x", statsPrefix, model, version, cohort, bucket)
}

func parseStatsKey(k []byte) (model, version, cohort string, bucket uint64, ok bool) {
	parts := strings.Split(strings.TrimPrefix(string(k), statsPrefix), "/")
	if len(parts) != 4 {
		return "", "", "", 0, false
	}
	b, err := strconv.ParseUint(parts[3], 16, 64)
	if err != nil {
		return "", "", "", 0, false
	}
	return parts[0], parts[1], parts[2], b, true
}
