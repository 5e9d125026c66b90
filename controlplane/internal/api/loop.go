package api

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
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
	out := apiv1.LoopRuns{Model: model, Runs: convert(runs, loopRunView)}
	if out.Runs == nil {
		out.Runs = []apiv1.LoopRun{}
	}
	c.JSON(http.StatusOK, out)
}

func (s *server) getLoopPolicy(c *gin.Context) {
	p, err := s.Loop.Policy(c.Request.Context(), c.Param("model"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, loopPolicyView(p))
}

func (s *server) putLoopPolicy(c *gin.Context) {
	var req apiv1.LoopPolicy
	if err := decodeJSON(c, &req, false); err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.Loop.SetPolicy(context.WithoutCancel(c.Request.Context()), c.Param("model"), loopPolicyOf(req))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, loopPolicyView(p))
}
