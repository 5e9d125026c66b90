package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// The views of a rollout are the API's types (docs/API.md): Rollout with
// the progress of each stage (StageStatus) and device (DeviceStatus).
type (
	Rollout      = apiv1.Rollout
	StageStatus  = apiv1.StageStatus
	DeviceStatus = apiv1.RolloutDevice
)

// Get returns rollout id with its devices and events. Errors: NotFound.
func (e *Engine) Get(ctx context.Context, id string) (Rollout, error) {
	if err := ctx.Err(); err != nil {
		return Rollout{}, err
	}
	return e.get(id, true, true)
}

// List returns every rollout (of model, if not ""), newest first, with
// its devices but not its events.
func (e *Engine) List(ctx context.Context, model string) ([]Rollout, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ids, err := e.rolloutIDs(func(rec *record) bool { return model == "" || rec.Spec.Model == model })
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, "rollout.List", "read rollouts")
	}
	out := make([]Rollout, 0, len(ids))
	for _, id := range ids {
		r, err := e.get(id, true, false)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

// Events returns rollout id's events after seq (0 for all), oldest first.
// Errors: NotFound.
func (e *Engine) Events(ctx context.Context, id string, after uint64) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Event
	err := e.st.View(func(tx store.Tx) error {
		if _, err := tx.Get(recordKey(id)); err != nil {
			return err
		}
		return tx.Scan(eventsPrefix(id), func(k, v []byte) error {
			var ev Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			if ev.Seq > after {
				out = append(out, ev)
			}
			return nil
		})
	})
	if err != nil {
		return nil, notFoundOr(err, "rollout.Events", id)
	}
	if out == nil {
		out = []Event{}
	}
	return out, nil
}

func (e *Engine) get(id string, withDevices, withEvents bool) (Rollout, error) {
	const op = "rollout.Get"
	rec, devs, err := e.load(id)
	if err != nil {
		return Rollout{}, notFoundOr(err, op, id)
	}
	r := Rollout{
		ID: rec.ID, Model: rec.Spec.Model, Version: rec.Spec.Version,
		State: rec.State, Reason: rec.Reason, Stage: rec.Spec.Stages[rec.Stage].Name,
		Targets: rec.Targets, ReleaseSequence: rec.ReleaseSequence,
		Phases:    map[string]int{},
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, EndedAt: rec.EndedAt,
		Spec:    rec.Spec,
		Devices: []DeviceStatus{},
	}
	r.Stages = make([]StageStatus, len(rec.Stages))
	for i, sr := range rec.Stages {
		state := "pending"
		switch {
		case sr.PassedAt != nil:
			state = "passed"
		case sr.StartedAt != nil:
			state = "running"
		}
		r.Stages[i] = StageStatus{
			Name: rec.Spec.Stages[i].Name, State: state, Size: sr.Size,
			StartedAt: sr.StartedAt, GateMetAt: sr.GateMetAt, PassedAt: sr.PassedAt, Promoted: sr.Promoted,
		}
		if sr.StartedAt == nil {
			r.Stages[i].Size = stageSize(&rec.Spec.Stages[i], rec.Targets)
		}
	}
	for _, d := range devs {
		r.Phases[d.Phase]++
		stage := ""
		if d.notified() {
			ss := &r.Stages[d.Stage]
			ss.Notified++
			switch d.Phase {
			case PhaseHealthy:
				ss.Healthy++
			case PhaseFailed:
				ss.Failed++
			case PhaseOffline:
				ss.Offline++
			}
			stage = ss.Name
		}
		if withDevices {
			r.Devices = append(r.Devices, DeviceStatus{
				ID: d.ID, Stage: stage, Phase: d.Phase, Reason: d.Reason, Previous: d.Previous,
				NotifiedAt: d.NotifiedAt, ChangedAt: d.ChangedAt,
			})
		}
	}
	sort.Slice(r.Devices, func(i, j int) bool { return r.Devices[i].ID < r.Devices[j].ID })
	if withEvents {
		if r.Events, err = e.Events(context.Background(), id, 0); err != nil {
			return Rollout{}, err
		}
	}
	return r, nil
}

func notFoundOr(err error, op, id string) error {
	if shoalerr.Is(err, shoalerr.NotFound) || isNotFound(err) {
		return shoalerr.E(shoalerr.NotFound, op, "no rollout %q; `shoal rollout list` shows them", id)
	}
	if _, ok := err.(*shoalerr.Error); ok {
		return err
	}
	return shoalerr.Wrap(err, shoalerr.Internal, op, "read rollout %q", id)
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
