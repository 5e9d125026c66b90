package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// SubmitJob queues a training job (docs/API.md, Training jobs).
func (c *Client) SubmitJob(ctx context.Context, spec apiv1.JobSpec) (j apiv1.Job, err error) {
	err = c.postJSON(ctx, "/api/v1/jobs", spec, &j)
	return j, err
}

// Jobs lists training jobs, the newest first, without their histories.
func (c *Client) Jobs(ctx context.Context) ([]apiv1.Job, error) {
	var out apiv1.JobList
	err := c.getJSON(ctx, "/api/v1/jobs", &out)
	return out.Jobs, err
}

// Job returns one training job.
func (c *Client) Job(ctx context.Context, id string) (j apiv1.Job, err error) {
	err = c.getJSON(ctx, "/api/v1/jobs/"+url.PathEscape(id), &j)
	return j, err
}

// CancelJob cancels a training job: a queued one at once, a running one
// soon (the answer has CancelRequested set; WaitJob for the end).
func (c *Client) CancelJob(ctx context.Context, id string) (j apiv1.Job, err error) {
	err = c.do(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, "", &j)
	return j, err
}

// WaitJob asks for the job every poll until it is final and returns it,
// calling progress (if not nil) with each answer.
func (c *Client) WaitJob(ctx context.Context, id string, poll time.Duration, progress func(apiv1.Job)) (apiv1.Job, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return apiv1.Job{}, err
		}
		if progress != nil {
			progress(j)
		}
		if j.Final() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return apiv1.Job{}, ctx.Err()
		case <-t.C:
		}
	}
}
