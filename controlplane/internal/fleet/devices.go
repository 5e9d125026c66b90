package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Device is a device as the API shows it (docs/API.md): what the control
// plane wants of it merged with what it last reported. Its Labels are
// never nil, so that they are {} in JSON; its Phase is PhaseName of the
// reported phase. ModelState is one model slot of a device.
type (
	Device     = apiv1.Device
	ModelState = apiv1.DeviceModel
)

// PhaseName is the API's name of a phase: the lower-case enum name without
// its PHASE_ prefix ("self_test"), or "unknown" for PHASE_UNSPECIFIED and
// values this build does not know.
func PhaseName(p shoalv1.Phase) string {
	if _, ok := shoalv1.Phase_name[int32(p)]; !ok || p == shoalv1.Phase_PHASE_UNSPECIFIED {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_"))
}

// List returns every enrolled device, by id.
func (s *Service) List(ctx context.Context) ([]Device, error) {
	return s.list(ctx, "fleet.List", Selector{})
}

// ListMatching returns the enrolled devices sel matches, by id. Errors:
// Invalid (a malformed label or group in sel).
func (s *Service) ListMatching(ctx context.Context, sel Selector) ([]Device, error) {
	if err := CheckSelector(sel); err != nil {
		return nil, err
	}
	return s.list(ctx, "fleet.ListMatching", sel)
}

func (s *Service) list(ctx context.Context, op string, sel Selector) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Device
	err := s.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(devicePrefix), func(k, v []byte) error {
			var rec deviceRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			if !sel.matches(rec.Labels, rec.Group) {
				return nil
			}
			var st stateRecord
			if _, err := store.GetJSON(tx, stateKey(rec.ID), &st); err != nil {
				return err
			}
			out = append(out, s.view(rec, st))
			return nil
		})
	})
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read devices")
	}
	return out, nil
}

// Devices returns the enrolled devices among ids, by id, read in one
// transaction; ids that are not enrolled (or not valid device ids) are
// absent from the map. It is for callers that follow a subset of a large
// fleet, where List would read every device.
func (s *Service) Devices(ctx context.Context, ids []string) (map[string]Device, error) {
	const op = "fleet.Devices"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[string]Device, len(ids))
	err := s.st.View(func(tx store.Tx) error {
		for _, id := range ids {
			if _, done := out[id]; done || topics.ValidateDeviceID(id) != nil {
				continue
			}
			var rec deviceRecord
			found, err := store.GetJSON(tx, deviceKey(id), &rec)
			if err != nil {
				return err
			}
			if !found {
				continue
			}
			var st stateRecord
			if _, err := store.GetJSON(tx, stateKey(id), &st); err != nil {
				return err
			}
			out[id] = s.view(rec, st)
		}
		return nil
	})
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read %d devices", len(ids))
	}
	return out, nil
}

// Get returns one device. Errors: NotFound.
func (s *Service) Get(ctx context.Context, id string) (Device, error) {
	const op = "fleet.Get"
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	if topics.ValidateDeviceID(id) != nil {
		return Device{}, shoalerr.E(shoalerr.NotFound, op, "device %q is not enrolled (and is not a valid device id)", id)
	}
	var rec deviceRecord
	var st stateRecord
	var found bool
	err := s.st.View(func(tx store.Tx) error {
		var err error
		if found, err = store.GetJSON(tx, deviceKey(id), &rec); err != nil || !found {
			return err
		}
		_, err = store.GetJSON(tx, stateKey(id), &st)
		return err
	})
	if err != nil {
		return Device{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read device %q", id)
	}
	if !found {
		return Device{}, shoalerr.E(shoalerr.NotFound, op, "device %q is not enrolled", id)
	}
	return s.view(rec, st), nil
}

// view merges what the control plane wants of a device with what the
// device last reported.
func (s *Service) view(rec deviceRecord, st stateRecord) Device {
	d := Device{
		ID:                rec.ID,
		Online:            st.Online,
		EnrolledAt:        rec.EnrolledAt,
		AgentVersion:      rec.AgentVersion,
		Profile:           rec.Profile,
		Labels:            maps.Clone(rec.Labels),
		Group:             rec.Group,
		Phase:             "unknown",
		DesiredGeneration: rec.Generation,
		Models:            []ModelState{},
	}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	last := st.LastSeen
	if t := s.lastActive(rec.ID); t.After(last) {
		last = t
	}
	if !last.IsZero() {
		d.LastSeen = &last
	}
	var status shoalv1.DeviceStatus
	if len(st.Status) > 0 && proto.Unmarshal(st.Status, &status) == nil && status.GetAgentVersion() != "" {
		d.AgentVersion = status.GetAgentVersion()
	}
	models := map[string]*ModelState{}
	slot := func(name string) *ModelState {
		m := models[name]
		if m == nil {
			m = &ModelState{Name: name, Phase: "unknown"}
			models[name] = m
		}
		return m
	}
	for name, dm := range rec.Desired {
		slot(name).DesiredVersion = dm.Version
	}
	var rep shoalv1.ReportedState
	if len(st.Reported) > 0 && proto.Unmarshal(st.Reported, &rep) == nil {
		d.Phase = PhaseName(rep.GetPhase())
		d.Error = rep.GetError()
		d.AppliedGeneration = rep.GetAppliedGeneration()
		if v := rep.GetAgentVersion(); v != "" {
			d.AgentVersion = v
		}
		if p := rep.GetProfile(); p != "" {
			d.Profile = p
		}
		for _, ms := range rep.GetModels() {
			if ms.GetName() == "" {
				continue
			}
			m := slot(ms.GetName())
			m.ActiveVersion = ms.GetActive().GetVersion()
			m.PreviousVersion = ms.GetPrevious().GetVersion()
			m.TargetVersion = ms.GetDesired().GetVersion()
			m.Phase = PhaseName(ms.GetPhase())
			m.Error = ms.GetError()
			m.Healthy = ms.GetHealthy()
			if since := ms.GetActiveSinceUnixMs(); since > 0 {
				t := time.UnixMilli(since).UTC()
				m.ActiveSince = &t
			}
		}
	}
	for _, m := range models {
		d.Models = append(d.Models, *m)
	}
	sort.Slice(d.Models, func(i, j int) bool { return d.Models[i].Name < d.Models[j].Name })
	return d
}
