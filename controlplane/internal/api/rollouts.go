package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/rollout"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Rollouts runs staged rollouts. Errors carry shoalerr codes: Invalid,
// NotFound, Conflict.
type Rollouts interface {
	Create(ctx context.Context, spec rollout.Spec) (rollout.Rollout, error)
	List(ctx context.Context, model string) ([]rollout.Rollout, error)
	Get(ctx context.Context, id string) (rollout.Rollout, error)
	Events(ctx context.Context, id string, after uint64) ([]rollout.Event, error)
	Pause(ctx context.Context, id string) (rollout.Rollout, error)
	Resume(ctx context.Context, id string) (rollout.Rollout, error)
	Promote(ctx context.Context, id string) (rollout.Rollout, error)
	Abort(ctx context.Context, id string) (rollout.Rollout, error)
	Rollback(ctx context.Context, id string) (rollout.Rollout, error)
	// Locked returns the rollout holding each of ids (all devices if
	// empty) for model, if any.
	Locked(model string, ids []string) (map[string]string, error)
}

var _ Rollouts = (*rollout.Engine)(nil)

func (s *server) createRollout(c *gin.Context) {
	var spec rollout.Spec
	if err := decodeJSON(c, &spec, false); err != nil {
		s.fail(c, err)
		return
	}
	// The rollout is created even if the client goes away mid-way.
	r, err := s.Rollouts.Create(context.WithoutCancel(c.Request.Context()), spec)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, r)
}

func (s *server) listRollouts(c *gin.Context) {
	rs, err := s.Rollouts.List(c.Request.Context(), c.Query("model"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.RolloutList{Rollouts: rs})
}

func (s *server) getRollout(c *gin.Context) {
	r, err := s.Rollouts.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

// rolloutEvents returns the events after ?after=SEQ (all by default), for
// clients that follow a rollout.
func (s *server) rolloutEvents(c *gin.Context) {
	var after uint64
	if a := c.Query("after"); a != "" {
		v, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			s.fail(c, errInvalid("after %q is not an event sequence number", a))
			return
		}
		after = v
	}
	evs, err := s.Rollouts.Events(c.Request.Context(), c.Param("id"), after)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.RolloutEvents{Events: evs})
}

// rolloutAction runs POST /api/v1/rollouts/{id}/{pause|resume|promote|abort|rollback}.
func (s *server) rolloutAction(c *gin.Context) {
	var do func(context.Context, string) (rollout.Rollout, error)
	switch action := c.Param("action"); action {
	case "pause":
		do = s.Rollouts.Pause
	case "resume":
		do = s.Rollouts.Resume
	case "promote":
		do = s.Rollouts.Promote
	case "abort":
		do = s.Rollouts.Abort
	case "rollback":
		do = s.Rollouts.Rollback
	default:
		s.fail(c, errNotFound("no rollout action %q; use pause, resume, promote, abort or rollback", action))
		return
	}
	if err := decodeJSON(c, &struct{}{}, true); err != nil {
		s.fail(c, err)
		return
	}
	r, err := do(context.WithoutCancel(c.Request.Context()), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, r)
}

func errNotFound(format string, args ...any) error {
	return shoalerr.E(shoalerr.NotFound, "api", "%s", fmt.Sprintf(format, args...))
}
