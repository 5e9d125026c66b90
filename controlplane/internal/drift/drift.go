// Package drift measures how far the data a model version sees in the
// field is from the data it was trained on (DESIGN §7), and raises alerts
// when it stays far.
//
// The monitor aggregates the data statistics devices send by model
// version, cohort ("all", "profile:{name}" or "label:{key}={value}") and
// drift window (monitor.StatsWindow). For each such window, drift compares every input
// and output feature with the version's reference profile (PSI,
// Jensen–Shannon and KS, datastats.Compare), and sums the window up by the
// overall rule:
//
//	a window's overall PSI (JS, KS) is the largest PSI (JS, KS) of its
//	features, inputs and outputs alike, among those with values in both the
//	reference and the window.
//
// The largest, not the mean: one drifting feature is enough to make a
// model wrong, and a mean would dilute it among the stable ones, the more
// so the more features a model has.
//
// A Policy per model says which metric to watch, the threshold, the
// samples a window needs to count (rows observed) and K, the windows in a
// row that must breach. The evaluator (Evaluate, every minute in Run) looks
// at each window once, after it has closed and settled (Options.Settle),
// and per (version, cohort) keeps a streak: a window breaches when it has
// at least MinSamples samples and its overall metric is at or above the
// threshold; a window that does not breach, or a missing window, ends the
// streak. When a streak reaches K windows an Alert is stored and passed to
// Options.OnAlert; the streak raises no other alert however long it lasts.
//
// Keys, in a store.Store under the "drift/" prefix:
//
//	drift/policy/{model}                       Policy (JSON)
//	drift/streak/{model}/{version}/{cohort}    streak (JSON)
//	drift/alert/{model}/{version}/{cohort}/{t} Alert (JSON); t is the streak's
//	                                           first window start, unix ms in
//	                                           16 hex digits
package drift

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/lograte"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Profiles gives the reference profile of a model version.
// registry.Registry satisfies it (checked where the control plane wires
// it, so that this package does not link the registry).
type Profiles interface {
	// ReferenceProfile returns the version's profile, and false if it has
	// none. Errors: Invalid, NotFound (no such version).
	ReferenceProfile(ctx context.Context, name, version string) (*shoalv1.ReferenceProfile, bool, error)
}

// Windows gives the aggregated data statistics. monitor.Monitor satisfies
// it.
type Windows interface {
	// StatsWindows returns the windows of model (of version, or all if
	// ""), of every cohort, that end after since, ordered by version,
	// cohort and start. Errors: Invalid, Internal.
	StatsWindows(ctx context.Context, model, version string, since time.Time) ([]monitor.StatsWindow, error)
}

var _ Windows = (*monitor.Monitor)(nil)

// Options configure a Service.
type Options struct {
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Window is the monitor's drift window (monitor.StatsConfig.Window);
	// monitor.DefaultStatsWindow if 0. It bounds how far back Evaluate
	// looks.
	Window time.Duration
	// Settle is how long after a window ends Evaluate waits before judging
	// it, for the records still on their way; DefaultSettle if 0.
	Settle time.Duration
	// OnAlert, if set, is called with each new alert once it is stored,
	// on the goroutine running Evaluate; it must not block for long.
	OnAlert func(Alert)
	Log     *slog.Logger
}

// DefaultSettle is Options.Settle's default.
const DefaultSettle = 5 * time.Minute

// Service computes drift and evaluates policies. Its methods are safe for
// concurrent use.
type Service struct {
	st       store.Store
	windows  Windows
	profiles Profiles
	opts     Options
	lim      *lograte.Limiter

	evalMu sync.Mutex // one Evaluate at a time

	mu    sync.Mutex
	cache map[string]cachedProfile // by model/version
}

type cachedProfile struct {
	p  *shoalv1.ReferenceProfile
	at time.Time
}

// profileTTL is how long a reference profile is cached.
const profileTTL = 10 * time.Minute

// maxCachedProfiles bounds the profile cache; it is emptied when full.
const maxCachedProfiles = 1024

// New returns a Service over st, reading statistics from windows and
// reference profiles from profiles.
func New(st store.Store, windows Windows, profiles Profiles, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Window <= 0 {
		opts.Window = monitor.DefaultStatsWindow
	}
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		st: st, windows: windows, profiles: profiles, opts: opts,
		lim:   lograte.New(time.Hour, 1024, opts.Now),
		cache: map[string]cachedProfile{},
	}
}

// The drift of one model version and cohort in one window, and of each
// of its features, as the API shows it (docs/API.md).
type (
	WindowDrift  = apiv1.DriftWindow
	FeatureDrift = apiv1.FeatureDrift
)

// overall returns the window's overall metric.
func overall(w WindowDrift, metric string) float64 {
	switch metric {
	case MetricJS:
		return w.JS
	case MetricKS:
		return w.KS
	}
	return w.PSI
}

// Query selects the windows Report returns.
type Query struct {
	Version string // "" for every version
	Cohort  string // monitor.CohortAll if ""
	// Last: the windows that ended in the last Last; 24h if 0.
	Last time.Duration
}

// Report returns the drift of model's windows selected by q, ordered by
// version and start. Errors: Invalid (bad model, version or cohort),
// Internal.
func (s *Service) Report(ctx context.Context, model string, q Query) ([]WindowDrift, error) {
	const op = "drift.Report"
	if err := checkName("model name", model); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift of a model")
	}
	if q.Version != "" {
		if err := checkName("version", q.Version); err != nil {
			return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift of model %q", model)
		}
	}
	if q.Cohort == "" {
		q.Cohort = monitor.CohortAll
	}
	if err := checkCohort(q.Cohort); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift of model %q", model)
	}
	if q.Last <= 0 {
		q.Last = 24 * time.Hour
	}
	ws, err := s.windows.StatsWindows(ctx, model, q.Version, s.opts.Now().Add(-q.Last))
	if err != nil {
		return nil, err
	}
	pol, hasPolicy, err := store.ViewJSON[Policy](ctx, s.st, policyKey(model))
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read the drift policy of model %q", model)
	}
	out := []WindowDrift{}
	for _, w := range ws {
		if w.Cohort != q.Cohort {
			continue
		}
		d := s.windowDrift(ctx, w)
		if hasPolicy {
			d.Breach = breaches(pol, d)
		}
		out = append(out, d)
	}
	return out, nil
}

// windowDrift compares w with its version's reference profile.
func (s *Service) windowDrift(ctx context.Context, w monitor.StatsWindow) WindowDrift {
	d := WindowDrift{Version: w.Version, Cohort: w.Cohort, Start: w.Start, End: w.End, Records: w.Records, Samples: w.Samples, Features: []FeatureDrift{}}
	p, err := s.profile(ctx, w.Model, w.Version)
	if err != nil {
		d.Error = err.Error()
		return d
	}
	return compareWindow(p, w, d)
}

// compareWindow fills d with the drift of w from p.
func compareWindow(p *shoalv1.ReferenceProfile, w monitor.StatsWindow, d WindowDrift) WindowDrift {
	compared := 0
	for _, side := range []struct {
		name  string
		fps   []*shoalv1.FeatureProfile
		stats []*shoalv1.FeatureStats
	}{{"input", p.GetInputs(), w.Inputs}, {"output", p.GetOutputs(), w.Outputs}} {
		if len(side.fps) != len(side.stats) {
			if len(side.stats) > 0 || len(side.fps) > 0 {
				d.Error = fmt.Sprintf("the window has statistics of %d %s features; the reference profile has %d (devices binning with another profile?)", len(side.stats), side.name, len(side.fps))
				return clearDrift(d)
			}
			continue
		}
		for i, fp := range side.fps {
			f := FeatureDrift{Name: fp.GetName(), Side: side.name}
			cur := side.stats[i]
			if err := datastats.ValidateStats(fp, cur); err != nil {
				f.Error = fmt.Sprintf("statistics do not fit the reference profile: %v", err)
			} else if m, err := datastats.Compare(fp.GetReference(), cur); errors.Is(err, datastats.ErrNoData) {
				f.Error = "no values in the window"
			} else if err != nil {
				f.Error = err.Error()
			} else {
				f.PSI, f.JS, f.KS = m.PSI, m.JS, m.KS
				d.PSI, d.JS, d.KS = max(d.PSI, m.PSI), max(d.JS, m.JS), max(d.KS, m.KS)
				compared++
			}
			d.Features = append(d.Features, f)
		}
	}
	if compared == 0 {
		d.Error = "no feature has values to compare in this window"
	}
	return d
}

func clearDrift(d WindowDrift) WindowDrift {
	d.PSI, d.JS, d.KS, d.Features = 0, 0, 0, []FeatureDrift{}
	return d
}

// profile returns model/version's reference profile, from the cache if it
// was read lately. It returns an error saying why there is none.
func (s *Service) profile(ctx context.Context, model, version string) (*shoalv1.ReferenceProfile, error) {
	key := model + "/" + version
	now := s.opts.Now()
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < profileTTL && !now.Before(c.at) {
		return c.p, nil
	}
	p, found, err := s.profiles.ReferenceProfile(ctx, model, version)
	switch {
	case err != nil:
		return nil, fmt.Errorf("cannot read the reference profile of model %q version %q: %w", model, version, err)
	case !found:
		return nil, fmt.Errorf("model %q version %q has no reference profile to compare with; push one with the version", model, version)
	}
	s.mu.Lock()
	if len(s.cache) >= maxCachedProfiles {
		clear(s.cache)
	}
	s.cache[key] = cachedProfile{p: p, at: now}
	s.mu.Unlock()
	return p, nil
}

// topFeatures returns the n features of d with the largest metric, those
// with an error left out.
func topFeatures(d WindowDrift, metric string, n int) []FeatureDrift {
	fs := slices.DeleteFunc(slices.Clone(d.Features), func(f FeatureDrift) bool { return f.Error != "" })
	sort.SliceStable(fs, func(i, j int) bool { return featureValue(fs[i], metric) > featureValue(fs[j], metric) })
	return fs[:min(n, len(fs))]
}

func featureValue(f FeatureDrift, metric string) float64 {
	switch metric {
	case MetricJS:
		return f.JS
	case MetricKS:
		return f.KS
	}
	return f.PSI
}

// checkName returns an error unless s is a valid model name or version
// (names.Check); field says which.
func checkName(field, s string) error { return names.Check(field, s) }

// finite reports whether v is a finite number.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// checkCohort returns an error unless c is a cohort the monitor keeps.
func checkCohort(c string) error { return monitor.CheckCohort(c) }
