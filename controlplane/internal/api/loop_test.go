package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/loop"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// The loop's runs are tested in package loop, over real jobs; here the
// routes, over a loop.Service on a real store.
func TestLoopRoutes(t *testing.T) {
	st, err := badgerstore.Open(filepath.Join(t.TempDir(), "store"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	svc := loop.New(st, nil, nil, nil, loop.Options{Now: func() time.Time { return now }})
	srv := httptest.NewServer(mustNew(t, Deps{Loop: svc}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv}

	e.get("/api/v1/loop/m1/policy").wantError(t, http.StatusNotFound, shoalerr.NotFound, "no retraining policy")
	e.putJSON("/api/v1/loop/m1/policy", `{"retrain":true,"cooldown":"-1h"}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "cooldown")
	e.putJSON("/api/v1/loop/m1/policy", `{"retrain":true,"retrian":true}`).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "retrian")
	r := e.putJSON("/api/v1/loop/m1/policy", `{"retrain":true,"dataset":"iris","cooldown":"2h","rollout":{"stages":[{"name":"canary","count":1,"soak":"10m"},{"name":"all","percent":100}]}}`)
	if r.status != http.StatusOK {
		t.Fatalf("PUT policy = %d %s", r.status, r.body)
	}
	var p loop.Policy
	if e.get("/api/v1/loop/m1/policy").json(t, &p); !p.Retrain || p.Dataset != "iris" || p.Cooldown.D() != 2*time.Hour || p.Rollout == nil || len(p.Rollout.Stages) != 2 || !p.Rollout.Supersede {
		t.Errorf("policy = %+v", p)
	}
	var runs struct {
		Model string     `json:"model"`
		Runs  []loop.Run `json:"runs"`
	}
	r = e.get("/api/v1/loop/m1")
	if r.json(t, &runs); runs.Model != "m1" || runs.Runs == nil || len(runs.Runs) != 0 {
		t.Errorf("GET loop = %s; want no runs", r.body)
	}
	e.get("/api/v1/loop/a%20b").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "model name")
}
