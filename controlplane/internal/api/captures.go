package api

import (
	"context"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Captures keeps the predictions agents capture and the labels sent for
// them. Errors carry shoalerr codes: Invalid.
type Captures interface {
	CaptureCounts(ctx context.Context, model string) (rows, labelled uint64, byVersion map[string]uint64, err error)
	ExportCapturesAs(ctx context.Context, model string, w io.Writer, header []string, labelColumn string) (int, error)
}

var _ Captures = (*monitor.Monitor)(nil)

func (s *server) getCaptures(c *gin.Context) {
	model := c.Param("model")
	rows, labelled, byVersion, err := s.Captures.CaptureCounts(c.Request.Context(), model)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.CaptureCounts{Model: model, Rows: rows, Labelled: labelled, ByVersion: byVersion})
}

// capturesDatasetParams are the query parameters of
// POST /api/v1/captures/{model}/dataset.
var capturesDatasetParams = []string{"name", "label"}

// capturesToDataset serves POST /api/v1/captures/{model}/dataset?name=N
// [&label=L]: the model's labelled captured rows become the next version of
// dataset N, the label in column L ("label" by default). The features are
// named by the reference profile of the newest version with captured rows,
// if it has one.
func (s *server) capturesToDataset(c *gin.Context) {
	ctx := c.Request.Context()
	model := c.Param("model")
	q := c.Request.URL.Query()
	for k, vs := range q {
		switch {
		case !slices.Contains(capturesDatasetParams, k):
			s.fail(c, errInvalid("POST /api/v1/captures/%s/dataset: unknown query parameter %.40q; the parameters are name and label (docs/API.md)", model, k))
			return
		case len(vs) > 1:
			s.fail(c, errInvalid("POST /api/v1/captures/%s/dataset: query parameter %q is given %d times; give it once", model, k, len(vs)))
			return
		}
	}
	name, label := q.Get("name"), q.Get("label")
	if label == "" {
		label = "label"
	}
	if err := dataset.ValidateName(name); err != nil {
		s.fail(c, err)
		return
	}
	_, labelled, byVersion, err := s.Captures.CaptureCounts(ctx, model)
	if err != nil {
		s.fail(c, err)
		return
	}
	if labelled == 0 {
		s.fail(c, noLabelledCaptures(model))
		return
	}
	header, err := s.captureHeader(ctx, model, byVersion, label)
	if err != nil {
		s.fail(c, err)
		return
	}
	f, err := os.CreateTemp("", "shoal-captures-*.csv")
	if err != nil {
		s.fail(c, err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := s.Captures.ExportCapturesAs(ctx, model, f, header, label)
	if err != nil {
		s.fail(c, err)
		return
	}
	if n == 0 {
		s.fail(c, shoalerr.E(shoalerr.NotFound, "api.capturesToDataset",
			"model %s has %d labelled captured rows, but none of the width of its features %q; the devices capture rows of another width", model, labelled, header))
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		s.fail(c, err)
		return
	}
	v, created, err := s.Datasets.Push(context.WithoutCancel(ctx), name, label, "", f)
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

func noLabelledCaptures(model string) error {
	return shoalerr.E(shoalerr.NotFound, "api.capturesToDataset",
		"model %s has no labelled captured rows; deploy it with a capture share (shoal deploy --capture-share 0.05) and send labels to the agents' POST /v1/feedback", model)
}

// captureHeader names the features of model's captured rows after the
// reference profile of the newest version that has rows; nil (f0, f1...)
// if that version has none, the model is not in the registry, or the
// profile's names are not a CSV header with label.
func (s *server) captureHeader(ctx context.Context, model string, byVersion map[string]uint64, label string) ([]string, error) {
	vs, err := s.Registry.Versions(ctx, model)
	if shoalerr.Is(err, shoalerr.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if byVersion[vs[i].Version] == 0 {
			continue
		}
		p, ok, err := s.Registry.ReferenceProfile(ctx, model, vs[i].Version)
		if err != nil || !ok {
			return nil, err
		}
		var header []string
		for _, in := range p.GetInputs() {
			if n := in.GetName(); n == "" || n == label || slices.Contains(header, n) {
				return nil, nil
			}
			header = append(header, in.GetName())
		}
		return header, nil
	}
	return nil, nil
}
