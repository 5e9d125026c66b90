package fleet

import (
	"sync"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

// activity remembers when each device last sent anything (telemetry
// included) without a store write per message: last_seen shows the later
// of this and the stored time of its last reported/status message. It is
// lost on restart, when devices reconnect and report again anyway.
type activity struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// Touch records that device id sent a message now. Ids that are not
// enrolled are ignored, so the map is bounded by the fleet.
func (s *Service) Touch(id string) {
	now := s.now()
	s.act.mu.Lock()
	_, known := s.act.seen[id]
	if known {
		s.act.seen[id] = now
	}
	s.act.mu.Unlock()
	if known {
		return
	}
	var rec deviceRecord
	found := false
	err := s.st.View(func(tx store.Tx) error {
		var err error
		found, err = store.GetJSON(tx, deviceKey(id), &rec)
		return err
	})
	if err != nil || !found {
		return
	}
	s.act.mu.Lock()
	if s.act.seen == nil {
		s.act.seen = map[string]time.Time{}
	}
	s.act.seen[id] = now
	s.act.mu.Unlock()
}

// lastActive returns when device id last sent anything since start.
func (s *Service) lastActive(id string) time.Time {
	s.act.mu.Lock()
	defer s.act.mu.Unlock()
	return s.act.seen[id]
}
