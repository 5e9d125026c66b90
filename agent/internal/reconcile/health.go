package reconcile

import (
	"log/slog"
	"time"

	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/modelstore"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Defaults of the health check of a version whose manifest has none, and
// of how often versions not yet healthy are looked at.
const (
	DefaultHealthMinPredictions = 100
	DefaultHealthMinTime        = 30 * time.Second
	DefaultHealthPoll           = time.Second
)

// healthCheck says when an active version is healthy: once it has served
// minPredictions successful predictions or been active for minTime,
// whichever comes first. A zero criterion is off; with both off the
// version is healthy as soon as it is active.
type healthCheck struct {
	minPredictions uint64
	minTime        time.Duration
}

// manifestCheck is the manifest's health check, or def if it has none.
func manifestCheck(hc *shoalv1.HealthCheck, def healthCheck) healthCheck {
	if hc == nil {
		return def
	}
	return healthCheck{minPredictions: hc.GetMinPredictions(), minTime: time.Duration(hc.GetMinSeconds()) * time.Second}
}

// configCheck is the agent's default health check from Config's fields:
// 0 is the package default, negative turns the criterion off.
func configCheck(minPredictions int64, minTime time.Duration) healthCheck {
	c := healthCheck{minPredictions: DefaultHealthMinPredictions, minTime: DefaultHealthMinTime}
	switch {
	case minPredictions < 0:
		c.minPredictions = 0
	case minPredictions > 0:
		c.minPredictions = uint64(minPredictions)
	}
	switch {
	case minTime < 0:
		c.minTime = 0
	case minTime > 0:
		c.minTime = minTime
	}
	return c
}

func (c healthCheck) met(predictions uint64, active time.Duration) bool {
	switch {
	case c.minPredictions == 0 && c.minTime == 0:
		return true
	case c.minPredictions > 0 && predictions >= c.minPredictions:
		return true
	default:
		return c.minTime > 0 && active >= c.minTime
	}
}

// versionHealth is the health of the version serving under one name.
type versionHealth struct {
	ref     inference.Ref
	since   time.Time // when it started serving in this process
	healthy bool      // once set, stays set until another version serves
	// check is the manifest's health check for this version, once one
	// has named it (known).
	check healthCheck
	known bool
}

// expectedCheck is the health check the desired state's manifest sets for
// one version of a model.
type expectedCheck struct {
	ref   modelstore.Ref
	check healthCheck
}

// healthTracker follows the health of the serving versions. The Run
// goroutine tells it of activations and of the manifests' health checks;
// update judges the versions, on the Run goroutine or the health watcher.
// Every method must be called with Reconciler.pub held.
//
// A version is judged by the health check of the manifest that activated
// it or, for a version loaded from disk at start, of the first manifest
// that names it. Until one does, it is judged by the defaults once a
// desired state has been applied, and not at all before: so a version
// loaded from disk waits for the desired state rather than being declared
// healthy by the defaults just before a stricter manifest arrives.
type healthTracker struct {
	log         *slog.Logger
	defaults    healthCheck
	poll        time.Duration
	versions    map[string]*versionHealth
	expected    map[string]expectedCheck // by model name
	desiredSeen bool
}

// activated records that ref started serving at now, installed by a
// manifest whose health check is c: not healthy yet.
func (h *healthTracker) activated(ref inference.Ref, now time.Time, c healthCheck) {
	h.versions[ref.Name] = &versionHealth{ref: ref, since: now, check: c, known: true}
}

// expect records the health check of the version of name that the desired
// state deploys. If that version serves and is not healthy yet, it is
// judged by c from now on (a re-signed manifest may change it).
func (h *healthTracker) expect(name string, ref modelstore.Ref, c healthCheck) {
	h.expected[name] = expectedCheck{ref: ref, check: c}
	if v := h.versions[name]; v != nil && !v.healthy && sameRef(storeRef(v.ref), ref) {
		v.check, v.known = c, true
	}
}

// forget drops the health check of a model the desired state no longer
// names. Its serving version keeps the check it has.
func (h *healthTracker) forget(name string) { delete(h.expected, name) }

// update judges the serving versions by their prediction counts at now.
// A version it has not seen serving before (loaded before the reconciler
// was made, or swapped in by someone else) starts serving now. It returns
// how long until it should look again (0: no version is waiting to turn
// healthy).
func (h *healthTracker) update(serving []inference.Usage, now time.Time) (next time.Duration) {
	seen := make(map[string]bool, len(serving))
	for _, u := range serving {
		name := u.Ref.Name
		seen[name] = true
		v := h.versions[name]
		if v == nil || v.ref != u.Ref {
			v = &versionHealth{ref: u.Ref, since: now}
			if e, ok := h.expected[name]; ok && sameRef(e.ref, storeRef(u.Ref)) {
				v.check, v.known = e.check, true
			}
			h.versions[name] = v
		}
		if v.healthy {
			continue
		}
		c := v.check
		if !v.known {
			if !h.desiredSeen {
				continue
			}
			c = h.defaults
		}
		active := now.Sub(v.since)
		if c.met(u.Predictions, active) {
			v.healthy = true
			h.log.Info("healthy", "model", name, "version", u.Ref.Version, "predictions", u.Predictions,
				"active_for", active.Round(time.Millisecond))
			continue
		}
		wait := h.poll
		if c.minTime > 0 {
			wait = min(wait, c.minTime-active)
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	for name := range h.versions {
		if !seen[name] {
			delete(h.versions, name)
		}
	}
	return next
}

// fill sets the health fields of the models in rs whose active version is
// the one tracked; the others keep what they have (a report built just
// before a swap keeps the old version's health until the next one).
func (h *healthTracker) fill(rs *shoalv1.ReportedState) {
	for _, ms := range rs.GetModels() {
		v := h.versions[ms.GetName()]
		if v == nil || !refIs(ms.GetActive(), v.ref) {
			continue
		}
		ms.Healthy = v.healthy
		ms.ActiveSinceUnixMs = v.since.UnixMilli()
	}
}

func refIs(p *shoalv1.ModelRef, r inference.Ref) bool {
	return p != nil && p.GetName() == r.Name && p.GetVersion() == r.Version && p.GetSha256() == r.SHA256 &&
		p.GetReleaseSequence() == r.ReleaseSequence
}

func storeRef(r inference.Ref) modelstore.Ref {
	return modelstore.Ref{Name: r.Name, Version: r.Version, SHA256: r.SHA256, ReleaseSequence: r.ReleaseSequence}
}
