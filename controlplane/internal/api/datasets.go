package api

import (
	"context"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
)

// Datasets keeps uploaded CSV datasets, versioned. Errors carry shoalerr
// codes: Invalid, NotFound, TooLarge.
type Datasets interface {
	Push(ctx context.Context, name, label string, task dataset.Task, body io.Reader) (dataset.Version, bool, error)
	List(ctx context.Context) ([]dataset.Summary, error)
	Versions(ctx context.Context, name string) ([]dataset.Version, error)
	// Get and OpenCSV take version 0 for the latest.
	Get(ctx context.Context, name string, version int) (dataset.Version, error)
	OpenCSV(ctx context.Context, name string, version int) (*os.File, dataset.Version, error)
}

var _ Datasets = (*dataset.Store)(nil)

// pushDatasetParams are the query parameters of POST /api/v1/datasets.
var pushDatasetParams = []string{"name", "label", "task"}

// pushDataset streams the request body (the CSV) into the dataset store;
// gin never buffers it. A query parameter the route does not know is
// refused, so that a misspelt "lable" is not silently ignored.
func (s *server) pushDataset(c *gin.Context) {
	q := c.Request.URL.Query()
	for k, vs := range q {
		switch {
		case !slices.Contains(pushDatasetParams, k):
			s.fail(c, errInvalid("POST /api/v1/datasets: unknown query parameter %.40q; the parameters are name, label and task (docs/API.md)", k))
			return
		case len(vs) > 1:
			s.fail(c, errInvalid("POST /api/v1/datasets: query parameter %q is given %d times; give it once", k, len(vs)))
			return
		}
	}
	name := q.Get("name")
	v, created, err := s.Datasets.Push(c.Request.Context(), name, q.Get("label"), dataset.Task(q.Get("task")), c.Request.Body)
	if err != nil {
		s.fail(c, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		c.Header("Location", "/api/v1/datasets/"+name+"/versions/"+strconv.Itoa(v.Version))
	}
	c.JSON(status, datasetVersionView(v))
}

func (s *server) listDatasets(c *gin.Context) {
	list, err := s.Datasets.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apiv1.DatasetList{Datasets: convert(list, datasetSummaryView)}
	if out.Datasets == nil {
		out.Datasets = []apiv1.DatasetSummary{}
	}
	c.JSON(http.StatusOK, out)
}

func (s *server) getDataset(c *gin.Context) {
	name := c.Param("name")
	vs, err := s.Datasets.Versions(c.Request.Context(), name)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.DatasetVersions{Name: name, Versions: convert(vs, datasetVersionView)})
}

func (s *server) getDatasetVersion(c *gin.Context) {
	n, err := datasetVersion(c.Param("version"))
	if err != nil {
		s.fail(c, err)
		return
	}
	v, err := s.Datasets.Get(c.Request.Context(), c.Param("name"), n)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, datasetVersionView(v))
}

// getDatasetCSV serves a version's CSV as a download; the digest is the
// ETag, and Range works as for artifacts.
func (s *server) getDatasetCSV(c *gin.Context) {
	n, err := datasetVersion(c.Param("version"))
	if err != nil {
		s.fail(c, err)
		return
	}
	f, v, err := s.Datasets.OpenCSV(c.Request.Context(), c.Param("name"), n)
	if err != nil {
		s.fail(c, err)
		return
	}
	defer f.Close()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("ETag", `"`+v.SHA256+`"`)
	if n != 0 {
		// A numbered version never changes; "latest" does.
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("Content-Disposition", `attachment; filename="`+v.Name+"-v"+strconv.Itoa(v.Version)+`.csv"`)
	http.ServeContent(c.Writer, c.Request, "", time.Time{}, f)
}

// datasetVersion reads a version in a path: 1, 2, ... or "latest" (0).
func datasetVersion(s string) (int, error) {
	if s == "latest" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || strconv.Itoa(n) != s {
		return 0, errInvalid("dataset version %.40q is not a version number (1, 2, ...) or \"latest\"", s)
	}
	return n, nil
}
