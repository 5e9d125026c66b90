package inference

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Set maps model names to their active Model. Acquire takes no lock: it
// reads a copy-on-write map and adds a reference to the model. Writers
// (Swap, Remove, Close) are serialised by a mutex.
type Set struct {
	mu     sync.Mutex
	models atomic.Pointer[map[string]*Model]
	closed bool
}

// NewSet returns an empty set.
func NewSet() *Set {
	s := &Set{}
	s.models.Store(&map[string]*Model{})
	return s
}

// Acquire returns the active model called name and a release func that the
// caller must call exactly once when its prediction is done. Until then the
// model's session stays open, even if the model is swapped out meanwhile.
// ok is false when no model of that name is active.
func (s *Set) Acquire(name string) (m *Model, release func(), ok bool) {
	for {
		mp := s.models.Load()
		if mp == nil {
			return nil, nil, false // a zero Set holds nothing
		}
		m := (*mp)[name]
		if m == nil {
			return nil, nil, false
		}
		if m.retain() {
			return m, m.releaseFn, true
		}
		// m was swapped out and its last reference released between the
		// load and retain; the map has moved on, so read it again.
		if s.models.Load() == mp {
			return nil, nil, false // unreachable: a model in the map holds the set's reference
		}
	}
}

// Swap makes m the active model for m.Ref().Name and returns the version it
// replaced, if any. The set takes over the reference of m's owner (m must
// be freshly loaded: not closed, not in any set). The replaced model closes
// once the last prediction holding it releases it. Swapping into a closed
// set closes m at once.
func (s *Set) Swap(m *Model) (previous Ref, had bool) {
	if !m.handed.CompareAndSwap(false, true) {
		panic(fmt.Sprintf("inference: Swap of model %s, which was closed or is already in a set", m.ref))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		m.release()
		return Ref{}, false
	}
	old := s.store(m.ref.Name, m)
	s.mu.Unlock()
	if old == nil {
		return Ref{}, false
	}
	old.release()
	return old.ref, true
}

// Remove deactivates the model called name and returns its version, if one
// was active. It closes once its last prediction releases it.
func (s *Set) Remove(name string) (previous Ref, had bool) {
	s.mu.Lock()
	old := s.store(name, nil)
	s.mu.Unlock()
	if old == nil {
		return Ref{}, false
	}
	old.release()
	return old.ref, true
}

// store replaces (or with m nil, deletes) the entry for name in a new copy
// of the map and returns the model it held. The caller holds s.mu.
func (s *Set) store(name string, m *Model) *Model {
	var cur map[string]*Model
	if mp := s.models.Load(); mp != nil {
		cur = *mp
	}
	old := cur[name]
	if old == nil && m == nil {
		return nil
	}
	next := make(map[string]*Model, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	if m == nil {
		delete(next, name)
	} else {
		next[name] = m
	}
	s.models.Store(&next)
	return old
}

// Names returns the names of the active models, sorted.
func (s *Set) Names() []string {
	mp := s.snapshot()
	names := make([]string, 0, len(mp))
	for n := range mp {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Refs returns the active versions, sorted by name.
func (s *Set) Refs() []Ref {
	mp := s.snapshot()
	refs := make([]Ref, 0, len(mp))
	for _, m := range mp {
		refs = append(refs, m.ref)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
	return refs
}

// Usage is an active model's version and the predictions it has served
// (Model.Predictions).
type Usage struct {
	Ref         Ref
	Predictions uint64
}

// Usage returns the active versions and their prediction counts, sorted
// by name. Like Acquire it takes no lock.
func (s *Set) Usage() []Usage {
	mp := s.snapshot()
	out := make([]Usage, 0, len(mp))
	for _, m := range mp {
		out = append(out, Usage{Ref: m.ref, Predictions: m.Predictions()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.Name < out[j].Ref.Name })
	return out
}

// VersionStats is an active version and the data statistics it keeps.
type VersionStats struct {
	Ref   Ref
	Stats *DataStats
}

// Stats returns the active versions that keep data statistics, sorted by
// name. Like Acquire it takes no lock.
func (s *Set) Stats() []VersionStats {
	mp := s.snapshot()
	var out []VersionStats
	for _, m := range mp {
		if st := m.Stats(); st != nil {
			out = append(out, VersionStats{Ref: m.ref, Stats: st})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.Name < out[j].Ref.Name })
	return out
}

// Len returns the number of active models.
func (s *Set) Len() int { return len(s.snapshot()) }

func (s *Set) snapshot() map[string]*Model {
	if mp := s.models.Load(); mp != nil {
		return *mp
	}
	return nil
}

// Close deactivates every model; each closes once its last prediction
// releases it. Later Swaps close the model they are given.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	cur := s.snapshot()
	s.models.Store(&map[string]*Model{})
	s.mu.Unlock()
	for _, m := range cur {
		m.release()
	}
}
