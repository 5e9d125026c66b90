package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Reconcile runs one pass over every rollout that is not over: observe
// the devices, check the gates, move stages on, then send the desired
// states the decisions call for. Each rollout is handled on its own; the
// errors of all of them are joined.
func (e *Engine) Reconcile(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	defer func() {
		e.passes.Add(1)
		e.passNanos.Add(uint64(time.Since(start)))
	}()
	ids, err := e.rolloutIDs(func(rec *record) bool { return !(ended(rec.State) && rec.Settled) })
	if err != nil {
		return fmt.Errorf("rollout: list rollouts: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.step(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) newPass(rec *record, devs []*deviceRecord) *pass {
	return &pass{e: e, rec: rec, devs: devs, now: e.now(), changed: map[string]bool{}}
}

// rolloutIDs returns the ids of the stored rollouts keep accepts.
func (e *Engine) rolloutIDs(keep func(*record) bool) ([]string, error) {
	var ids []string
	err := e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(recordPrefix), func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			if keep(&rec) {
				ids = append(ids, rec.ID)
			}
			return nil
		})
	})
	return ids, err
}

// pass is one step of one rollout: what it read, and what it decided.
type pass struct {
	e    *Engine
	rec  *record
	devs []*deviceRecord // by rank
	now  time.Time

	changed map[string]bool // devices whose record changed
	events  []Event
	dirty   bool // the rollout record changed
}

// step runs one pass of rollout id. The caller holds e.mu.
func (e *Engine) step(ctx context.Context, id string) error {
	rec, devs, err := e.load(id)
	if err != nil {
		return err
	}
	p := e.newPass(&rec, devs)
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
	}
	view, err := e.fl.Devices(ctx, ids)
	if err != nil {
		return fmt.Errorf("read devices: %w", err)
	}
	stats, err := p.telemetry(ctx)
	if err != nil {
		// Health bounds wait for the next pass; the rest goes on.
		e.lim.Log(e.log, slog.LevelWarn, "telemetry"+id, "cannot read telemetry for rollout health gates", "rollout", id, "err", err)
	}
	p.observe(view, stats)
	if rec.State == StateRunning {
		p.checkGates(view)
	}
	if rec.State == StateRunning {
		if err := p.refreshManifest(ctx); err != nil {
			e.lim.Log(e.log, slog.LevelWarn, "refresh"+id, "cannot re-sign the rollout's manifest; notifications wait", "rollout", id, "err", err)
		} else {
			p.assign(view)
		}
	}
	if err := p.prepareRollbacks(ctx); err != nil {
		e.lim.Log(e.log, slog.LevelWarn, "rollback"+id, "cannot issue rollback manifests", "rollout", id, "err", err)
	}
	if ended(rec.State) && !rec.Settled && p.settled(view) {
		rec.Settled = true
		p.dirty = true
	}
	if err := p.persist(); err != nil {
		return fmt.Errorf("store pass: %w", err)
	}
	return p.act(ctx, view)
}

// load reads a rollout and its devices (by rank).
func (e *Engine) load(id string) (record, []*deviceRecord, error) {
	var rec record
	var devs []*deviceRecord
	err := e.st.View(func(tx store.Tx) error {
		found, err := store.GetJSON(tx, recordKey(id), &rec)
		if err != nil {
			return err
		}
		if !found {
			return shoalerr.E(shoalerr.NotFound, "rollout.load", "no rollout %q", id)
		}
		return tx.Scan(devicesPrefix(id), func(k, v []byte) error {
			d := new(deviceRecord)
			if err := json.Unmarshal(v, d); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			devs = append(devs, d)
			return nil
		})
	})
	if err != nil {
		return record{}, nil, err
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Rank < devs[j].Rank })
	return rec, devs, nil
}

// versionStats are telemetry totals by device.
type versionStats map[string]monitor.VersionStats

// telemetry reads the new version's telemetry, and that of the versions
// devices ran before, when the current stage has health bounds.
func (p *pass) telemetry(ctx context.Context) (map[string]versionStats, error) {
	if p.rec.State != StateRunning && p.rec.State != StatePaused {
		return nil, nil
	}
	h := p.stage().Health
	if h.MaxErrorPercent == nil && h.MaxP95LatencyRatio == nil {
		return nil, nil
	}
	versions := map[string]bool{p.rec.Spec.Version: true}
	if h.MaxP95LatencyRatio != nil {
		for _, d := range p.devs {
			if d.notified() && d.Previous != "" {
				versions[d.Previous] = true
			}
		}
	}
	out := map[string]versionStats{}
	for v := range versions {
		list, err := p.e.tel.VersionStats(ctx, p.rec.Spec.Model, v)
		if err != nil {
			return nil, err
		}
		m := versionStats{}
		for _, s := range list {
			m[s.DeviceID] = s
		}
		out[v] = m
	}
	return out, nil
}

func (p *pass) stage() *Stage { return &p.rec.Spec.Stages[p.rec.Stage] }

// observe updates each notified device's phase from what it reports.
func (p *pass) observe(view map[string]fleet.Device, stats map[string]versionStats) {
	model, version := p.rec.Spec.Model, p.rec.Spec.Version
	for _, d := range p.devs {
		if !d.notified() {
			continue
		}
		dev, enrolled := view[d.ID]
		ms := modelState(dev, model)
		switch d.Phase {
		case PhaseFailed, PhaseRolledBack:
			continue
		case PhaseRollingBack:
			switch {
			case d.Previous != "" && ms.ActiveVersion == d.Previous && ms.Phase == "active":
				p.setPhase(d, PhaseRolledBack, "back on "+d.Previous)
			case enrolled && ms.DesiredVersion != version && ms.DesiredVersion != d.Previous:
				p.setPhase(d, PhaseRolledBack, "left alone: a later deployment made "+orNone(ms.DesiredVersion)+" its desired version")
			}
			continue
		}
		if ended(p.rec.State) && enrolled && ms.DesiredVersion != version {
			continue // another deployment took the device over
		}
		if d.SeenAt == nil {
			if !enrolled || !(dev.Online || ms.TargetVersion == version || ms.ActiveVersion == version) {
				p.setPhase(d, PhaseOffline, "")
				continue
			}
			t := p.now
			d.SeenAt = &t
			p.changed[d.ID] = true
		}
		phase, reason := PhaseNotified, ""
		switch {
		case ms.ActiveVersion == version && ms.Healthy:
			phase = PhaseHealthy
		case ms.ActiveVersion == version:
			phase = PhaseActive
		case ms.TargetVersion == version:
			switch ms.Phase {
			case "downloading":
				phase = PhaseDownloading
			case "verifying", "self_test", "activating":
				phase = PhaseVerifying
			case "failed":
				phase, reason = PhaseFailed, "the agent refused "+version+": "+ms.Error
			}
		}
		if phase == PhaseActive || phase == PhaseHealthy {
			if why := p.unhealthy(d, stats); why != "" {
				phase, reason = PhaseFailed, why
			}
		}
		if phase == PhaseHealthy && d.HealthyAt == nil {
			t := p.now
			d.HealthyAt = &t
		}
		if phase != PhaseFailed && phase != PhaseHealthy && d.HealthyAt == nil {
			timeout := p.rec.Spec.Stages[d.Stage].Timeout.D()
			if since := p.now.Sub(later(*d.NotifiedAt, *d.SeenAt)); since > timeout {
				phase, reason = PhaseFailed, fmt.Sprintf("not active and healthy within the stage timeout of %s (last phase: %s)", timeout, phase)
			}
		}
		p.setPhase(d, phase, reason)
	}
}

// unhealthy checks a device's telemetry on the new version against the
// current stage's health bounds, returning why it fails them.
func (p *pass) unhealthy(d *deviceRecord, stats map[string]versionStats) string {
	if stats == nil {
		return ""
	}
	h := p.stage().Health
	cur, ok := stats[p.rec.Spec.Version][d.ID]
	if !ok || cur.Predictions < h.MinPredictions {
		return ""
	}
	if m := h.MaxErrorPercent; m != nil {
		if rate := 100 * cur.ErrorRate; rate > *m {
			return fmt.Sprintf("error rate %.1f%% on %s over %d inferences is above the %.1f%% allowed", rate, p.rec.Spec.Version, cur.Predictions, *m)
		}
	}
	if m := h.MaxP95LatencyRatio; m != nil && d.Previous != "" {
		base, ok := stats[d.Previous][d.ID]
		if ok && base.Predictions >= h.MinPredictions && base.LatencyP95Us > 0 {
			if ratio := cur.LatencyP95Us / base.LatencyP95Us; ratio > *m {
				return fmt.Sprintf("p95 latency %.0fµs on %s is %.2f× the %.0fµs it had on %s (at most %.2f× allowed)",
					cur.LatencyP95Us, p.rec.Spec.Version, ratio, base.LatencyP95Us, d.Previous, *m)
			}
		}
	}
	return ""
}

// checkGates trips the current stage's failure gate, or passes the stage
// once its success gate has held for its soak time.
func (p *pass) checkGates(view map[string]fleet.Device) {
	st := p.stage()
	c := p.counts()
	if tripped, why := failureTripped(st, c); tripped {
		p.event(Event{Type: EventGate, Stage: st.Name, Message: why + failedList(p.devs)})
		if st.OnFailure == ActionRollback {
			p.rollback("stage " + st.Name + ": " + why)
		} else {
			p.rec.State, p.rec.Reason = StatePaused, "stage "+st.Name+": "+why
			p.dirty = true
			p.event(Event{Type: EventPaused, Stage: st.Name, Message: "paused by the failure gate; resume, promote, roll back or abort"})
		}
		return
	}
	sr := &p.rec.Stages[p.rec.Stage]
	met := p.full(view) && c.seen > 0 && float64(c.healthy) >= *st.Success.MinHealthyPercent/100*float64(c.seen)-1e-9
	switch {
	case !met && sr.GateMetAt != nil:
		sr.GateMetAt = nil
		p.dirty = true
	case met && sr.GateMetAt == nil:
		t := p.now
		sr.GateMetAt = &t
		p.dirty = true
	}
	if met && p.now.Sub(*sr.GateMetAt) >= st.Soak.D() {
		p.pass(fmt.Sprintf("%d of %s seen healthy, soaked %s", c.healthy, plural(c.seen, "device"), st.Soak))
	}
}

// counts are the phases of the devices notified so far.
type counts struct {
	notified, seen, healthy, failed, offline int
}

func (p *pass) counts() counts {
	var c counts
	for _, d := range p.devs {
		if !d.notified() {
			continue
		}
		c.notified++
		switch d.Phase {
		case PhaseOffline:
			c.offline++
			continue
		case PhaseHealthy:
			c.healthy++
		case PhaseFailed:
			c.failed++
		}
		c.seen++
	}
	return c
}

func failureTripped(st *Stage, c counts) (bool, string) {
	f := st.Failure
	if f.MaxCount != nil && c.failed > *f.MaxCount {
		return true, fmt.Sprintf("%d of %d devices failed; at most %d may", c.failed, c.seen, *f.MaxCount)
	}
	if f.MaxPercent != nil && c.seen > 0 && 100*float64(c.failed)/float64(c.seen) > *f.MaxPercent {
		return true, fmt.Sprintf("%d of %d devices failed (%.1f%%); at most %.1f%% may", c.failed, c.seen, 100*float64(c.failed)/float64(c.seen), *f.MaxPercent)
	}
	return false, ""
}

// failedList names the failed devices and why, briefly.
func failedList(devs []*deviceRecord) string {
	var parts []string
	for _, d := range devs {
		if d.Phase == PhaseFailed {
			parts = append(parts, d.ID+": "+d.Reason)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	more := ""
	if len(parts) > 3 {
		more = fmt.Sprintf(" (and %d more)", len(parts)-3)
		parts = parts[:3]
	}
	return " — " + strings.Join(parts, "; ") + more
}

// full reports whether the current stage has all the devices it needs:
// its size in devices seen online, or every device it may take (the
// online ones; in the last stage, every one).
func (p *pass) full(view map[string]fleet.Device) bool {
	seen, left := 0, 0
	last := p.rec.Stage == len(p.rec.Stages)-1
	for _, d := range p.devs {
		switch {
		case !d.notified():
			if last || view[d.ID].Online {
				left++
			}
		case d.Phase != PhaseOffline:
			seen++
		}
	}
	return left == 0 || seen >= p.rec.Stages[p.rec.Stage].Size
}

// pass ends the current stage and starts the next, or completes the
// rollout after the last.
func (p *pass) pass(why string) {
	sr := &p.rec.Stages[p.rec.Stage]
	t := p.now
	sr.PassedAt = &t
	p.dirty = true
	p.event(Event{Type: EventStagePassed, Stage: p.stage().Name, Message: why})
	if p.rec.Stage == len(p.rec.Stages)-1 {
		p.end(StateCompleted, "")
		msg := fmt.Sprintf("every stage passed; %s %s is healthy on %d of %d devices", p.rec.Spec.Model, p.rec.Spec.Version, p.counts().healthy, p.rec.Targets)
		if c := p.counts(); c.offline > 0 {
			msg += fmt.Sprintf("; %s offline converge when they return", plural(c.offline, "device"))
		}
		p.event(Event{Type: EventCompleted, Message: msg})
		return
	}
	p.startStage(p.rec.Stage + 1)
}

// startStage makes stage i current.
func (p *pass) startStage(i int) {
	p.rec.Stage = i
	st := &p.rec.Spec.Stages[i]
	t := p.now
	p.rec.Stages[i] = stageRecord{Size: stageSize(st, p.rec.Targets), StartedAt: &t}
	p.dirty = true
	p.event(Event{Type: EventStage, Stage: st.Name, Message: fmt.Sprintf("stage %s (%d of %d) started: %s in all, counting those before", st.Name, i+1, len(p.rec.Stages), plural(p.rec.Stages[i].Size, "device"))})
}

// assign notifies the next devices in cohort order, up to the stage's
// size in devices seen online and what its rate allows. Offline devices
// are passed over and stay pending for a later stage, so that a stage is
// made of devices that can answer and none installs the version without
// a gate having judged it; the last stage takes them all, and those
// still offline converge when they return.
func (p *pass) assign(view map[string]fleet.Device) {
	if p.rec.Stages[p.rec.Stage].PassedAt != nil {
		return
	}
	st, sr := p.stage(), &p.rec.Stages[p.rec.Stage]
	seen, inStage := 0, 0
	for _, d := range p.devs {
		if d.notified() && d.Phase != PhaseOffline {
			seen++
		}
		if d.Stage == p.rec.Stage {
			inStage++
		}
	}
	budget := stageAllowed(st, p.now.Sub(*sr.StartedAt)) - inStage
	last := p.rec.Stage == len(p.rec.Stages)-1
	for _, d := range p.devs {
		if seen >= sr.Size || budget <= 0 {
			return
		}
		dev := view[d.ID]
		if d.notified() || (!dev.Online && !last) {
			continue
		}
		t := p.now
		d.Stage, d.NotifiedAt = p.rec.Stage, &t
		d.Previous = modelState(dev, p.rec.Spec.Model).ActiveVersion
		phase := PhaseOffline
		if dev.Online {
			d.SeenAt = &t
			phase = PhaseNotified
			seen++
		}
		p.changed[d.ID] = true
		p.setPhase(d, phase, "")
		budget--
	}
}

// rollback returns every device notified so far to the version it ran
// before and ends the rollout as rolled back. The desired states are
// sent by act.
func (p *pass) rollback(why string) {
	for _, d := range p.devs {
		if !d.notified() || d.Phase == PhaseRollingBack || d.Phase == PhaseRolledBack {
			continue
		}
		if d.Previous == "" {
			p.setPhase(d, PhaseRolledBack, "ran no earlier version: the model is taken out of its desired state")
			continue
		}
		p.setPhase(d, PhaseRollingBack, "to "+d.Previous)
	}
	p.end(StateRolledBack, why)
	p.event(Event{Type: EventRollback, Message: "rolling back: " + why})
}

// end moves the rollout to a final state and frees its devices.
func (p *pass) end(state, why string) {
	p.rec.State, p.rec.Reason = state, why
	t := p.now
	p.rec.EndedAt = &t
	p.dirty = true
}

// prepareRollbacks issues, once, the rollback manifest of each version
// devices are rolling back to.
func (p *pass) prepareRollbacks(ctx context.Context) error {
	for _, d := range p.devs {
		if d.Phase != PhaseRollingBack {
			continue
		}
		if _, ok := p.rec.Rollbacks[d.Previous]; ok {
			continue
		}
		env, _, err := p.e.reg.Manifest(ctx, p.rec.Spec.Model, d.Previous, registry.ManifestOptions{Rollback: true, HealthCheck: healthProto(p.rec.Spec.Health)})
		if err != nil {
			return fmt.Errorf("rollback manifest of %s %s: %w", p.rec.Spec.Model, d.Previous, err)
		}
		if p.rec.Rollbacks == nil {
			p.rec.Rollbacks = map[string][]byte{}
		}
		p.rec.Rollbacks[d.Previous] = env
		p.dirty = true
	}
	return nil
}

// refreshManifest re-signs the rollout's manifest when little of its
// lifetime is left, before more devices are sent it.
func (p *pass) refreshManifest(ctx context.Context) error {
	if p.rec.ExpiresAt.Sub(p.now) > refreshBefore {
		return nil
	}
	env, m, err := p.e.reg.Reissue(ctx, p.rec.Envelope, 0)
	if err != nil {
		return err
	}
	p.rec.Envelope = env
	p.rec.ExpiresAt = time.UnixMilli(m.GetExpiresAtUnixMs()).UTC()
	p.dirty = true
	return nil
}

// settled reports whether no device of an ended rollout can still change
// phase.
func (p *pass) settled(view map[string]fleet.Device) bool {
	for _, d := range p.devs {
		if !d.notified() {
			continue
		}
		switch d.Phase {
		case PhaseHealthy, PhaseFailed, PhaseRolledBack:
			continue
		}
		if dev, ok := view[d.ID]; ok && modelState(dev, p.rec.Spec.Model).DesiredVersion != p.rec.Spec.Version && d.Phase != PhaseRollingBack {
			continue
		}
		return false
	}
	return true
}

// act sends the desired states the stored decisions call for: the new
// version to notified devices that do not have it yet (while the rollout
// holds them), rollback manifests to devices rolling back whose desired
// state still holds the new version, and removals for devices that had
// no earlier version. Devices that already have what they should are
// left alone, so a pass repeated after a crash notifies no one twice.
func (p *pass) act(ctx context.Context, view map[string]fleet.Device) error {
	model, version := p.rec.Spec.Model, p.rec.Spec.Version
	holding := p.rec.State == StateRunning || p.rec.State == StatePaused
	var notify, clear []string
	back := map[string][]string{}
	for _, d := range p.devs {
		if !d.notified() {
			continue
		}
		desired := modelState(view[d.ID], model).DesiredVersion
		switch {
		case d.Phase == PhaseRollingBack && desired == version:
			back[d.Previous] = append(back[d.Previous], d.ID)
		case d.Phase == PhaseRolledBack && d.Previous == "" && desired == version:
			clear = append(clear, d.ID)
		case holding && d.Phase != PhaseRollingBack && d.Phase != PhaseRolledBack && desired != version:
			notify = append(notify, d.ID)
		}
	}
	var errs []error
	if len(notify) > 0 {
		if _, err := p.e.fl.SetDesired(ctx, model, p.rec.Envelope, notify); err != nil {
			errs = append(errs, fmt.Errorf("notify %d devices: %w", len(notify), err))
		}
		p.e.log.Info("rollout notified devices", "rollout", p.rec.ID, "stage", p.stage().Name, "devices", len(notify))
	}
	for _, prev := range sortedKeys(back) {
		env, ok := p.rec.Rollbacks[prev]
		if !ok {
			continue // no manifest yet; the next pass issues it
		}
		if _, err := p.e.fl.SetDesired(ctx, model, env, back[prev]); err != nil {
			errs = append(errs, fmt.Errorf("roll %d devices back to %s: %w", len(back[prev]), prev, err))
		}
	}
	if len(clear) > 0 {
		if _, err := p.e.fl.ClearDesired(ctx, model, clear); err != nil {
			errs = append(errs, fmt.Errorf("take %s out of the desired state of %d devices: %w", model, len(clear), err))
		}
	}
	return errors.Join(errs...)
}

// plural is "1 device", "2 devices".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func orNone(v string) string {
	if v == "" {
		return "no version"
	}
	return v
}

// setPhase changes a device's phase, with an event.
func (p *pass) setPhase(d *deviceRecord, phase, reason string) {
	if d.Phase == phase && d.Reason == reason {
		return
	}
	from := d.Phase
	d.Phase, d.Reason, d.ChangedAt = phase, reason, p.now
	p.changed[d.ID] = true
	msg := from + " → " + phase
	if reason != "" {
		msg += ": " + reason
	}
	stage := ""
	if d.Stage >= 0 {
		stage = p.rec.Spec.Stages[d.Stage].Name
	}
	p.event(Event{Type: EventDevice, Stage: stage, Device: d.ID, Phase: phase, Message: msg})
}

func (p *pass) event(ev Event) {
	ev.Time = p.now
	p.events = append(p.events, ev)
}

// persist writes the changed devices and the events, in chunks, then the
// rollout record and its locks.
func (p *pass) persist() error {
	var devs []*deviceRecord
	for _, d := range p.devs {
		if p.changed[d.ID] {
			devs = append(devs, d)
		}
	}
	if len(devs) == 0 && len(p.events) == 0 && !p.dirty {
		return nil
	}
	id := p.rec.ID
	events := p.events
	for len(devs) > 0 || len(events) > 0 {
		nd := min(len(devs), writeChunk)
		ne := min(len(events), writeChunk)
		dchunk, echunk := devs[:nd], events[:ne]
		err := store.Retry(p.e.st, storeAttempts, func(tx store.Tx) error {
			for _, d := range dchunk {
				if err := store.PutJSON(tx, deviceKey(id, d.ID), d); err != nil {
					return err
				}
			}
			return writeEvents(tx, id, echunk)
		})
		if err != nil {
			return err
		}
		devs, events = devs[nd:], events[ne:]
	}
	p.events, p.changed = nil, map[string]bool{}
	if !p.dirty {
		return nil
	}
	p.rec.UpdatedAt = p.now
	err := store.Retry(p.e.st, storeAttempts, func(tx store.Tx) error {
		if ended(p.rec.State) {
			// Free the devices this rollout still holds.
			for _, d := range p.devs {
				k := lockKey(p.rec.Spec.Model, d.ID)
				v, err := tx.Get(k)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return fmt.Errorf("read lock: %w", err)
				}
				if string(v) == id {
					if err := tx.Delete(k); err != nil {
						return fmt.Errorf("delete lock: %w", err)
					}
				}
			}
		}
		return store.PutJSON(tx, recordKey(id), p.rec)
	})
	if err != nil {
		return err
	}
	p.dirty = false
	return nil
}

// writeEvents appends events to rollout id's log.
func writeEvents(tx store.Tx, id string, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	for i := range events {
		seq, err := nextSeq(tx, eventSeqKey(id))
		if err != nil {
			return err
		}
		events[i].Seq = seq
		if err := store.PutJSON(tx, eventKey(id, seq), events[i]); err != nil {
			return err
		}
	}
	return nil
}

// modelState is the device's slot for model (zero if it has none).
func modelState(d fleet.Device, model string) fleet.ModelState {
	for _, m := range d.Models {
		if m.Name == model {
			return m
		}
	}
	return fleet.ModelState{}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
