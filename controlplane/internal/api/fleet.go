package api

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// defaultTokenTTL is how long an enrollment token lives unless asked.
const defaultTokenTTL = 24 * time.Hour

func (s *server) createToken(c *gin.Context) {
	var req apiv1.TokenRequest
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
	c.JSON(http.StatusCreated, apiv1.Token{Token: tok.Token, ExpiresAt: tok.ExpiresAt.UTC()})
}

func (s *server) enroll(c *gin.Context) {
	var req apiv1.EnrollRequest
	if err := decodeJSON(c, &req, false); err != nil {
		s.fail(c, err)
		return
	}
	cred, err := s.Fleet.Enroll(c.Request.Context(), fleet.EnrollRequest{
		Token: req.Token, DeviceID: req.DeviceID, AgentVersion: req.AgentVersion, Profile: req.Profile,
		Labels: req.Labels, Group: req.Group,
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	brokerURL := ""
	if s.BrokerURL != nil {
		brokerURL = s.BrokerURL()
	}
	c.JSON(http.StatusOK, apiv1.Enrollment{
		DeviceID:          cred.DeviceID,
		MQTTUsername:      cred.Username,
		MQTTPassword:      cred.Password,
		BrokerURL:         brokerURL,
		TopicPrefix:       s.TopicPrefix,
		TrustPublicKeyPEM: string(s.PublicKeyPEM),
	})
}

// listDevices lists the enrolled devices, or those that match the query's
// label selector (?selector=k=v,k2=v2) and group (?group=g).
func (s *server) listDevices(c *gin.Context) {
	labels, err := fleet.ParseSelector(c.Query("selector"))
	if err != nil {
		s.fail(c, err)
		return
	}
	devs, err := s.Fleet.ListMatching(c.Request.Context(), fleet.Selector{Labels: labels, Group: c.Query("group")})
	if err != nil {
		s.fail(c, err)
		return
	}
	if devs == nil {
		devs = []fleet.Device{}
	}
	c.JSON(http.StatusOK, apiv1.DeviceList{Devices: devs})
}

func (s *server) getDevice(c *gin.Context) {
	d, err := s.Fleet.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

func (s *server) patchDevice(c *gin.Context) {
	// The patch is an apiv1.DevicePatch whose "group" is read raw, to tell
	// absent (keep) from null (clear): this Group hides the patch's.
	var req struct {
		apiv1.DevicePatch
		Group json.RawMessage `json:"group"`
	}
	if err := decodeJSON(c, &req, false); err != nil {
		s.fail(c, err)
		return
	}
	var group *string
	if len(req.Group) > 0 {
		g := ""
		if string(req.Group) != "null" {
			if err := json.Unmarshal(req.Group, &g); err != nil {
				s.fail(c, errInvalid(`"group" is %.40s, not a string; give a group name, or null or "" to take the device out of its group`, req.Group))
				return
			}
		}
		group = &g
	}
	// A label change completes even if the client goes away.
	d, err := s.Fleet.SetLabels(context.WithoutCancel(c.Request.Context()), c.Param("id"), req.Labels, group)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

// deploy signs a manifest for the version and makes it the desired state of
// the target devices. Targets are checked first, so that a typo in a device
// id costs no release sequence.
func (s *server) deploy(c *gin.Context) {
	ctx := c.Request.Context()
	var req apiv1.DeployRequest
	if err := decodeJSON(c, &req, false); err != nil {
		s.fail(c, err)
		return
	}
	if req.Model == "" || req.Version == "" {
		s.fail(c, errInvalid(`a deployment needs "model" and "version"; e.g. {"model":"summer","version":"1"}`))
		return
	}
	opts := registry.ManifestOptions{Profile: req.Profile, Rollback: req.Rollback, CaptureShare: req.CaptureShare}
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
	if err := s.notInRollout(req.Model, targets); err != nil {
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
	resp := apiv1.Deployment{
		Model: req.Model, Version: req.Version,
		ReleaseSequence: m.GetReleaseSequence(),
		ExpiresAt:       time.UnixMilli(m.GetExpiresAtUnixMs()).UTC(),
		Devices:         make([]apiv1.DeployedDevice, 0, len(results)),
	}
	for _, r := range results {
		resp.Devices = append(resp.Devices, apiv1.DeployedDevice{ID: r.ID, Generation: r.Generation})
	}
	c.JSON(http.StatusOK, resp)
}

// notInRollout refuses a direct deployment to devices that a running or
// paused rollout of the model holds: the two would fight over them.
func (s *server) notInRollout(model string, targets []string) error {
	if s.Rollouts == nil {
		return nil
	}
	held, err := s.Rollouts.Locked(model, targets)
	if err != nil {
		return err
	}
	if len(held) == 0 {
		return nil
	}
	byRollout := map[string][]string{}
	for dev, id := range held {
		byRollout[id] = append(byRollout[id], dev)
	}
	ids := slices.Sorted(maps.Keys(byRollout))
	devs := byRollout[ids[0]]
	slices.Sort(devs)
	return shoalerr.E(shoalerr.Conflict, "api.deploy", "%d device(s) (%s) are in rollout %s of model %s; abort it, or roll out this version instead (shoal rollout create --supersede)",
		len(held), strings.Join(devs[:min(3, len(devs))], ", "), strings.Join(ids, ", "), model)
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
