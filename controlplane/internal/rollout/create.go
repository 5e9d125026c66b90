package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Create starts a rollout of spec. The selector is resolved now: the
// rollout's devices are the enrolled devices that match it at creation,
// put in cohort order by a hash of (rollout id, device id), so the canary
// is fixed and the same devices stay in the same stage. The manifest is
// signed once, here.
//
// Errors: Invalid (the spec, or a selector that matches no device, or a
// last stage that leaves devices out), NotFound (the model version, or a
// device the selector lists), Conflict (devices that a running or paused
// rollout of the same model holds, unless spec.Supersede).
func (e *Engine) Create(ctx context.Context, spec Spec) (Rollout, error) {
	const op = "rollout.Create"
	if err := ctx.Err(); err != nil {
		return Rollout{}, err
	}
	if err := Normalize(&spec); err != nil {
		return Rollout{}, shoalerr.E(shoalerr.Invalid, op, "%v", err)
	}
	if _, err := e.reg.Get(ctx, spec.Model, spec.Version); err != nil {
		return Rollout{}, err
	}
	devices, err := e.fl.List(ctx)
	if err != nil {
		return Rollout{}, err
	}
	targets, err := selectDevices(op, spec.Selector, devices)
	if err != nil {
		return Rollout{}, err
	}
	for i := 1; i < len(spec.Stages); i++ {
		prev, cur := &spec.Stages[i-1], &spec.Stages[i]
		if stageSize(cur, len(targets)) < stageSize(prev, len(targets)) {
			return Rollout{}, shoalerr.E(shoalerr.Invalid, op, "stage %q covers %d devices, fewer than stage %q before it (%d); sizes are cumulative, so each stage covers at least as many as the one before",
				cur.Name, stageSize(cur, len(targets)), prev.Name, stageSize(prev, len(targets)))
		}
	}
	last := spec.Stages[len(spec.Stages)-1]
	if n := stageSize(&last, len(targets)); n < len(targets) {
		return Rollout{}, shoalerr.E(shoalerr.Invalid, op, "the last stage %q covers %d of the %d devices selected; end with percent: 100 (or narrow the selector)", last.Name, n, len(targets))
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	holders, err := e.holders(spec.Model, targets)
	if err != nil {
		return Rollout{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read rollout locks")
	}
	if len(holders) > 0 && !spec.Supersede {
		return Rollout{}, shoalerr.E(shoalerr.Conflict, op, "%s; abort it first, or create this rollout with supersede", describeHolders(spec.Model, holders))
	}

	env, m, err := e.reg.Manifest(ctx, spec.Model, spec.Version, registry.ManifestOptions{HealthCheck: healthProto(spec.Health), CaptureShare: spec.CaptureShare})
	if err != nil {
		return Rollout{}, err
	}

	now := e.now()
	var id string
	err = store.Retry(e.st, storeAttempts, func(tx store.Tx) error {
		n, err := nextSeq(tx, []byte(seqKey))
		id = "r" + strconv.FormatUint(n, 10)
		return err
	})
	if err != nil {
		return Rollout{}, shoalerr.Wrap(err, shoalerr.Internal, op, "allocate rollout id")
	}
	for _, hid := range sortedKeys(holders) {
		if err := e.supersede(ctx, hid, id); err != nil {
			return Rollout{}, shoalerr.Wrap(err, shoalerr.Internal, op, "supersede rollout %s", hid)
		}
	}

	order := cohortOrder(id, targets)
	rec := record{
		ID:              id,
		Spec:            spec,
		State:           StateRunning,
		Stages:          make([]stageRecord, len(spec.Stages)),
		Targets:         len(order),
		Envelope:        env,
		ReleaseSequence: m.GetReleaseSequence(),
		ExpiresAt:       time.UnixMilli(m.GetExpiresAtUnixMs()).UTC(),
		CreatedAt:       now,
		UpdatedAt:       now,
	}
	// Devices and locks first, in chunks; the record last, which makes
	// the rollout exist. Locks of a rollout with no record are free.
	for start := 0; start < len(order); start += writeChunk {
		chunk := order[start:min(start+writeChunk, len(order))]
		err := store.Retry(e.st, storeAttempts, func(tx store.Tx) error {
			for i, dev := range chunk {
				dr := deviceRecord{ID: dev, Rank: start + i, Stage: -1, Phase: PhasePending, ChangedAt: now}
				if err := store.PutJSON(tx, deviceKey(id, dev), dr); err != nil {
					return err
				}
				if err := tx.Set(lockKey(spec.Model, dev), []byte(id)); err != nil {
					return fmt.Errorf("write lock: %w", err)
				}
			}
			return nil
		})
		if err != nil {
			return Rollout{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store rollout devices")
		}
	}
	p := e.newPass(&rec, nil)
	p.now = now
	p.event(Event{Type: EventCreated, Message: fmt.Sprintf("rollout of %s %s to %d devices in %d stages: %s", spec.Model, spec.Version, len(order), len(spec.Stages), stageSummary(spec, len(order)))})
	p.startStage(0)
	if err := p.persist(); err != nil {
		return Rollout{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store rollout")
	}
	e.log.Info("rollout created", "rollout", id, "model", spec.Model, "version", spec.Version, "devices", len(order), "stages", len(spec.Stages))
	if err := e.step(ctx, id); err != nil {
		e.log.Warn("first pass of new rollout failed; the next will retry", "rollout", id, "err", err)
	}
	return e.get(id, true, false)
}

// selectDevices returns the ids of the devices that match sel, by id.
func selectDevices(op string, sel Selector, devices []fleet.Device) ([]string, error) {
	byID := make(map[string]fleet.Device, len(devices))
	for _, d := range devices {
		byID[d.ID] = d
	}
	var candidates []fleet.Device
	if len(sel.Devices) > 0 {
		var missing []string
		seen := map[string]bool{}
		for _, id := range sel.Devices {
			d, ok := byID[id]
			switch {
			case !ok:
				missing = append(missing, id)
			case !seen[id]:
				seen[id] = true
				candidates = append(candidates, d)
			}
		}
		if len(missing) > 0 {
			return nil, shoalerr.E(shoalerr.NotFound, op, "selector.devices: %s not enrolled", listSome(missing))
		}
	} else {
		candidates = devices
	}
	var out []string
	for _, d := range candidates {
		if matches(sel, d) {
			out = append(out, d.ID)
		}
	}
	if len(out) == 0 {
		return nil, shoalerr.E(shoalerr.Invalid, op, "the selector %s matches no enrolled device", describeSelector(sel))
	}
	sort.Strings(out)
	return out, nil
}

func matches(sel Selector, d fleet.Device) bool {
	if sel.Group != "" && d.Group != sel.Group {
		return false
	}
	if sel.Profile != "" && d.Profile != sel.Profile {
		return false
	}
	for k, v := range sel.Labels {
		if got, ok := d.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func describeSelector(sel Selector) string {
	var parts []string
	for _, k := range sortedKeys(sel.Labels) {
		parts = append(parts, k+"="+sel.Labels[k])
	}
	if sel.Group != "" {
		parts = append(parts, "group="+sel.Group)
	}
	if sel.Profile != "" {
		parts = append(parts, "profile="+sel.Profile)
	}
	if len(sel.Devices) > 0 {
		parts = append(parts, "devices="+listSome(sel.Devices))
	}
	if len(parts) == 0 {
		return "(all devices)"
	}
	return strings.Join(parts, ",")
}

// cohortOrder sorts devices by SHA-256(rollout id, device id): a fixed,
// even shuffle, different for each rollout, so that no device is always
// the canary.
func cohortOrder(id string, devices []string) []string {
	type ranked struct {
		id string
		h  uint64
	}
	rs := make([]ranked, len(devices))
	for i, d := range devices {
		sum := sha256.Sum256([]byte(id + "\x00" + d))
		rs[i] = ranked{d, binary.BigEndian.Uint64(sum[:8])}
	}
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].h != rs[j].h {
			return rs[i].h < rs[j].h
		}
		return rs[i].id < rs[j].id
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.id
	}
	return out
}

// holders returns, by rollout id, the devices among ids that a running
// or paused rollout of model holds.
func (e *Engine) holders(model string, ids []string) (map[string][]string, error) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	out := map[string][]string{}
	live := map[string]bool{}
	err := e.st.View(func(tx store.Tx) error {
		return tx.Scan(lockPrefix(model), func(k, v []byte) error {
			dev := strings.TrimPrefix(string(k), string(lockPrefix(model)))
			if !want[dev] {
				return nil
			}
			rid := string(v)
			ok, seen := live[rid]
			if !seen {
				var rec record
				found, err := store.GetJSON(tx, recordKey(rid), &rec)
				if err != nil {
					return err
				}
				ok = found && !ended(rec.State)
				live[rid] = ok
			}
			if ok {
				out[rid] = append(out[rid], dev)
			}
			return nil
		})
	})
	return out, err
}

// Locked returns, for the devices among ids that a running or paused
// rollout of model holds, that rollout's id. A direct deployment to such
// a device would fight the rollout, so the API refuses it.
func (e *Engine) Locked(model string, ids []string) (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(ids) == 0 {
		devs, err := e.fl.List(context.Background())
		if err != nil {
			return nil, err
		}
		ids = devices(devs)
	}
	h, err := e.holders(model, ids)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rid, devs := range h {
		for _, d := range devs {
			out[d] = rid
		}
	}
	return out, nil
}

func devices(ds []fleet.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func describeHolders(model string, holders map[string][]string) string {
	var parts []string
	for _, rid := range sortedKeys(holders) {
		devs := holders[rid]
		sort.Strings(devs)
		parts = append(parts, fmt.Sprintf("rollout %s of model %s already holds %s", rid, model, listSome(devs)))
	}
	return strings.Join(parts, "; ")
}

// supersede aborts rollout id in favour of by.
func (e *Engine) supersede(ctx context.Context, id, by string) error {
	rec, devs, err := e.load(id)
	if err != nil {
		return err
	}
	p := e.newPass(&rec, devs)
	p.end(StateAborted, "superseded by rollout "+by)
	p.event(Event{Type: EventAborted, Message: "superseded by rollout " + by})
	return p.persist()
}

// nextSeq increments and returns the counter at key.
func nextSeq(tx store.Tx, key []byte) (uint64, error) {
	var n uint64
	b, err := tx.Get(key)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return 0, fmt.Errorf("read counter: %w", err)
	default:
		if n, err = strconv.ParseUint(string(b), 10, 64); err != nil {
			return 0, fmt.Errorf("counter %s holds %q: %w", key, b, err)
		}
	}
	n++
	return n, tx.Set(key, []byte(strconv.FormatUint(n, 10)))
}

func stageSummary(spec Spec, targets int) string {
	parts := make([]string, len(spec.Stages))
	for i, st := range spec.Stages {
		parts[i] = fmt.Sprintf("%s (%d)", st.Name, stageSize(&st, targets))
	}
	return strings.Join(parts, " → ")
}

// listSome names up to five ids and counts the rest.
func listSome(ids []string) string {
	const show = 5
	if len(ids) <= show {
		return strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ids[:show], ", "), len(ids)-show)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
