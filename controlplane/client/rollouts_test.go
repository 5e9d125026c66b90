package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

const rolloutJSON = `{"id":"r1","model":"summer","version":"2","state":"paused","reason":"stage canary: 1 of 1 devices failed; at most 0 may",
 "stage":"canary","targets":2,"release_sequence":4,"phases":{"failed":1,"pending":1},
 "stages":[{"name":"canary","state":"running","size":1,"notified":1,"healthy":0,"failed":1,"offline":0,
            "started_at":"2026-01-02T03:04:05Z","gate_met_at":null,"passed_at":null,"promoted":false}],
 "created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:05:05Z","ended_at":null,
 "spec":{"model":"summer","version":"2","stages":[{"name":"canary","count":1}]},
 "devices":[{"id":"pump-1","stage":"canary","phase":"failed","reason":"the agent refused 2","previous_version":"1",
             "notified_at":"2026-01-02T03:04:05Z","changed_at":"2026-01-02T03:04:35Z"}],
 "events":[{"seq":1,"time":"2026-01-02T03:04:05Z","type":"created","message":"rollout of summer 2"}]}`

func TestRolloutRequests(t *testing.T) {
	ctx := context.Background()
	c, last := recordingServer(t, rolloutJSON)

	zero := 0
	r, err := c.CreateRollout(ctx, apiv1.RolloutSpec{Model: "summer", Version: "2",
		Stages: []apiv1.Stage{{Name: "canary", Count: 1, Soak: apiv1.Duration(30 * time.Minute), Failure: apiv1.FailureGate{MaxCount: &zero}}},
		Health: &apiv1.HealthCheck{}})
	if err != nil {
		t.Fatal(err)
	}
	// Unset fields stay out; an explicit 0 (a gate, a health check) is
	// sent, since it differs from the default.
	const sent = `{"model":"summer","version":"2","selector":{},"stages":[{"name":"canary","count":1,"soak":"30m0s","success":{},"failure":{"max_count":0},"health":{}}],"health":{"predictions":0,"seconds":0}}`
	if q := last(); q.method != http.MethodPost || q.path != "/api/v1/rollouts" || q.body != sent {
		t.Errorf("CreateRollout asked %+v; want the body %s", q, sent)
	}
	if r.ID != "r1" || r.State != "paused" || r.Targets != 2 || r.ReleaseSequence != 4 || r.Phases["failed"] != 1 ||
		r.Stages[0].Failed != 1 || r.Stages[0].StartedAt == nil || r.Stages[0].PassedAt != nil ||
		r.Devices[0].Previous != "1" || r.Devices[0].Phase != "failed" || r.Events[0].Type != "created" || r.Ended() {
		t.Errorf("rollout = %+v", r)
	}
	if r.Spec.Model != "summer" || len(r.Spec.Stages) != 1 || r.Spec.Stages[0].Count != 1 {
		t.Errorf("spec = %+v; want the server's", r.Spec)
	}

	if _, err := c.Rollout(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if q := last(); q.method != http.MethodGet || q.path != "/api/v1/rollouts/r1" {
		t.Errorf("Rollout asked %+v", q)
	}
	for _, action := range []string{"pause", "resume", "promote", "abort", "rollback"} {
		if _, err := c.RolloutAction(ctx, "r1", action); err != nil {
			t.Fatal(err)
		}
		// The routes take an empty object (or no body) and nothing else.
		if q := last(); q.method != http.MethodPost || q.path != "/api/v1/rollouts/r1/"+action || q.body != `{}` {
			t.Errorf("RolloutAction(%s) asked %+v", action, q)
		}
	}

	c, last = recordingServer(t, `{"rollouts":[`+rolloutJSON+`]}`)
	for model, query := range map[string]string{"": "", "summer": "model=summer", "a b": "model=a+b"} {
		rs, err := c.Rollouts(ctx, model)
		if err != nil {
			t.Fatal(err)
		}
		if q := last(); q.method != http.MethodGet || q.path != "/api/v1/rollouts" || q.query != query {
			t.Errorf("Rollouts(%q) asked %+v; want ?%s", model, q, query)
		}
		if len(rs) != 1 || rs[0].ID != "r1" {
			t.Errorf("rollouts = %+v", rs)
		}
	}

	c, last = recordingServer(t, `{"events":[{"seq":8,"time":"2026-01-02T03:04:05Z","type":"device","stage":"canary","device":"pump-1","phase":"healthy","message":"active → healthy"}]}`)
	evs, err := c.RolloutEvents(ctx, "r1", 7)
	if err != nil {
		t.Fatal(err)
	}
	if q := last(); q.method != http.MethodGet || q.path != "/api/v1/rollouts/r1/events" || q.query != "after=7" {
		t.Errorf("RolloutEvents asked %+v", q)
	}
	if len(evs) != 1 || evs[0].Seq != 8 || evs[0].Device != "pump-1" || evs[0].Phase != "healthy" {
		t.Errorf("events = %+v", evs)
	}
}

func TestRolloutEnded(t *testing.T) {
	for state, want := range map[string]bool{
		"running": false, "paused": false, "completed": true, "rolled_back": true, "aborted": true,
	} {
		if got := (Rollout{State: state}).Ended(); got != want {
			t.Errorf("Ended() of a %s rollout = %v; want %v", state, got, want)
		}
	}
}

// TestRolloutError: the server's error answer becomes an *Error with its
// status, code and message.
func TestRolloutError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"error":{"code":"conflict","message":"rollout r1 is running, so it cannot be resumed (only a rollout that is paused can)"}}`)
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RolloutAction(context.Background(), "r1", "resume")
	if StatusOf(err) != http.StatusConflict || err.Error() != "rollout r1 is running, so it cannot be resumed (only a rollout that is paused can)" {
		t.Errorf("error = %v (status %d)", err, StatusOf(err))
	}
	if e, ok := err.(*Error); !ok || e.Code != "conflict" {
		t.Errorf("error = %#v; want *Error with code conflict", err)
	}
}

// TestServerErrorRequestID: a server error's *Error carries the request id
// the control plane answered with, and its generic message.
func TestServerErrorRequestID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(apiv1.RequestIDHeader, "7f3a0c1d2e4b5a69")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"code":"internal","message":"internal error (request id 7f3a0c1d2e4b5a69); the control plane's log has the details","request_id":"7f3a0c1d2e4b5a69"}}`)
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Rollout(context.Background(), "r1")
	e, ok := err.(*Error)
	if !ok || e.Status != http.StatusInternalServerError || e.Code != "internal" || e.RequestID != "7f3a0c1d2e4b5a69" ||
		err.Error() != "internal error (request id 7f3a0c1d2e4b5a69); the control plane's log has the details" {
		t.Errorf("error = %#v", err)
	}
}
