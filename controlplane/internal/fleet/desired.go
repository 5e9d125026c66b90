package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// SchemaVersion is the schema_version of the messages this package writes
// and accepts.
const SchemaVersion = 1

// MaxDesiredStateBytes bounds one device's encoded DesiredState. It stays
// under the embedded broker's 8 MiB packet limit (broker.MaxPacketBytes)
// with room for the topic and MQTT header.
const MaxDesiredStateBytes = 8<<20 - 64<<10

// desiredChunk is how many devices one transaction of SetDesired updates
// (a variable so tests can make it small). Badger bounds a transaction's
// size; a deployment to a large fleet is committed in chunks, each
// device's change atomic on its own.
var desiredChunk = 500

// DesiredResult is the desired-state generation of one device after a
// change: the new one, or the current one if the device needed no change.
type DesiredResult struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
}

// SetDesired makes envelope (a DSSE envelope JSON whose payload is the
// DeploymentManifest of modelName) part of the desired state of each device
// in deviceIDs, or of every enrolled device if deviceIDs is empty. Each
// device's generation is bumped and its DesiredState stored, then
// published retained on its desired topic. A device whose desired state
// already holds exactly this envelope for modelName is left alone: no new
// generation, nothing stored or published, so that a deployment repeated
// (by an operator, or a rollout re-applying a wave) costs the devices
// nothing. Devices are handled in id order, in chunks of a few hundred,
// each chunk stored in one transaction and then published.
//
// The results list every target device, by id, with its generation: the
// new one, or the current one of a device left alone.
//
// Errors: Invalid (model name, envelope), NotFound (a device is not
// enrolled; nothing is changed), TooLarge (a device's desired state would
// not fit one MQTT message), Unavailable (stored, but publishing failed
// for some devices; Republish sends them again). Results are returned with
// an error for the devices that were handled before it.
func (s *Service) SetDesired(ctx context.Context, modelName string, envelope []byte, deviceIDs []string) ([]DesiredResult, error) {
	const op = "fleet.SetDesired"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateName(modelName); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot deploy")
	}
	if len(envelope) > trust.MaxEnvelopeBytes {
		return nil, shoalerr.E(shoalerr.TooLarge, op, "manifest envelope for model %q is %d bytes; the limit is %d", modelName, len(envelope), trust.MaxEnvelopeBytes)
	}
	manifest, err := openManifest(envelope)
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "manifest envelope for model %q", modelName)
	}
	if manifest.GetModelName() != modelName {
		return nil, shoalerr.E(shoalerr.Invalid, op, "manifest envelope is for model %q, not %q", manifest.GetModelName(), modelName)
	}
	envSum := sha256.Sum256(envelope)
	envHex := hex.EncodeToString(envSum[:])
	want := desiredModel{Version: manifest.GetModelVersion(), EnvelopeSHA256: envHex}

	s.desiredMu.Lock()
	defer s.desiredMu.Unlock()

	ids, err := s.targets(op, deviceIDs, "nothing was deployed")
	if err != nil {
		return nil, err
	}
	results, changed, err := s.applyDesired(ctx, op, ids, map[string][]byte{envHex: envelope}, fmt.Sprintf("with model %q", modelName),
		func(rec *deviceRecord) bool {
			if cur, ok := rec.Desired[modelName]; ok && cur == want {
				return false
			}
			if rec.Desired == nil {
				rec.Desired = map[string]desiredModel{}
			}
			rec.Desired[modelName] = want
			return true
		})
	if err != nil {
		return results, err
	}
	s.log.Debug("desired state set", "model", modelName, "version", want.Version, "devices", len(results), "changed", changed)
	return results, nil
}

// ClearDesired removes modelName from the desired state of each device in
// deviceIDs, or of every enrolled device if deviceIDs is empty: the agent
// then stops serving it. Each device that had it gets a new generation,
// its DesiredState stored and then published retained, as SetDesired
// does; a device without it is left alone. Manifest envelopes no device
// uses any more are then deleted.
//
// The results list every target device, by id, with its generation: the
// new one, or the current one of a device left alone.
//
// Errors: Invalid (model name), NotFound (a device is not enrolled;
// nothing is changed), Unavailable (stored, but publishing failed for some
// devices; Republish sends them again). Results are returned with an
// error for the devices that were handled before it.
func (s *Service) ClearDesired(ctx context.Context, modelName string, deviceIDs []string) ([]DesiredResult, error) {
	const op = "fleet.ClearDesired"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateName(modelName); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot remove a model")
	}

	s.desiredMu.Lock()
	defer s.desiredMu.Unlock()

	ids, err := s.targets(op, deviceIDs, "nothing was removed")
	if err != nil {
		return nil, err
	}
	results, changed, err := s.applyDesired(ctx, op, ids, nil, fmt.Sprintf("without model %q", modelName),
		func(rec *deviceRecord) bool {
			if _, ok := rec.Desired[modelName]; !ok {
				return false
			}
			delete(rec.Desired, modelName)
			return true
		})
	if changed > 0 {
		if err := store.Retry(s.st, storeAttempts, deleteUnusedEnvelopes); err != nil {
			// Garbage left behind costs disk, not correctness.
			s.log.Warn("cannot delete unused manifest envelopes", "err", err)
		}
	}
	if err != nil {
		return results, err
	}
	s.log.Debug("desired state cleared", "model", modelName, "devices", len(results), "changed", changed)
	return results, nil
}

// applyDesired changes the desired state of the devices ids (sorted, each
// enrolled) with edit, persisting before publishing: in chunks of
// desiredChunk devices, each chunk stored in one transaction and then
// published. A device that edit changes (edit returns true) gets its
// generation bumped, its DesiredState stored and then published retained;
// one that edit leaves alone (edit returns false, and must then not have
// changed rec) is neither stored nor published. envs holds the envelopes,
// by hex SHA-256, that edit may point devices at; each one a changed
// device uses is stored with it. what says what was changed, for the
// error about a desired state too large to publish. The caller holds
// desiredMu.
//
// It returns a result for every device handled, changed or not, with its
// generation (new, or current), and how many of them were changed.
//
// Errors as SetDesired's, under op. Results are returned with an error for
// the devices that were handled before it, or nil if none were.
func (s *Service) applyDesired(ctx context.Context, op string, ids []string, envs map[string][]byte, what string, edit func(rec *deviceRecord) bool) ([]DesiredResult, int, error) {
	results := make([]DesiredResult, 0, len(ids))
	changed := 0
	var pub publishFailures
	for start := 0; start < len(ids); start += desiredChunk {
		chunk := ids[start:min(start+desiredChunk, len(ids))]
		var res []DesiredResult
		var msgs []published
		err := ctx.Err()
		if err == nil {
			err = store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
				res, msgs = res[:0], msgs[:0]
				cache := envelopeCache{tx: tx, m: maps.Clone(envs)}
				if cache.m == nil {
					cache.m = map[string][]byte{}
				}
				stored := map[string]bool{}
				issued := s.now().UnixMilli()
				for _, id := range chunk {
					var rec deviceRecord
					found, err := store.GetJSON(tx, deviceKey(id), &rec)
					if err != nil {
						return err
					}
					if !found {
						return shoalerr.E(shoalerr.NotFound, op, "device %q is not enrolled", id)
					}
					if !edit(&rec) {
						res = append(res, DesiredResult{ID: id, Generation: rec.Generation})
						continue
					}
					rec.Generation++
					rec.IssuedAtUnixMs = issued
					for _, dm := range rec.Desired {
						sum := dm.EnvelopeSHA256
						if env, ok := envs[sum]; ok && !stored[sum] {
							if err := tx.Set(envelopeKey(sum), env); err != nil {
								return fmt.Errorf("write manifest envelope: %w", err)
							}
							stored[sum] = true
						}
					}
					msg, err := desiredState(rec, cache.get)
					if err != nil {
						return err
					}
					if len(msg) > MaxDesiredStateBytes {
						return shoalerr.E(shoalerr.TooLarge, op, "desired state of device %q would be %d bytes %s; one MQTT message holds at most %d", id, len(msg), what, MaxDesiredStateBytes)
					}
					if err := store.PutJSON(tx, deviceKey(id), rec); err != nil {
						return err
					}
					res = append(res, DesiredResult{ID: id, Generation: rec.Generation})
					msgs = append(msgs, published{id: id, payload: msg})
				}
				return nil
			})
		}
		if err != nil {
			if _, ok := errors.AsType[*shoalerr.Error](err); !ok && ctx.Err() == nil {
				err = shoalerr.Wrap(err, shoalerr.Internal, op, "store desired state")
			}
			if len(results) == 0 {
				return nil, 0, err
			}
			return results, changed, errors.Join(err, pub.err(op, changed))
		}
		results = append(results, res...)
		changed += len(msgs)
		s.publish(msgs, &pub)
	}
	if err := pub.err(op, changed); err != nil {
		return results, changed, err
	}
	return results, changed, nil
}

// targets returns the devices a change of desired state goes to, sorted
// and without duplicates, checking that every one is enrolled; ids empty
// means every enrolled device. nothing says, for the error, that the
// change was not made.
func (s *Service) targets(op string, ids []string, nothing string) ([]string, error) {
	var out []string
	var missing []string
	err := s.st.View(func(tx store.Tx) error {
		if len(ids) == 0 {
			return tx.Scan([]byte(devicePrefix), func(k, _ []byte) error {
				out = append(out, strings.TrimPrefix(string(k), devicePrefix))
				return nil
			})
		}
		out = append([]string(nil), ids...)
		sort.Strings(out)
		out = compact(out)
		for _, id := range out {
			if topics.ValidateDeviceID(id) != nil {
				missing = append(missing, id)
				continue
			}
			if _, err := tx.Get(deviceKey(id)); errors.Is(err, store.ErrNotFound) {
				missing = append(missing, id)
			} else if err != nil {
				return fmt.Errorf("read device %q: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Internal, op, "read devices")
	}
	switch {
	case len(missing) == 1:
		return nil, shoalerr.E(shoalerr.NotFound, op, "device %q is not enrolled; %s", missing[0], nothing)
	case len(missing) > 1:
		return nil, shoalerr.E(shoalerr.NotFound, op, "%d devices are not enrolled (%s); %s", len(missing), listSome(missing), nothing)
	}
	return out, nil
}

// published is a DesiredState to publish.
type published struct {
	id      string
	payload []byte
}

// publishFailures collects the devices whose desired state could not be
// published.
type publishFailures struct {
	ids  []string
	errs []error
}

func (s *Service) publish(msgs []published, f *publishFailures) {
	for _, m := range msgs {
		if err := s.bus.Publish(s.scheme.Device(m.id, topics.Desired), m.payload, true); err != nil {
			f.ids = append(f.ids, m.id)
			f.errs = append(f.errs, err)
		}
	}
}

// err returns nil if everything was published, or an Unavailable error
// naming the devices that were not.
func (f *publishFailures) err(op string, stored int) error {
	if len(f.ids) == 0 {
		return nil
	}
	return shoalerr.Wrap(errors.Join(f.errs...), shoalerr.Unavailable, op,
		"desired state stored for %d devices but not published to %d of them (%s); they get it on the next republish (control plane start) or change",
		stored, len(f.ids), listSome(f.ids))
}

// republishChunk is how many devices' desired states Republish holds in
// memory at once.
const republishChunk = 100

// Republish publishes every device's stored desired state again (retained),
// for a broker that may have lost its retained messages, and deletes
// manifest envelopes no device refers to any more. Errors: Unavailable
// (some publishes failed; the rest were made).
func (s *Service) Republish(ctx context.Context) error {
	const op = "fleet.Republish"
	s.desiredMu.Lock()
	defer s.desiredMu.Unlock()

	var ids []string
	err := s.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(devicePrefix), func(k, v []byte) error {
			var rec deviceRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			if rec.Generation > 0 {
				ids = append(ids, rec.ID)
			}
			return nil
		})
	})
	if err != nil {
		return shoalerr.Wrap(err, shoalerr.Internal, op, "read devices")
	}
	var pub publishFailures
	for start := 0; start < len(ids); start += republishChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		var msgs []published
		err := s.st.View(func(tx store.Tx) error {
			envs := envelopeCache{tx: tx, m: map[string][]byte{}}
			for _, id := range ids[start:min(start+republishChunk, len(ids))] {
				var rec deviceRecord
				if _, err := store.GetJSON(tx, deviceKey(id), &rec); err != nil {
					return err
				}
				msg, err := desiredState(rec, envs.get)
				if err != nil {
					return err
				}
				msgs = append(msgs, published{id: id, payload: msg})
			}
			return nil
		})
		if err != nil {
			return shoalerr.Wrap(err, shoalerr.Internal, op, "read desired states")
		}
		s.publish(msgs, &pub)
	}
	if err := store.Retry(s.st, storeAttempts, deleteUnusedEnvelopes); err != nil {
		// Garbage left behind costs disk, not correctness.
		s.log.Warn("cannot delete unused manifest envelopes", "err", err)
	}
	if err := pub.err(op, len(ids)); err != nil {
		return err
	}
	s.log.Info("desired state republished", "devices", len(ids))
	return nil
}

// deleteUnusedEnvelopes deletes stored envelopes no device's desired state
// refers to (replaced by a later deployment).
func deleteUnusedEnvelopes(tx store.Tx) error {
	used := map[string]bool{}
	err := tx.Scan([]byte(devicePrefix), func(k, v []byte) error {
		var rec deviceRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		for _, dm := range rec.Desired {
			used[dm.EnvelopeSHA256] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	var unused [][]byte
	err = tx.Scan([]byte(envelopePrefix), func(k, _ []byte) error {
		if !used[strings.TrimPrefix(string(k), envelopePrefix)] {
			unused = append(unused, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range unused {
		if err := tx.Delete(k); err != nil {
			return fmt.Errorf("delete unused envelope: %w", err)
		}
	}
	return nil
}

// desiredState encodes a device's DesiredState: its deployments sorted by
// model name.
func desiredState(rec deviceRecord, envelope func(sum string) ([]byte, error)) ([]byte, error) {
	names := make([]string, 0, len(rec.Desired))
	for name := range rec.Desired {
		names = append(names, name)
	}
	sort.Strings(names)
	ds := &shoalv1.DesiredState{
		SchemaVersion:  SchemaVersion,
		Generation:     rec.Generation,
		IssuedAtUnixMs: rec.IssuedAtUnixMs,
	}
	for _, name := range names {
		env, err := envelope(rec.Desired[name].EnvelopeSHA256)
		if err != nil {
			return nil, fmt.Errorf("desired state of device %q, model %q: %w", rec.ID, name, err)
		}
		ds.Deployments = append(ds.Deployments, env)
	}
	b, err := proto.Marshal(ds)
	if err != nil {
		return nil, fmt.Errorf("encode desired state of device %q: %w", rec.ID, err)
	}
	return b, nil
}

// envelopeCache reads stored envelopes once per transaction.
type envelopeCache struct {
	tx store.Tx
	m  map[string][]byte
}

func (c envelopeCache) get(sum string) ([]byte, error) {
	if b, ok := c.m[sum]; ok {
		return b, nil
	}
	b, err := c.tx.Get(envelopeKey(sum))
	if err != nil {
		return nil, fmt.Errorf("read manifest envelope %s: %w", sum, err)
	}
	c.m[sum] = b
	return b, nil
}

// openManifest decodes (without verifying: the control plane signed it) a
// DSSE envelope's DeploymentManifest.
func openManifest(envelope []byte) (*shoalv1.DeploymentManifest, error) {
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
		Signatures  []struct {
			Sig string `json:"sig"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("is not DSSE envelope JSON: %w", err)
	}
	if env.PayloadType != trust.ManifestPayloadType {
		return nil, fmt.Errorf("has payload type %q; want %q", env.PayloadType, trust.ManifestPayloadType)
	}
	if len(env.Signatures) == 0 {
		return nil, errors.New("is not signed")
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		if payload, err = base64.URLEncoding.DecodeString(env.Payload); err != nil {
			return nil, fmt.Errorf("payload is not base64: %w", err)
		}
	}
	var m shoalv1.DeploymentManifest
	if err := protojson.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("payload is not a DeploymentManifest: %w", err)
	}
	if m.GetModelVersion() == "" {
		return nil, errors.New("manifest names no model version")
	}
	return &m, nil
}

// validateName checks a model name (names.Check).
func validateName(name string) error { return names.Check("model name", name) }

func compact(sorted []string) []string {
	out := sorted[:0]
	for i, s := range sorted {
		if i == 0 || s != sorted[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// listSome names up to five items, for a message.
func listSome(ids []string) string {
	if len(ids) <= 5 {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:5], ", ") + fmt.Sprintf(" and %d more", len(ids)-5)
}
