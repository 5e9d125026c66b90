package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Token lifetimes.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 365 * 24 * time.Hour
	// tokenRetention is how long a spent or expired token's record is kept,
	// so that a late enrollment hears "used" or "expired" rather than "not
	// valid".
	tokenRetention = 7 * 24 * time.Hour
)

// maxSecretLen bounds a token or password we are willing to hash; ours are
// 43 characters.
const maxSecretLen = 256

// maxEnrollFieldLen bounds the agent version and profile given at
// enrollment.
const maxEnrollFieldLen = 128

// Token is a one-time enrollment token. Only its hash is stored: the token
// itself is shown once, to whoever asked for it.
type Token struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// EnrollRequest is what a device sends to enroll.
type EnrollRequest struct {
	Token        string
	DeviceID     string
	AgentVersion string
	Profile      string
	// Labels and Group are the device's initial labels and group (both
	// optional), as SetLabels would set them.
	Labels map[string]string
	Group  string
}

// Credentials are a device's MQTT credentials, issued once at enrollment.
type Credentials struct {
	DeviceID string
	Username string
	Password string
}

// CreateToken issues a one-time enrollment token valid for ttl (0 means
// DefaultTokenTTL). Errors: Invalid (ttl out of range).
func (s *Service) CreateToken(ctx context.Context, ttl time.Duration) (Token, error) {
	const op = "fleet.CreateToken"
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return Token{}, shoalerr.E(shoalerr.Invalid, op, "token lifetime %s is out of range; give one between 1s and %s", ttl, MaxTokenTTL)
	}
	tok, err := randomSecret()
	if err != nil {
		return Token{}, shoalerr.Wrap(err, shoalerr.Internal, op, "generate enrollment token")
	}
	now := s.now()
	rec := tokenRecord{CreatedAt: now, ExpiresAt: now.Add(ttl)}
	err = store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		if err := pruneTokens(tx, now); err != nil {
			return err
		}
		return store.PutJSON(tx, tokenKey(hashHex(tok)), rec)
	})
	if err != nil {
		return Token{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store enrollment token")
	}
	return Token{Token: tok, ExpiresAt: rec.ExpiresAt}, nil
}

// pruneTokens deletes token records spent or expired longer than
// tokenRetention ago.
func pruneTokens(tx store.Tx, now time.Time) error {
	var stale [][]byte
	err := tx.Scan([]byte(tokenPrefix), func(k, v []byte) error {
		var rec tokenRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			stale = append(stale, k) // unreadable: useless either way
			return nil
		}
		end := rec.ExpiresAt
		if rec.UsedAt != nil && rec.UsedAt.Before(end) {
			end = *rec.UsedAt
		}
		if now.Sub(end) > tokenRetention {
			stale = append(stale, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan enrollment tokens: %w", err)
	}
	for _, k := range stale {
		if err := tx.Delete(k); err != nil {
			return fmt.Errorf("delete stale token: %w", err)
		}
	}
	return nil
}

// Enroll consumes a token and creates the device, returning its MQTT
// credentials. Errors: Invalid (device id, labels, group, or agent version
// or profile too long), Unauthorized (token unknown, used or expired),
// Conflict (device id already enrolled).
func (s *Service) Enroll(ctx context.Context, req EnrollRequest) (Credentials, error) {
	const op = "fleet.Enroll"
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	if err := topics.ValidateDeviceID(req.DeviceID); err != nil {
		return Credentials{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot enroll")
	}
	for _, l := range []struct{ name, v string }{{"agent version", req.AgentVersion}, {"profile", req.Profile}} {
		if len(l.v) > maxEnrollFieldLen {
			return Credentials{}, shoalerr.E(shoalerr.Invalid, op, "%s is %d characters; at most %d are allowed", l.name, len(l.v), maxEnrollFieldLen)
		}
	}
	if err := checkLabels(req.Labels); err != nil {
		return Credentials{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot enroll %q", req.DeviceID)
	}
	if req.Group != "" {
		if err := checkGroup(req.Group); err != nil {
			return Credentials{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot enroll %q", req.DeviceID)
		}
	}
	var labels map[string]string
	if len(req.Labels) > 0 {
		labels = maps.Clone(req.Labels)
	}
	tok := strings.TrimSpace(req.Token)
	if tok == "" {
		return Credentials{}, shoalerr.E(shoalerr.Unauthorized, op, "enrollment token is missing; ask an operator for one (POST /api/v1/tokens)")
	}
	password, err := randomSecret()
	if err != nil {
		return Credentials{}, shoalerr.Wrap(err, shoalerr.Internal, op, "generate device password")
	}
	pwHash := sha256.Sum256([]byte(password))
	tokHash := hashHex(tok)
	if len(tok) > maxSecretLen {
		tokHash = "" // cannot be ours; looked up as unknown
	}

	err = store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		now := s.now()
		var trec tokenRecord
		found := false
		if tokHash != "" {
			var err error
			if found, err = store.GetJSON(tx, tokenKey(tokHash), &trec); err != nil {
				return err
			}
		}
		switch {
		case !found:
			return shoalerr.E(shoalerr.Unauthorized, op, "enrollment token is not valid; check it was copied whole, or ask for a new one")
		case trec.UsedAt != nil:
			return shoalerr.E(shoalerr.Unauthorized, op, "enrollment token has already been used; a token enrolls one device, so ask for a new one")
		case !now.Before(trec.ExpiresAt):
			return shoalerr.E(shoalerr.Unauthorized, op, "enrollment token expired at %s; ask for a new one", trec.ExpiresAt.Format(time.RFC3339))
		}
		if _, err := tx.Get(deviceKey(req.DeviceID)); err == nil {
			return shoalerr.E(shoalerr.Conflict, op, "device %q is already enrolled; enroll this device under another id", req.DeviceID)
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("read device %q: %w", req.DeviceID, err)
		}
		trec.UsedAt, trec.UsedBy = &now, req.DeviceID
		if err := store.PutJSON(tx, tokenKey(tokHash), trec); err != nil {
			return err
		}
		return store.PutJSON(tx, deviceKey(req.DeviceID), deviceRecord{
			ID:             req.DeviceID,
			EnrolledAt:     now,
			PasswordSHA256: pwHash[:],
			AgentVersion:   req.AgentVersion,
			Profile:        req.Profile,
			Labels:         labels,
			Group:          req.Group,
		})
	})
	if err != nil {
		var se *shoalerr.Error
		if errors.As(err, &se) {
			return Credentials{}, err
		}
		return Credentials{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store enrollment of %q", req.DeviceID)
	}
	return Credentials{DeviceID: req.DeviceID, Username: req.DeviceID, Password: password}, nil
}

// The embedded broker's Authenticator, restated so that the fleet need not
// import the broker.
var _ interface {
	Authenticate(username, password string) bool
} = (*Service)(nil)

// Authenticate reports whether password is the MQTT password of the
// enrolled device username. It satisfies broker.Authenticator.
func (s *Service) Authenticate(username, password string) bool {
	if topics.ValidateDeviceID(username) != nil || len(password) > maxSecretLen {
		return false
	}
	var rec deviceRecord
	var found bool
	err := s.st.View(func(tx store.Tx) error {
		var err error
		found, err = store.GetJSON(tx, deviceKey(username), &rec)
		return err
	})
	if err != nil {
		s.logLimited("auth-store", username, "cannot check device credentials", "device", username, "err", err)
		return false
	}
	got := sha256.Sum256([]byte(password))
	want := rec.PasswordSHA256
	if !found || len(want) != len(got) {
		want = make([]byte, len(got)) // compare anyway: same time for unknown ids
		subtle.ConstantTimeCompare(got[:], want)
		return false
	}
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// randomSecret returns 32 random bytes, base64url without padding.
func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
