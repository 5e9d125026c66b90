package drift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Alert says that a model version's data drifted in a cohort for
// Policy.Windows windows in a row; AlertWindow is one breaching window of
// its streak. Both are stored as the API shows them.
type (
	Alert       = apiv1.Alert
	AlertWindow = apiv1.AlertWindow
)

// streak is the evaluator's state of one model version and cohort.
type streak struct {
	// PolicyAt is the UpdatedAt of the policy the streak is of.
	PolicyAt time.Time `json:"policy_at"`
	// LastEnd is the end of the last window judged, unix ms.
	LastEnd int64 `json:"last_end_unix_ms"`
	// Windows are the breaching windows in a row up to LastEnd (the last
	// MaxPolicyWindows of them); none if the last window did not breach.
	Windows []AlertWindow `json:"windows,omitempty"`
	// Length counts the streak's windows, Windows' and older.
	Length  int  `json:"length"`
	Alerted bool `json:"alerted"`
	// StartMs is the start of the streak's first window, unix ms.
	StartMs int64 `json:"start_unix_ms"`
}

// MaxAlerts bounds what Alerts returns.
const MaxAlerts = 1000

// Run evaluates the policies every interval until ctx ends. An evaluation
// that fails is logged (rate-limited) and tried again at the next tick.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Evaluate(ctx); err != nil && ctx.Err() == nil {
			s.lim.Log(s.opts.Log, slog.LevelError, "evaluate", "drift evaluation failed; will try again", "err", err)
		}
	}
}

// Evaluate judges, for every model with a policy, the windows that have
// closed and settled since the last evaluation, and raises the alerts
// their streaks call for. It looks back at most MaxPolicyWindows+1
// windows, so that after a long stop (or for a new policy) only recent
// windows count. Errors: Internal.
func (s *Service) Evaluate(ctx context.Context) error {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	var models []string
	pols := map[string]Policy{}
	err := s.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(policyPrefix), func(k, v []byte) error {
			var p Policy
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			m := string(k[len(policyPrefix):])
			models = append(models, m)
			pols[m] = p
			return nil
		})
	})
	if err != nil {
		return shoalerr.Wrap(err, shoalerr.Internal, "drift.Evaluate", "read drift policies")
	}
	var errs []error
	for _, m := range models {
		if err := s.evaluateModel(ctx, m, pols[m]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("model %q: %w", m, err))
		}
	}
	if len(errs) > 0 {
		return shoalerr.Wrap(errors.Join(errs...), shoalerr.Internal, "drift.Evaluate", "evaluate drift")
	}
	return nil
}

func (s *Service) evaluateModel(ctx context.Context, model string, pol Policy) error {
	now := s.opts.Now()
	since := now.Add(-s.opts.Settle - time.Duration(MaxPolicyWindows+1)*s.opts.Window)
	ws, err := s.windows.StatsWindows(ctx, model, "", since)
	if err != nil {
		return err
	}
	// Group by version and cohort; StatsWindows orders them so.
	for i := 0; i < len(ws); {
		j := i + 1
		for j < len(ws) && ws[j].Version == ws[i].Version && ws[j].Cohort == ws[i].Cohort {
			j++
		}
		if err := s.evaluateGroup(ctx, model, pol, ws[i:j], now); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// evaluateGroup judges the closed windows of one version and cohort,
// ordered by start.
func (s *Service) evaluateGroup(ctx context.Context, model string, pol Policy, ws []monitor.StatsWindow, now time.Time) error {
	version, cohort := ws[0].Version, ws[0].Cohort
	key := streakKey(model, version, cohort)
	var st streak
	err := s.st.View(func(tx store.Tx) error {
		_, err := store.GetJSON(tx, key, &st)
		return err
	})
	if err != nil {
		return err
	}
	if !st.PolicyAt.Equal(pol.UpdatedAt) {
		st = streak{PolicyAt: pol.UpdatedAt}
	}
	var raised []Alert
	judged := false
	for _, w := range ws {
		if w.End.Add(s.opts.Settle).After(now) || w.End.UnixMilli() <= st.LastEnd {
			continue
		}
		d := s.windowDrift(ctx, w)
		if d.Error != "" && !judged {
			if _, err := s.profile(ctx, model, version); err != nil {
				// No profile (yet): judge nothing, so that the windows are
				// judged once it is there.
				s.lim.Log(s.opts.Log, slog.LevelWarn, "profile\x00"+model+"/"+version, "cannot evaluate drift", "model", model, "version", version, "err", err)
				return nil
			}
		}
		judged = true
		if w.Start.UnixMilli() != st.LastEnd || !breaches(pol, d) {
			st.Windows, st.Length, st.Alerted = nil, 0, false // a gap or a calm window ends the streak
		}
		st.LastEnd = w.End.UnixMilli()
		if !breaches(pol, d) {
			continue
		}
		if st.Length == 0 {
			st.StartMs = w.Start.UnixMilli()
		}
		st.Length++
		st.Windows = append(st.Windows, AlertWindow{Start: w.Start, End: w.End, Samples: d.Samples, PSI: d.PSI, JS: d.JS, KS: d.KS})
		if n := len(st.Windows); n > MaxPolicyWindows {
			st.Windows = st.Windows[n-MaxPolicyWindows:]
		}
		if st.Length >= pol.Windows && !st.Alerted {
			st.Alerted = true
			raised = append(raised, Alert{
				ID:    fmt.Sprintf("%s/%s/%s/%d", model, version, cohort, st.StartMs),
				Model: model, Version: version, Cohort: cohort, Policy: pol,
				StreakStart: time.UnixMilli(st.StartMs).UTC(),
				Windows:     append([]AlertWindow(nil), st.Windows...),
				TopFeatures: topFeatures(d, pol.Metric, 3),
				RaisedAt:    now.UTC(),
			})
		}
	}
	if !judged {
		return nil
	}
	var stored []Alert
	err = store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		stored = stored[:0]
		for _, a := range raised {
			k := alertKey(a.Model, a.Version, a.Cohort, a.StreakStart.UnixMilli())
			if _, err := tx.Get(k); err == nil {
				continue // raised before (the streak was judged again after a policy change)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err := store.PutJSON(tx, k, a); err != nil {
				return err
			}
			stored = append(stored, a)
		}
		return store.PutJSON(tx, key, st)
	})
	if err != nil {
		return err
	}
	for _, a := range stored {
		s.opts.Log.Warn("data drift alert", "model", a.Model, "version", a.Version, "cohort", a.Cohort,
			"metric", a.Policy.Metric, "threshold", a.Policy.Threshold, "windows", len(a.Windows), "id", a.ID)
		if s.opts.OnAlert != nil {
			s.opts.OnAlert(a)
		}
	}
	return nil
}

// Alerts returns the alerts of model (of every model if ""), newest first,
// at most MaxAlerts. Errors: Invalid (bad model name), Internal.
func (s *Service) Alerts(ctx context.Context, model string) ([]Alert, error) {
	const op = "drift.Alerts"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix := alertPrefix
	if model != "" {
		if err := checkName("model name", model); err != nil {
			return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift alerts")
		}
		prefix += model + "/"
	}
	out := []Alert{}
	err := s.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(prefix), func(k, v []byte) error {
			var a Alert
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read drift alerts")
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].RaisedAt.After(out[j].RaisedAt) })
	return out[:min(len(out), MaxAlerts)], nil
}
