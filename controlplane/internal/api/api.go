// Package api is the control plane's HTTP API (docs/API.md) on gin: the
// routes, request decoding, and the one place where shoalerr codes become
// HTTP statuses. The domain packages it serves are reached through the
// small interfaces below, which registry, fleet and monitor satisfy.
// GET /metrics serves the process's metrics in the Prometheus text format.
package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/internal/fleet"
	"github.com/shoalfleet/shoal/controlplane/internal/monitor"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/internal/procstats"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Registry stores model versions and issues manifests. Errors carry
// shoalerr codes: Invalid, NotFound, Conflict, TooLarge.
type Registry interface {
	Push(ctx context.Context, name, version string, r io.Reader) (registry.ModelVersion, bool, error)
	List(ctx context.Context) ([]registry.Model, error)
	Versions(ctx context.Context, name string) ([]registry.ModelVersion, error)
	Get(ctx context.Context, name, version string) (registry.ModelVersion, error)
	Signature(ctx context.Context, name, version string) (string, error)
	OpenArtifact(sha256 string) (*os.File, error)
	Manifest(ctx context.Context, name, version string, opts registry.ManifestOptions) ([]byte, *shoalv1.DeploymentManifest, error)
	ReferenceProfile(ctx context.Context, name, version string) (*shoalv1.ReferenceProfile, bool, error)
}

// Fleet enrolls devices and holds their desired state. Errors carry
// shoalerr codes: Invalid, NotFound, Unauthorized, Conflict.
type Fleet interface {
	CreateToken(ctx context.Context, ttl time.Duration) (fleet.Token, error)
	Enroll(ctx context.Context, req fleet.EnrollRequest) (fleet.Credentials, error)
	ListMatching(ctx context.Context, sel fleet.Selector) ([]fleet.Device, error)
	Get(ctx context.Context, id string) (fleet.Device, error)
	SetLabels(ctx context.Context, id string, labels map[string]*string, group *string) (fleet.Device, error)
	SetDesired(ctx context.Context, model string, envelope []byte, deviceIDs []string) ([]fleet.DesiredResult, error)
}

// Monitor summarises stored telemetry. Errors: Invalid, NotFound.
type Monitor interface {
	Summary(ctx context.Context, deviceID string) (monitor.Summary, error)
}

var (
	_ Registry = (*registry.Registry)(nil)
	_ Fleet    = (*fleet.Service)(nil)
	_ Monitor  = (*monitor.Monitor)(nil)
)

// Deps is what the API serves.
type Deps struct {
	Registry Registry
	Fleet    Fleet
	Monitor  Monitor
	// Rollouts runs staged rollouts; nil leaves the rollout routes out
	// (and direct deployments unchecked against them).
	Rollouts Rollouts
	// Datasets keeps uploaded CSV datasets; nil leaves the dataset routes
	// out.
	Datasets Datasets
	// Jobs runs training jobs; nil leaves the job routes out.
	Jobs Jobs
	// Drift measures data drift and keeps its policies and alerts; nil
	// leaves the drift and alert routes out.
	Drift Drift
	// Loop keeps retraining policies and runs; nil leaves the loop routes
	// out.
	Loop Loop
	// Captures keeps captured predictions and their labels; nil leaves the
	// capture routes out (and, with Datasets nil, the export to a dataset).
	Captures Captures
	// PublicKeyPEM is the trust root agents pin at enrollment.
	PublicKeyPEM []byte
	// TopicPrefix is the MQTT topic prefix agents are told at enrollment.
	TopicPrefix string
	// BrokerURL returns the MQTT URL agents are told at enrollment. It is a
	// function because the broker's port may be chosen only when it starts.
	BrokerURL func() string
	// Metrics, if set, returns the metrics GET /metrics adds to the
	// process's own (procstats); it is called once per scrape.
	Metrics func() []procstats.Metric
	// TrustedProxies are the addresses or CIDRs of reverse proxies whose
	// forwarding headers name the client; none by default.
	TrustedProxies []string
}

// maxJSONBody bounds a JSON request body.
const maxJSONBody = 1 << 20

type server struct {
	Deps
	log *slog.Logger
}

// quietGin turns gin's own output (route tables and warnings printed to
// stdout) off, once and race-free: gin's mode is process-wide, and Shoal
// logs through slog. A GIN_MODE set by the operator is left alone.
var quietGin = sync.OnceFunc(func() {
	if os.Getenv(gin.EnvGinMode) == "" {
		gin.SetMode(gin.ReleaseMode)
	}
})

// New returns the API's HTTP handler. Clients are known by the address
// they connect from: X-Forwarded-For and the like are believed only from
// Deps.TrustedProxies.
func New(deps Deps, log *slog.Logger) (http.Handler, error) {
	quietGin()
	s := &server{Deps: deps, log: log}
	r := gin.New()
	if err := r.SetTrustedProxies(deps.TrustedProxies); err != nil {
		return nil, fmt.Errorf("api: trusted proxies %v: %w", deps.TrustedProxies, err)
	}
	r.HandleMethodNotAllowed = true
	r.Use(s.requestID, s.logRequests, gin.CustomRecoveryWithWriter(nil, s.recovered))
	r.NoRoute(s.noRoute)
	r.NoMethod(s.noMethod)

	r.GET("/api/v1/trust/public-key", s.publicKey)

	r.GET("/api/v1/models", s.listModels)
	r.GET("/api/v1/models/:name", s.getModel)
	r.PUT("/api/v1/models/:name/versions/:version", s.pushModel)
	r.GET("/api/v1/models/:name/versions/:version", s.getVersion)
	r.GET("/api/v1/models/:name/versions/:version/signature", s.getSignature)
	r.GET("/api/v1/models/:name/versions/:version/artifact", s.getVersionArtifact)
	r.HEAD("/api/v1/models/:name/versions/:version/artifact", s.getVersionArtifact)
	r.GET("/v1/artifacts/:sha256", s.getArtifact)
	r.HEAD("/v1/artifacts/:sha256", s.getArtifact)

	r.POST("/api/v1/deployments", s.deploy)

	r.POST("/api/v1/tokens", s.createToken)
	r.POST("/v1/enroll", s.enroll)
	r.GET("/api/v1/devices", s.listDevices)
	r.GET("/api/v1/devices/:id", s.getDevice)
	r.PATCH("/api/v1/devices/:id", s.patchDevice)

	r.GET("/api/v1/telemetry", s.telemetry)

	if deps.Rollouts != nil {
		r.POST("/api/v1/rollouts", s.createRollout)
		r.GET("/api/v1/rollouts", s.listRollouts)
		r.GET("/api/v1/rollouts/:id", s.getRollout)
		r.GET("/api/v1/rollouts/:id/events", s.rolloutEvents)
		r.POST("/api/v1/rollouts/:id/:action", s.rolloutAction)
	}

	if deps.Datasets != nil {
		r.POST("/api/v1/datasets", s.pushDataset)
		r.GET("/api/v1/datasets", s.listDatasets)
		r.GET("/api/v1/datasets/:name", s.getDataset)
		r.GET("/api/v1/datasets/:name/versions/:version", s.getDatasetVersion)
		r.GET("/api/v1/datasets/:name/versions/:version/csv", s.getDatasetCSV)
		r.HEAD("/api/v1/datasets/:name/versions/:version/csv", s.getDatasetCSV)
	}

	if deps.Jobs != nil {
		r.POST("/api/v1/jobs", s.submitJob)
		r.GET("/api/v1/jobs", s.listJobs)
		r.GET("/api/v1/jobs/:id", s.getJob)
		r.POST("/api/v1/jobs/:id/cancel", s.cancelJob)
	}

	if deps.Drift != nil {
		r.GET("/api/v1/drift/:model", s.getDrift)
		r.GET("/api/v1/drift/:model/policy", s.getDriftPolicy)
		r.PUT("/api/v1/drift/:model/policy", s.putDriftPolicy)
		r.GET("/api/v1/alerts", s.listAlerts)
	}
	if deps.Loop != nil {
		r.GET("/api/v1/loop/:model", s.listLoopRuns)
		r.GET("/api/v1/loop/:model/policy", s.getLoopPolicy)
		r.PUT("/api/v1/loop/:model/policy", s.putLoopPolicy)
	}

	if deps.Captures != nil {
		r.GET("/api/v1/captures/:model", s.getCaptures)
		if deps.Datasets != nil {
			r.POST("/api/v1/captures/:model/dataset", s.capturesToDataset)
		}
	}

	r.GET("/metrics", gin.WrapH(procstats.Handler(deps.Metrics)))
	return r, nil
}
