package drift

import (
	"context"
	"fmt"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// The metrics a Policy may watch.
const (
	MetricPSI = apiv1.MetricPSI
	MetricJS  = apiv1.MetricJS
	MetricKS  = apiv1.MetricKS
)

// MaxPolicyWindows bounds Policy.Windows.
const MaxPolicyWindows = 48

// Policy says when a model's drift raises an alert: when Windows windows
// in a row each have at least MinSamples samples and an overall Metric at
// or above Threshold. Its UpdatedAt is when it was last set; streaks
// restart then.
type Policy = apiv1.DriftPolicy

// breaches reports whether d breaches p.
func breaches(p Policy, d WindowDrift) bool {
	return d.Error == "" && d.Samples >= p.MinSamples && overall(d, p.Metric) >= p.Threshold
}

// checkPolicy returns an error naming the field at fault unless p is
// valid.
func checkPolicy(p Policy) error {
	switch p.Metric {
	case MetricPSI, MetricJS, MetricKS:
	default:
		return fmt.Errorf("metric %q is not psi, js or ks", p.Metric)
	}
	switch {
	case !finite(p.Threshold) || p.Threshold <= 0:
		return fmt.Errorf("threshold %v is not above 0", p.Threshold)
	case p.Metric != MetricPSI && p.Threshold > 1:
		return fmt.Errorf("threshold %v is above 1, which %s never reaches", p.Threshold, p.Metric)
	case p.Windows < 1 || p.Windows > MaxPolicyWindows:
		return fmt.Errorf("windows is %d; want 1 to %d windows in a row", p.Windows, MaxPolicyWindows)
	}
	return nil
}

// SetPolicy stores model's drift policy, replacing any, and returns it as
// stored. The streaks of the model restart with it. Errors: Invalid (bad
// model name or policy), Internal.
func (s *Service) SetPolicy(ctx context.Context, model string, p Policy) (Policy, error) {
	const op = "drift.SetPolicy"
	if err := ctx.Err(); err != nil {
		return Policy{}, err
	}
	if err := checkName("model name", model); err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift policy")
	}
	if err := checkPolicy(p); err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift policy of model %q", model)
	}
	p.UpdatedAt = s.opts.Now().UTC()
	err := store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		return store.PutJSON(tx, policyKey(model), p)
	})
	if err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store the drift policy of model %q", model)
	}
	s.opts.Log.Info("drift policy set", "model", model, "metric", p.Metric, "threshold", p.Threshold, "min_samples", p.MinSamples, "windows", p.Windows)
	return p, nil
}

// Policy returns model's drift policy. Errors: Invalid, NotFound (none
// set), Internal.
func (s *Service) Policy(ctx context.Context, model string) (Policy, error) {
	const op = "drift.Policy"
	if err := checkName("model name", model); err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "drift policy")
	}
	p, ok, err := store.ViewJSON[Policy](ctx, s.st, policyKey(model))
	switch {
	case err != nil:
		return Policy{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read the drift policy of model %q", model)
	case !ok:
		return Policy{}, shoalerr.E(shoalerr.NotFound, op, "model %q has no drift policy; set one with PUT /api/v1/drift/%s/policy (shoal drift policy)", model, model)
	}
	return p, nil
}

// storeAttempts is how often a transaction is retried on a write conflict.
const storeAttempts = 5

const (
	policyPrefix = "drift/policy/"
	streakPrefix = "drift/streak/"
	alertPrefix  = "drift/alert/"
)

func policyKey(model string) []byte { return []byte(policyPrefix + model) }

func streakKey(model, version, cohort string) []byte {
	return []byte(streakPrefix + model + "/" + version + "/" + cohort)
}

func alertKey(model, version, cohort string, startMs int64) []byte {
	return fmt.Appendf(nil, "%s%s/%s/%s/%016x", alertPrefix, model, version, cohort, uint64(startMs))
}
