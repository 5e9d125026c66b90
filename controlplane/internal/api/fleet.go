package api

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
)

// defaultTokenTTL is how long an enrollment token lives unless asked.
const defaultTokenTTL = 24 * time.Hour

type tokenRequest struct {
	TTL string `json:"ttl"`
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *server) createToken(c *gin.Context) {
	var req tokenRequest
	if err := decodeJSON(c, &req, true); err != nil {
		s.fail(c, err)
		return
	}
	ttl := defaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			s.fail(c, errInvalid("ttl %q is not a positive duration; write it like \"24h\" or \"30m\"", req.TTL))
			return
		}
		ttl = d
	}
	tok, err := s.Fleet.CreateToken(c.Request.Context(), ttl)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, tokenResponse{Token: tok.Token, ExpiresAt: tok.ExpiresAt.UTC()})
}

type enrollRequest struct {
	Token        string `json:"token"`
	DeviceID     string `json:"device_id"`
	AgentVersion string `json:"agent_version"`
	Profile      string `json:"profile"`
}

// enrollment is what a device keeps: its identity, where to connect, and
// the key it pins.
type enrollment struct {
	DeviceID          string `json:"device_id"`
	MQTTUsername      string `json:"mqtt_username"`
	MQTTPassword      string `json:"mqtt_password"`
	BrokerURL         string `json:"broker_url"`
	TopicPrefix       string `json:"topic_prefix"`
	TrustPublicKeyPEM string `json:"trust_public_key_pem"`
}

func (s *server) enroll(c *gin.Context) {
	var req enrollRequest
	if err := decodeJSON(c, &req, false); err != nil {
		s.fail(c, err)
		return
	}
	cred, err := s.Fleet.Enroll(c.Request.Context(), fleet.EnrollRequest{
		Token: req.Token, DeviceID: req.DeviceID, AgentVersion: req.AgentVersion, Profile: req.Profile,
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	brokerURL := ""
	if s.BrokerURL != nil {
		brokerURL = s.BrokerURL()
	}
	c.JSON(http.StatusOK, enrollment{
		DeviceID:          cred.DeviceID,
		MQTTUsername:      cred.Username,
		MQTTPassword:      cred.Password,
		BrokerURL:         brokerURL,
		TopicPrefix:       s.TopicPrefix,
		TrustPublicKeyPEM: string(s.PublicKeyPEM),
	})
}

func (s *server) listDevices(c *gin.Context) {
	devs, err := s.Fleet.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	if devs == nil {
		devs = []fleet.Device{}
	}
	c.JSON(http.StatusOK, gin.H{"devices": devs})
}

func (s *server) getDevice(c *gin.Context) {
	d, err := s.Fleet.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

type deployRequest struct {
	Model   string   `json:"model"`
	Version string   `json:"version"`
	Devices []string `json:"devices"`
	// Extensions (docs/API.md): an explicit rollback, the firmware profile
	// the artifact is for, and the manifest's lifetime.
	Rollback bool   `json:"rollback"`
	Profile  string `json:"profile"`
	TTL      string `json:"ttl"`
}

type deployResponse struct {
	Model           string       `json:"model"`
	Version         string       `json:"version"`
	ReleaseSequence uint64       `json:"release_sequence"`
	ExpiresAt       time.Time    `json:"expires_at"`
	Devices         []deployedTo `json:"devices"`
}

type deployedTo struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
}

// deploy signs a manifest for the version and makes it the desired state of
// the target devices. Targets are checked first, so that a typo in a device
// id costs no release sequence.
func (s *server) deploy(c *gin.Context) {
	ctx := c.Request.Context()
	var req deployRequest
	if err := decodeJSON(c, &req, false); err != nil {
		s.fail(c, err)
		return
	}
	if req.Model == "" || req.Version == "" {
		s.fail(c, errInvalid(`a deployment needs "model" and "version"; e.g. {"model":"summer","version":"1"}`))
		return
	}
	opts := registry.ManifestOptions{Profile: req.Profile, Rollback: req.Rollback}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			s.fail(c, errInvalid("ttl %q is not a positive duration; write it like \"720h\"", req.TTL))
			return
		}
		opts.TTL = d
	}
	if _, err := s.Registry.Get(ctx, req.Model, req.Version); err != nil {
		s.fail(c, err)
		return
	}
	targets, err := s.targets(c, req.Devices)
	if err != nil {
		s.fail(c, err)
		return
	}
	// From here on the deployment is a change of state: it completes even if
	// the client goes away.
	ctx = context.WithoutCancel(ctx)
	env, m, err := s.Registry.Manifest(ctx, req.Model, req.Version, opts)
	if err != nil {
		s.fail(c, err)
		return
	}
	results, err := s.Fleet.SetDesired(ctx, req.Model, env, targets)
	if err != nil {
		s.fail(c, err)
		return
	}
	resp := deployResponse{
		Model: req.Model, Version: req.Version,
		ReleaseSequence: m.GetReleaseSequence(),
		ExpiresAt:       time.UnixMilli(m.GetExpiresAtUnixMs()).UTC(),
		Devices:         make([]deployedTo, 0, len(results)),
	}
	for _, r := range results {
		resp.Devices = append(resp.Devices, deployedTo{ID: r.ID, Generation: r.Generation})
	}
	c.JSON(http.StatusOK, resp)
}

// targets returns the devices a deployment goes to: the listed ones, each
// checked to be enrolled, or nil for every enrolled device (the fleet
// resolves that when it sets the desired state).
func (s *server) targets(c *gin.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out := slices.Clone(ids)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, id := range out {
		if _, err := s.Fleet.Get(c.Request.Context(), id); err != nil {
			return nil, err
		}
	}
	return out, nil
}
