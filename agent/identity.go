package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/internal/buildinfo"
	"github.com/shoalfleet/shoal/internal/topics"
	"github.com/shoalfleet/shoal/internal/trust"
)

// identityFile is where an enrolled agent keeps its identity.
const identityFile = "identity.json"

// identity is what enrollment gives a device (docs/API.md, Enrollment),
// plus the server it enrolled with. It holds the MQTT password, so the file
// is 0600.
type identity struct {
	DeviceID          string    `json:"device_id"`
	MQTTUsername      string    `json:"mqtt_username"`
	MQTTPassword      string    `json:"mqtt_password"`
	BrokerURL         string    `json:"broker_url"`
	TopicPrefix       string    `json:"topic_prefix"`
	TrustPublicKeyPEM string    `json:"trust_public_key_pem"`
	ServerURL         string    `json:"server_url,omitempty"`
	EnrolledAt        time.Time `json:"enrolled_at,omitzero"`
}

// String keeps the password out of anything that prints an identity.
func (id identity) String() string {
	return fmt.Sprintf("device %s (broker %s, prefix %s)", id.DeviceID, id.BrokerURL, id.TopicPrefix)
}

func (id *identity) validate() error {
	if err := topics.ValidateDeviceID(id.DeviceID); err != nil {
		return err
	}
	if id.BrokerURL == "" {
		return errors.New("no broker_url")
	}
	if _, err := trust.NewVerifier([]byte(id.TrustPublicKeyPEM)); err != nil {
		return fmt.Errorf("trust_public_key_pem: %w", err)
	}
	return nil
}

// loadIdentity reads the identity in dir; ok is false if there is none.
func loadIdentity(dir string) (*identity, bool, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, false, fmt.Errorf("identity %s is not valid JSON (%v); restore it from a backup, or delete it and enroll again with a new token", path, err)
	}
	if err := id.validate(); err != nil {
		return nil, false, fmt.Errorf("identity %s: %v; restore it from a backup, or delete it and enroll again with a new token", path, err)
	}
	return &id, true, nil
}

// storeIdentity writes the identity atomically with mode 0600.
func storeIdentity(dir string, id *identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	f, err := os.CreateTemp(dir, ".identity-*.tmp")
	if err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write identity: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write identity: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write identity: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, identityFile)); err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	return nil
}

// enrollError is an enrollment the control plane refused; retrying with
// the same token cannot help.
type enrollError struct{ msg string }

func (e *enrollError) Error() string { return e.msg }

// enrollment is what a device enrolls with.
type enrollment struct {
	DeviceID string
	Token    Secret
	Profile  string
	Labels   map[string]string
	Group    string
}

// enrollRequest is the body of POST /v1/enroll (docs/API.md, Enrollment).
// Labels and group are left out when empty.
type enrollRequest struct {
	Token        string            `json:"token"`
	DeviceID     string            `json:"device_id"`
	AgentVersion string            `json:"agent_version"`
	Profile      string            `json:"profile"`
	Labels       map[string]string `json:"labels,omitempty"`
	Group        string            `json:"group,omitempty"`
}

// enroll exchanges the token for an identity (POST {server}/v1/enroll). A
// refusal is an *enrollError; any other error (network, 5xx) may be retried.
func enroll(ctx context.Context, client *http.Client, server string, e enrollment) (*identity, error) {
	deviceID := e.DeviceID
	u, err := url.JoinPath(server, "/v1/enroll")
	if err != nil {
		return nil, &enrollError{fmt.Sprintf("server URL %q: %v", server, err)}
	}
	body, err := json.Marshal(enrollRequest{
		Token:        e.Token.Reveal(),
		DeviceID:     deviceID,
		AgentVersion: buildinfo.Version,
		Profile:      e.Profile,
		Labels:       e.Labels,
		Group:        e.Group,
	})
	if err != nil {
		return nil, &enrollError{fmt.Sprintf("enroll: encode the request: %v", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, &enrollError{fmt.Sprintf("enroll at %s: %v", u, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shoal-agent/"+buildinfo.Version)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: read response: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := apiMessage(b)
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			return nil, &enrollError{fmt.Sprintf("the control plane at %s refused the enrollment token (%s): it is wrong, used or expired; create a new one with `shoal token create` and pass it with --enroll-token", server, msg)}
		case resp.StatusCode == http.StatusConflict:
			return nil, &enrollError{fmt.Sprintf("device id %q is already enrolled at %s (%s); if this is a reinstalled device, restore its %s, or enroll it under another --device-id", deviceID, server, msg, identityFile)}
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			return nil, &enrollError{fmt.Sprintf("the control plane at %s refused the enrollment: %s: %s", server, resp.Status, msg)}
		}
		return nil, fmt.Errorf("enroll at %s: %s: %s", u, resp.Status, msg)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("enroll at %s: the response is not an enrollment: %w", u, err)
	}
	if id.DeviceID != deviceID {
		return nil, &enrollError{fmt.Sprintf("enroll at %s: asked for device %q, the control plane enrolled %q", u, deviceID, id.DeviceID)}
	}
	if err := id.validate(); err != nil {
		return nil, &enrollError{fmt.Sprintf("enroll at %s: the enrollment is unusable: %v", u, err)}
	}
	id.ServerURL = server
	id.EnrolledAt = time.Now().UTC()
	return &id, nil
}

// apiMessage extracts the message of a control-plane error body
// ({"error":{"code","message"}}), or returns the body itself, shortened.
func apiMessage(b []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return "no details"
	}
	return s
}
