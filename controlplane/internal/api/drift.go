package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/drift"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Drift measures data drift and keeps drift policies and alerts. Errors
// carry shoalerr codes: Invalid, NotFound (Policy: none set).
type Drift interface {
	Report(ctx context.Context, model string, q drift.Query) ([]drift.WindowDrift, error)
	SetPolicy(ctx context.Context, model string, p drift.Policy) (drift.Policy, error)
	Policy(ctx context.Context, model string) (drift.Policy, error)
	Alerts(ctx context.Context, model string) ([]drift.Alert, error)
}

var _ Drift = (*drift.Service)(nil)

// maxDriftLookback bounds GET /api/v1/drift/{model}?last=.
const maxDriftLookback = 90 * 24 * time.Hour

// getDrift serves GET /api/v1/drift/{model}[?version=V&cohort=C&last=D]:
// the drift of the windows that ended in the last D (24h by default).
func (s *server) getDrift(c *gin.Context) {
	model := c.Param("model")
	q := drift.Query{Version: c.Query("version"), Cohort: c.Query("cohort")}
	if l := c.Query("last"); l != "" {
		d, err := time.ParseDuration(l)
		if err != nil || d <= 0 || d > maxDriftLookback {
			s.fail(c, errInvalid("last %.40q is not a duration from 1s to %v, such as 24h or 90m", l, maxDriftLookback))
			return
		}
		q.Last = d
	}
	ws, err := s.Drift.Report(c.Request.Context(), model, q)
	if err != nil {
		s.fail(c, err)
		return
	}
	var policy *drift.Policy
	if p, err := s.Drift.Policy(c.Request.Context(), model); err == nil {
		policy = &p
	} else if !shoalerr.Is(err, shoalerr.NotFound) {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.DriftReport{Model: model, Policy: policy, Windows: ws})
}

func (s *server) getDriftPolicy(c *gin.Context) {
	p, err := s.Drift.Policy(c.Request.Context(), c.Param("model"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *server) putDriftPolicy(c *gin.Context) {
	var p drift.Policy
	if err := decodeJSON(c, &p, false); err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.Drift.SetPolicy(context.WithoutCancel(c.Request.Context()), c.Param("model"), p)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *server) listAlerts(c *gin.Context) {
	as, err := s.Drift.Alerts(c.Request.Context(), c.Query("model"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.AlertList{Alerts: as})
}
