package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// RefreshResult says what one Refresh did.
type RefreshResult struct {
	Envelopes int // manifest envelopes re-signed
	Devices   int // devices pointed at re-signed envelopes (stored, and published unless an error says otherwise)
}

// Refresh keeps the desired state from expiring. Agents refuse an expired
// manifest, so a device that comes back after longer than a manifest's
// lifetime could not converge on a desired state that was never re-signed.
//
// Every stored envelope that some device's desired state still uses, and
// whose manifest expires before expiringBefore (or has no expiry), is given
// once to reissue, which returns a new envelope for the same model version
// (the registry's Reissue). Every device using it is pointed at the new
// envelope, its generation bumped and its DesiredState stored and then
// published, as SetDesired does. Devices using none of them are neither
// stored nor published. After a change, envelopes no device uses any more
// are deleted.
//
// An envelope that cannot be re-signed is left as it is and named in the
// error, and the others are still refreshed.
//
// Errors: Internal (reading the store; an envelope reissue failed on or
// returned something other than a later manifest of the same release),
// those of SetDesired for storing and publishing, and ctx's. The result
// counts what was done before an error too.
func (s *Service) Refresh(ctx context.Context, expiringBefore time.Time, reissue func(envelope []byte) ([]byte, error)) (RefreshResult, error) {
	const op = "fleet.Refresh"
	if err := ctx.Err(); err != nil {
		return RefreshResult{}, err
	}
	s.desiredMu.Lock()
	defer s.desiredMu.Unlock()

	stale, users, failed, err := s.expiringEnvelopes(expiringBefore.UnixMilli())
	if err != nil {
		return RefreshResult{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read desired states")
	}

	// Re-sign outside any transaction: replaced maps each old envelope's
	// digest to its new one's.
	replaced := map[string]string{}
	envs := map[string][]byte{}
	var ids []string
	for _, x := range stale {
		if err := ctx.Err(); err != nil {
			return RefreshResult{}, err
		}
		env, err := reissue(x.envelope)
		if err == nil {
			err = checkReissued(x.manifest, env)
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("manifest of %s %s (release %d, envelope %.12s, used by %d devices): %w",
				x.manifest.GetModelName(), x.manifest.GetModelVersion(), x.manifest.GetReleaseSequence(), x.sum, len(users[x.sum]), err))
			continue
		}
		sum := sha256.Sum256(env)
		replaced[x.sum] = hex.EncodeToString(sum[:])
		envs[replaced[x.sum]] = env
		ids = append(ids, users[x.sum]...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	_, changed, err := s.applyDesired(ctx, op, ids, envs, "with re-signed manifests", func(rec *deviceRecord) bool {
		changed := false
		for name, dm := range rec.Desired {
			if sum, ok := replaced[dm.EnvelopeSHA256]; ok {
				dm.EnvelopeSHA256 = sum
				rec.Desired[name] = dm
				changed = true
			}
		}
		return changed
	})
	res := RefreshResult{Envelopes: len(replaced), Devices: changed}
	if changed > 0 {
		if err := store.Retry(s.st, storeAttempts, deleteUnusedEnvelopes); err != nil {
			// Garbage left behind costs disk, not correctness.
			s.log.Warn("cannot delete replaced manifest envelopes", "err", err)
		}
	}
	if len(failed) > 0 {
		err = errors.Join(err, shoalerr.Wrap(errors.Join(failed...), shoalerr.Internal, op,
			"%d manifest envelopes could not be re-signed (%d were); the devices using them keep the old ones, which agents refuse once expired, until a later pass or a new deployment replaces them",
			len(failed), len(replaced)))
	}
	if res.Envelopes > 0 {
		s.log.Debug("desired state refreshed", "envelopes", res.Envelopes, "devices", res.Devices)
	}
	return res, err
}

// staleEnvelope is a stored envelope whose manifest is about to expire.
type staleEnvelope struct {
	sum      string // hex SHA-256, its key under envelopePrefix
	envelope []byte
	manifest *shoalv1.DeploymentManifest
}

// expiringEnvelopes returns the stored envelopes some device uses whose
// manifests expire before the given time, by digest; which devices use
// each envelope; and an error for each stored envelope that cannot be
// decoded.
func (s *Service) expiringEnvelopes(beforeUnixMs int64) (stale []staleEnvelope, users map[string][]string, bad []error, err error) {
	users = map[string][]string{}
	err = s.st.View(func(tx store.Tx) error {
		err := tx.Scan([]byte(devicePrefix), func(k, v []byte) error {
			var rec deviceRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			for _, dm := range rec.Desired {
				users[dm.EnvelopeSHA256] = append(users[dm.EnvelopeSHA256], rec.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, sum := range slices.Sorted(maps.Keys(users)) {
			env, err := tx.Get(envelopeKey(sum))
			if errors.Is(err, store.ErrNotFound) {
				bad = append(bad, fmt.Errorf("manifest envelope %s (used by %d devices) is missing from the store", sum, len(users[sum])))
				continue
			}
			if err != nil {
				return fmt.Errorf("read manifest envelope %s: %w", sum, err)
			}
			m, err := openManifest(env)
			if err != nil {
				bad = append(bad, fmt.Errorf("stored manifest envelope %s (used by %d devices) %w", sum, len(users[sum]), err))
				continue
			}
			if m.GetExpiresAtUnixMs() < beforeUnixMs {
				stale = append(stale, staleEnvelope{sum: sum, envelope: env, manifest: m})
			}
		}
		return nil
	})
	return stale, users, bad, err
}

// checkReissued checks that env is a re-signed old: a manifest of the same
// release that expires later.
func checkReissued(old *shoalv1.DeploymentManifest, env []byte) error {
	if len(env) > trust.MaxEnvelopeBytes {
		return fmt.Errorf("re-signed envelope is %d bytes; the limit is %d", len(env), trust.MaxEnvelopeBytes)
	}
	m, err := openManifest(env)
	if err != nil {
		return fmt.Errorf("re-signed envelope %w", err)
	}
	if m.GetModelName() != old.GetModelName() || m.GetModelVersion() != old.GetModelVersion() ||
		m.GetReleaseSequence() != old.GetReleaseSequence() || m.GetArtifact().GetSha256() != old.GetArtifact().GetSha256() {
		return fmt.Errorf("re-signed envelope is for %s %s release %d (artifact %s); want the same release",
			m.GetModelName(), m.GetModelVersion(), m.GetReleaseSequence(), m.GetArtifact().GetSha256())
	}
	if m.GetExpiresAtUnixMs() <= old.GetExpiresAtUnixMs() {
		return fmt.Errorf("re-signed manifest expires at %s, no later than the old one (%s)",
			time.UnixMilli(m.GetExpiresAtUnixMs()).UTC().Format(time.RFC3339), time.UnixMilli(old.GetExpiresAtUnixMs()).UTC().Format(time.RFC3339))
	}
	return nil
}
