package apiv1

import "time"

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	// TTL is how long the token is valid, a duration string ("24h" if "").
	TTL string `json:"ttl,omitempty"`
}

// Token is a one-time enrollment token.
type Token struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// EnrollRequest is the body of POST /v1/enroll, which agents call.
type EnrollRequest struct {
	Token        string `json:"token"`
	DeviceID     string `json:"device_id"`
	AgentVersion string `json:"agent_version"`
	Profile      string `json:"profile"`
	// Labels and Group are the device's initial labels and group
	// (optional).
	Labels map[string]string `json:"labels"`
	Group  string            `json:"group"`
}

// Enrollment is what an enrolled device keeps: its identity, where to
// connect, and the key it pins.
type Enrollment struct {
	DeviceID          string `json:"device_id"`
	MQTTUsername      string `json:"mqtt_username"`
	MQTTPassword      string `json:"mqtt_password"`
	BrokerURL         string `json:"broker_url"`
	TopicPrefix       string `json:"topic_prefix"`
	TrustPublicKeyPEM string `json:"trust_public_key_pem"`
}

// DeviceList is the answer to GET /api/v1/devices.
type DeviceList struct {
	Devices []Device `json:"devices"`
}

// Device is an enrolled device: what the control plane wants of it and
// what it last reported.
type Device struct {
	ID           string     `json:"id"`
	Online       bool       `json:"online"`
	LastSeen     *time.Time `json:"last_seen"` // null until the device first reports
	EnrolledAt   time.Time  `json:"enrolled_at"`
	AgentVersion string     `json:"agent_version"`
	Profile      string     `json:"profile"`
	// Labels and Group are the operator's; Labels is {} for none.
	Labels map[string]string `json:"labels"`
	Group  string            `json:"group"`
	// Phase is the lower-case name of the device's reported phase
	// ("active", "self_test"), "unknown" before its first report.
	Phase             string        `json:"phase"`
	Error             string        `json:"error"`
	DesiredGeneration uint64        `json:"desired_generation"`
	AppliedGeneration uint64        `json:"applied_generation"`
	Models            []DeviceModel `json:"models"`
}

// DeviceModel is one model slot of a device: what the control plane wants
// (DesiredVersion) and what the device reports.
type DeviceModel struct {
	Name            string `json:"name"`
	ActiveVersion   string `json:"active_version"`
	PreviousVersion string `json:"previous_version"`
	DesiredVersion  string `json:"desired_version"`
	// TargetVersion is the version the device reports working towards:
	// DesiredVersion once the device has received it.
	TargetVersion string `json:"target_version"`
	Phase         string `json:"phase"`
	Error         string `json:"error"`
	// Healthy: the active version has passed its manifest's health check.
	Healthy bool `json:"healthy"`
	// ActiveSince is when the active version started serving in the
	// agent's current process; null if the device did not say.
	ActiveSince *time.Time `json:"active_since"`
}

// DevicePatch is the body of PATCH /api/v1/devices/{id}, a JSON merge
// patch (RFC 7396) of a device's labels and group: each label in Labels is
// set, or removed if its value is nil; labels not named are kept. Group
// nil (absent) keeps the group; "" (or JSON null) takes the device out of
// it.
type DevicePatch struct {
	Labels map[string]*string `json:"labels,omitempty"`
	Group  *string            `json:"group,omitempty"`
}
