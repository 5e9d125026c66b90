package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeRollout serves one rollout that moves a step on at each GET of it:
// an event per step, completed after the last.
type fakeRollout struct {
	mu     sync.Mutex
	step   int
	steps  int
	afters []string // the ?after= of each events request
}

func (f *fakeRollout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/api/v1/rollouts/r1/events":
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		f.afters = append(f.afters, r.URL.Query().Get("after"))
		fmt.Fprint(w, `{"events":[`)
		for seq := after + 1; seq <= f.step; seq++ {
			if seq > after+1 {
				fmt.Fprint(w, ",")
			}
			fmt.Fprintf(w, `{"seq":%d,"type":"stage","message":"step %d"}`, seq, seq)
		}
		fmt.Fprint(w, `]}`)
	case "/api/v1/rollouts/r1":
		state := "running"
		if f.step == f.steps {
			state = "completed"
		} else {
			f.step++
		}
		fmt.Fprintf(w, `{"id":"r1","state":%q,"stage":"canary","stages":[{"name":"canary","size":2,"healthy":%d}],"phases":{"healthy":%d,"pending":%d}}`,
			state, min(f.step, 2), min(f.step, 2), 2-min(f.step, 2))
	default:
		http.NotFound(w, r)
	}
}

func TestWaitRollout(t *testing.T) {
	f := &fakeRollout{steps: 3}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	polls := 0
	r, err := c.WaitRollout(context.Background(), "r1", time.Millisecond, func(evs []RolloutEvent, r Rollout) error {
		polls++
		for _, ev := range evs {
			got = append(got, ev.Message)
		}
		return nil
	})
	if err != nil || r.State != "completed" {
		t.Fatalf("WaitRollout = %+v, %v; want it completed", r, err)
	}
	// Each event once, in order, though the rollout moved between the
	// events request and the rollout's.
	if fmt.Sprint(got) != "[step 1 step 2 step 3]" || polls != 4 {
		t.Errorf("events %v in %d polls; want steps 1 to 3 once each, in 4 polls", got, polls)
	}
	if fmt.Sprint(f.afters) != "[0 0 1 2]" {
		t.Errorf("asked for events after %v; want after the last one seen", f.afters)
	}

	// An error from progress ends the wait with it.
	f = &fakeRollout{steps: 5}
	srv2 := httptest.NewServer(f)
	defer srv2.Close()
	if c, err = New(srv2.URL); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop here")
	if _, err := c.WaitRollout(context.Background(), "r1", time.Millisecond, func([]RolloutEvent, Rollout) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("WaitRollout with a failing progress = %v; want its error", err)
	}
	// So does ctx, with the rollout as last seen.
	ctx, cancel := context.WithCancel(context.Background())
	r, err = c.WaitRollout(ctx, "r1", time.Hour, func([]RolloutEvent, Rollout) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) || r.ID != "r1" {
		t.Errorf("WaitRollout cancelled = %+v, %v; want the rollout and context.Canceled", r, err)
	}
	// And an unknown rollout, with the API's error.
	if _, err := c.WaitRollout(context.Background(), "nope", time.Millisecond, nil); StatusOf(err) != http.StatusNotFound {
		t.Errorf("WaitRollout of an unknown rollout = %v; want a 404", err)
	}
}

func TestRolloutProgress(t *testing.T) {
	var r Rollout
	if err := json.Unmarshal([]byte(`{"state":"running","stage":"half","phases":{"healthy":3,"pending":4,"failed":0,"downloading":1},
		"stages":[{"name":"canary","size":1,"healthy":1},{"name":"half","size":4,"healthy":2},{"name":"all","size":8}]}`), &r); err != nil {
		t.Fatal(err)
	}
	want := "[running] stage half [###############.....] 3 of 4 healthy | pending 4, downloading 1, healthy 3"
	if got := RolloutProgress(r); got != want {
		t.Errorf("RolloutProgress =\n%s\nwant\n%s", got, want)
	}
}
