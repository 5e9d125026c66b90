package fleet

import "time"

// tokenRecord is a stored enrollment token (the token itself is not kept).
type tokenRecord struct {
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"`
}

// deviceRecord is an enrolled device and its desired state.
type deviceRecord struct {
	ID             string    `json:"id"`
	EnrolledAt     time.Time `json:"enrolled_at"`
	PasswordSHA256 []byte    `json:"password_sha256"`
	AgentVersion   string    `json:"agent_version,omitempty"` // as given at enrollment
	Profile        string    `json:"profile,omitempty"`       // as given at enrollment
	// Labels and Group are the operator's, for selecting devices (set at
	// enrollment or by SetLabels); checked by checkLabels and checkGroup.
	Labels map[string]string `json:"labels,omitempty"`
	Group  string            `json:"group,omitempty"`
	// Generation counts changes to the desired state; 0 = none yet.
	Generation     uint64                  `json:"generation"`
	IssuedAtUnixMs int64                   `json:"issued_at_unix_ms,omitempty"`
	Desired        map[string]desiredModel `json:"desired,omitempty"` // by model name
}

// desiredModel is one model the device should run.
type desiredModel struct {
	Version        string `json:"version"`
	EnvelopeSHA256 string `json:"envelope_sha256"` // key of the envelope under envelopePrefix
}

// stateRecord is what the device last told us.
type stateRecord struct {
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Reported []byte    `json:"reported,omitempty"` // ReportedState protobuf, as received
	Status   []byte    `json:"status,omitempty"`   // DeviceStatus protobuf, as received
}
