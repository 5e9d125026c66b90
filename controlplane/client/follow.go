package client

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// RolloutFollower reads a rollout's events as they happen: the CLI's
// --wait and --watch, and the demo, follow rollouts with it.
type RolloutFollower struct {
	c     *Client
	id    string
	after uint64 // the last event returned
}

// FollowRollout returns a follower of rollout id, from its first event.
func (c *Client) FollowRollout(id string) *RolloutFollower {
	return &RolloutFollower{c: c, id: id}
}

// Next returns the rollout's events since the last call (every one, the
// first time) and the rollout as it is after them.
func (f *RolloutFollower) Next(ctx context.Context) ([]RolloutEvent, Rollout, error) {
	evs, err := f.c.RolloutEvents(ctx, f.id, f.after)
	if err != nil {
		return nil, Rollout{}, fmt.Errorf("follow rollout %s: %w", f.id, err)
	}
	if n := len(evs); n > 0 {
		f.after = evs[n-1].Seq
	}
	r, err := f.c.Rollout(ctx, f.id)
	if err != nil {
		return evs, Rollout{}, fmt.Errorf("follow rollout %s: %w", f.id, err)
	}
	return evs, r, nil
}

// WaitRollout follows rollout id every poll until it ends, and returns it
// as it ended. It calls progress (if not nil) after each poll with the
// new events and the rollout; an error from progress ends the wait with
// that error. When ctx ends first, it returns the rollout as last seen
// and ctx's error.
func (c *Client) WaitRollout(ctx context.Context, id string, poll time.Duration, progress func([]RolloutEvent, Rollout) error) (Rollout, error) {
	f := c.FollowRollout(id)
	t := time.NewTicker(poll)
	defer t.Stop()
	var last Rollout
	for {
		evs, r, err := f.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = r
		if progress != nil {
			if err := progress(evs, r); err != nil {
				return r, err
			}
		}
		if r.Ended() {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-t.C:
		}
	}
}

// RolloutProgress is one line of a rollout's progress for people: its
// state, how many devices of its stage are healthy (as a bar) and the
// devices in each phase.
func RolloutProgress(r Rollout) string {
	// Stage sizes are cumulative: count the healthy devices of this
	// stage and those before it.
	name, size, healthy := "", 0, 0
	for _, s := range r.Stages {
		healthy += s.Healthy
		if s.Name == r.Stage {
			name, size = s.Name, s.Size
			break
		}
	}
	phases := make([]string, 0, len(r.Phases))
	for _, p := range sortedPhaseNames(r.Phases) {
		phases = append(phases, fmt.Sprintf("%s %d", p, r.Phases[p]))
	}
	return fmt.Sprintf("[%s] stage %s %s %d of %d healthy | %s", r.State, name, bar(healthy, max(size, 1), 20), healthy, size, strings.Join(phases, ", "))
}

// phaseOrder is the order phases are shown in.
var phaseOrder = []string{"pending", "offline", "notified", "downloading", "verifying", "active", "healthy", "failed", "rolling_back", "rolled_back"}

func sortedPhaseNames(m map[string]int) []string {
	rank := map[string]int{}
	for i, p := range phaseOrder {
		rank[p] = i
	}
	out := make([]string, 0, len(m))
	for p, n := range m {
		if n > 0 {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return rank[out[i]] < rank[out[j]] })
	return out
}

// bar draws done/total as a bar of width characters.
func bar(done, total, width int) string {
	n := min(width, done*width/total)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
