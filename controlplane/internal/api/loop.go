package api

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/internal/loop"
)

// Loop keeps retraining policies and runs. Errors carry shoalerr codes:
// Invalid, NotFound (Policy: none set).
type Loop interface {
	SetPolicy(ctx context.Context, model string, p loop.Policy) (loop.Policy, error)
	Policy(ctx context.Context, model string) (loop.Policy, error)
	Runs(ctx context.Context, model string) ([]loop.Run, error)
}

var _ Loop = (*loop.Service)(nil)

// listLoopRuns serves GET /api/v1/loop/{model}: the model's retraining
// runs, newest first, with its policy if it has one.
func (s *server) listLoopRuns(c *gin.Context) {
	model := c.Param("model")
	runs, err := s.Loop.Runs(c.Request.Context(), model)
	if err != nil {
		s.fail(c, err)
		return
	}
	if runs == nil {
		runs = []loop.Run{}
	}
	c.JSON(http.StatusOK, gin.H{"model": model, "runs": runs})
}

func (s *server) getLoopPolicy(c *gin.Context) {
	p, err := s.Loop.Policy(c.Request.Context(), c.Param("model"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *server) putLoopPolicy(c *gin.Context) {
	var p loop.Policy
	if err := decodeJSON(c, &p, false); err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.Loop.SetPolicy(context.WithoutCancel(c.Request.Context()), c.Param("model"), p)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}
