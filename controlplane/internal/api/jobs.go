package api

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
)

// Jobs runs training jobs. Errors carry shoalerr codes: Invalid, NotFound,
// Conflict, Unavailable.
type Jobs interface {
	Submit(ctx context.Context, spec jobs.Spec) (jobs.Job, error)
	// List leaves out each job's history.
	List(ctx context.Context) ([]jobs.Job, error)
	Get(ctx context.Context, id string) (jobs.Job, error)
	Cancel(ctx context.Context, id string) (jobs.Job, error)
}

var _ Jobs = (*jobs.Runner)(nil)

// submitJob queues a training job and answers 202: the job runs in the
// background; GET its Location to follow it.
func (s *server) submitJob(c *gin.Context) {
	var spec apiv1.JobSpec
	if err := decodeJSON(c, &spec, false); err != nil {
		s.fail(c, err)
		return
	}
	// The job is queued even if the client goes away mid-way.
	j, err := s.Jobs.Submit(context.WithoutCancel(c.Request.Context()), jobSpecOf(spec))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Location", "/api/v1/jobs/"+j.ID)
	c.JSON(http.StatusAccepted, jobView(j))
}

func (s *server) listJobs(c *gin.Context) {
	list, err := s.Jobs.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apiv1.JobList{Jobs: convert(list, jobView)}
	if out.Jobs == nil {
		out.Jobs = []apiv1.Job{}
	}
	c.JSON(http.StatusOK, out)
}

func (s *server) getJob(c *gin.Context) {
	j, err := s.Jobs.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, jobView(j))
}

func (s *server) cancelJob(c *gin.Context) {
	j, err := s.Jobs.Cancel(context.WithoutCancel(c.Request.Context()), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, jobView(j))
}
