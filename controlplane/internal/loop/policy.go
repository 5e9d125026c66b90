package loop

import (
	"context"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// DefaultCooldown is Policy.Cooldown's default.
const DefaultCooldown = time.Hour

// Policy says what a drift alert on a model does (the package doc says
// how each field is used).
type Policy struct {
	// Retrain turns the loop on for the model; false keeps the policy but
	// starts nothing.
	Retrain bool `json:"retrain"`
	// Dataset, if set, is trained on instead of the lineage job's.
	Dataset string `json:"dataset,omitempty"`
	// Captures adds the model's labelled captured rows to the dataset's
	// latest version, pushed as a new version to train on.
	Captures bool `json:"captures,omitempty"`
	// Gates, if set, replace the lineage job's gates.
	Gates *validation.Gates `json:"gates,omitempty"`
	// Rollout is the template of the candidate's rollout; its model and
	// version are filled in by the loop. Nil: no rollout.
	Rollout *rollout.Spec `json:"rollout,omitempty"`
	// Cooldown is the least time between the starts of two runs of the
	// model; 0 is DefaultCooldown.
	Cooldown  rollout.Duration `json:"cooldown,omitempty"`
	UpdatedAt time.Time        `json:"updated_at,omitzero"`
}

// templateVersion stands in for the candidate's version when a rollout
// template is checked.
const templateVersion = "candidate"

// normalize checks p and fills its defaults; the error names the field
// at fault.
func (p *Policy) normalize(op, model string) error {
	if p.Dataset != "" {
		if err := dataset.ValidateName(p.Dataset); err != nil {
			return shoalerr.Wrap(err, shoalerr.Invalid, op, "retraining policy of model %q: dataset", model)
		}
	}
	if p.Gates != nil {
		if err := p.Gates.Check(""); err != nil {
			return shoalerr.Wrap(err, shoalerr.Invalid, op, "retraining policy of model %q", model)
		}
	}
	switch {
	case p.Cooldown < 0:
		return shoalerr.E(shoalerr.Invalid, op, "retraining policy of model %q: cooldown %v is negative; give a duration such as 1h, or leave it out for %v", model, p.Cooldown, DefaultCooldown)
	case p.Cooldown == 0:
		p.Cooldown = rollout.Duration(DefaultCooldown)
	}
	if p.Rollout != nil {
		spec := *p.Rollout
		spec.Model, spec.Version = model, templateVersion
		if err := rollout.Normalize(&spec); err != nil {
			return shoalerr.E(shoalerr.Invalid, op, "retraining policy of model %q: rollout: %v", model, err)
		}
		// The fleet a candidate goes to is only known when it does: only
		// a percentage is sure to cover it.
		if last := spec.Stages[len(spec.Stages)-1]; last.Percent != 100 {
			return shoalerr.E(shoalerr.Invalid, op, "retraining policy of model %q: rollout: the last stage %q must be percent: 100 (the devices a candidate goes to are known only then)", model, last.Name)
		}
		spec.Model, spec.Version, spec.Supersede = "", "", true
		p.Rollout = &spec
	}
	return nil
}

// SetPolicy stores model's retraining policy, replacing any, and returns
// it as stored. Errors: Invalid (bad model name or policy), Internal.
func (s *Service) SetPolicy(ctx context.Context, model string, p Policy) (Policy, error) {
	const op = "loop.SetPolicy"
	if err := ctx.Err(); err != nil {
		return Policy{}, err
	}
	if err := registry.ValidateName("model name", model); err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "retraining policy")
	}
	if err := p.normalize(op, model); err != nil {
		return Policy{}, err
	}
	p.UpdatedAt = s.now().UTC()
	err := store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		return store.PutJSON(tx, policyKey(model), p)
	})
	if err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store the retraining policy of model %q", model)
	}
	s.log.Info("retraining policy set", "model", model, "retrain", p.Retrain, "dataset", p.Dataset, "captures", p.Captures, "rollout", p.Rollout != nil, "cooldown", p.Cooldown)
	return p, nil
}

// Policy returns model's retraining policy. Errors: Invalid, NotFound
// (none set), Internal.
func (s *Service) Policy(ctx context.Context, model string) (Policy, error) {
	const op = "loop.Policy"
	if err := registry.ValidateName("model name", model); err != nil {
		return Policy{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "retraining policy")
	}
	p, ok, err := store.ViewJSON[Policy](ctx, s.st, policyKey(model))
	switch {
	case err != nil:
		return Policy{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read the retraining policy of model %q", model)
	case !ok:
		return Policy{}, shoalerr.E(shoalerr.NotFound, op, "model %q has no retraining policy; set one with PUT /api/v1/loop/%s/policy (shoal loop policy)", model, model)
	}
	return p, nil
}

func policyKey(model string) []byte { return []byte(policyPrefix + model) }
