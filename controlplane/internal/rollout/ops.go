package rollout

import (
	"context"
	"fmt"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Pause stops a running rollout from notifying more devices or moving
// stages; devices already notified go on. Errors: NotFound, Conflict (the
// rollout is not running).
func (e *Engine) Pause(ctx context.Context, id string) (Rollout, error) {
	return e.command(ctx, "rollout.Pause", id, func(p *pass) error {
		if p.rec.State != StateRunning {
			return notIn(p, "paused", StateRunning)
		}
		p.rec.State, p.rec.Reason = StatePaused, "paused by an operator"
		p.dirty = true
		p.event(Event{Type: EventPaused, Stage: p.stage().Name, Message: "paused by an operator"})
		return nil
	})
}

// Resume lets a paused rollout go on. The gates are checked again at once:
// a rollout paused by its failure gate pauses again if the failures are
// still there (promote passes the stage regardless). Errors: NotFound,
// Conflict (not paused).
func (e *Engine) Resume(ctx context.Context, id string) (Rollout, error) {
	return e.command(ctx, "rollout.Resume", id, func(p *pass) error {
		if p.rec.State != StatePaused {
			return notIn(p, "resumed", StatePaused)
		}
		p.rec.State, p.rec.Reason = StateRunning, ""
		p.dirty = true
		p.event(Event{Type: EventResumed, Stage: p.stage().Name, Message: "resumed by an operator"})
		return nil
	})
}

// Promote passes the current stage now, whatever its gates and soak say,
// and starts the next (or completes the rollout after the last). A paused
// rollout runs again. Errors: NotFound, Conflict (over).
func (e *Engine) Promote(ctx context.Context, id string) (Rollout, error) {
	return e.command(ctx, "rollout.Promote", id, func(p *pass) error {
		if p.rec.State != StateRunning && p.rec.State != StatePaused {
			return notIn(p, "promoted", StateRunning, StatePaused)
		}
		p.rec.State, p.rec.Reason = StateRunning, ""
		p.rec.Stages[p.rec.Stage].Promoted = true
		p.event(Event{Type: EventPromoted, Stage: p.stage().Name, Message: "promoted by an operator"})
		p.pass("promoted by an operator")
		return nil
	})
}

// Abort ends a rollout where it is: no more devices are notified, and
// those already notified keep the new version (Rollback returns them).
// Errors: NotFound, Conflict (over).
func (e *Engine) Abort(ctx context.Context, id string) (Rollout, error) {
	return e.command(ctx, "rollout.Abort", id, func(p *pass) error {
		if p.rec.State != StateRunning && p.rec.State != StatePaused {
			return notIn(p, "aborted", StateRunning, StatePaused)
		}
		p.end(StateAborted, "aborted by an operator")
		p.event(Event{Type: EventAborted, Message: "aborted by an operator; devices already notified keep " + p.rec.Spec.Version})
		return nil
	})
}

// Rollback returns every device the rollout notified to the version it
// ran before, with a newly signed rollback manifest (the agents kept that
// version on disk), and ends the rollout as rolled back. Devices that a
// later deployment has taken over are left alone. Errors: NotFound,
// Conflict (already rolled back).
func (e *Engine) Rollback(ctx context.Context, id string) (Rollout, error) {
	return e.command(ctx, "rollout.Rollback", id, func(p *pass) error {
		if p.rec.State == StateRolledBack {
			return notIn(p, "rolled back", StateRunning, StatePaused, StateCompleted, StateAborted)
		}
		p.rec.Settled = false
		p.rollback("rolled back by an operator")
		return nil
	})
}

// command applies change to rollout id, stores it and runs a pass, so
// that what the command calls for (notifications, rollback manifests) is
// sent before it returns.
func (e *Engine) command(ctx context.Context, op, id string, change func(*pass) error) (Rollout, error) {
	if err := ctx.Err(); err != nil {
		return Rollout{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, devs, err := e.load(id)
	if err != nil {
		return Rollout{}, err
	}
	p := e.newPass(&rec, devs)
	if err := change(p); err != nil {
		return Rollout{}, shoalerr.E(shoalerr.Conflict, op, "%v", err)
	}
	if err := p.persist(); err != nil {
		return Rollout{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store rollout %s", id)
	}
	if err := e.step(ctx, id); err != nil {
		e.log.Warn("rollout pass after an operator command failed; the next will retry", "rollout", id, "err", err)
	}
	return e.get(id, true, false)
}

func notIn(p *pass, verb string, states ...string) error {
	return fmt.Errorf("rollout %s is %s, so it cannot be %s (only a rollout that is %s can)", p.rec.ID, p.rec.State, verb, orList(states))
}

func orList(s []string) string {
	switch len(s) {
	case 1:
		return s[0]
	case 2:
		return s[0] + " or " + s[1]
	}
	out := ""
	for i, v := range s {
		switch {
		case i == len(s)-1:
			out += ", or " + v
		case i > 0:
			out += ", " + v
		default:
			out = v
		}
	}
	return out
}
