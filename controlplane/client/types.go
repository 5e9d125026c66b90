package client

import "github.com/shoalfleet/shoal/controlplane/apiv1"

// The client's names for the API's bodies it sends and returns. Each is
// the apiv1 type itself (an alias), so that the JSON is declared once;
// they keep the client's callers' code as it was.
type (
	ModelSummary     = apiv1.ModelSummary
	ModelVersion     = apiv1.ModelVersion
	TensorSpec       = apiv1.TensorSpec
	Validation       = apiv1.Validation
	ValidationCheck  = apiv1.ValidationCheck
	Gates            = apiv1.Gates
	DeployResult     = apiv1.Deployment
	Token            = apiv1.Token
	Device           = apiv1.Device
	DeviceModel      = apiv1.DeviceModel
	TelemetrySummary = apiv1.TelemetrySummary
	TelemetryCounts  = apiv1.DeviceTelemetry
	Rollout          = apiv1.Rollout
	RolloutStage     = apiv1.StageStatus
	RolloutDevice    = apiv1.RolloutDevice
	RolloutEvent     = apiv1.RolloutEvent
	DatasetVersion   = apiv1.DatasetVersion
	DatasetSummary   = apiv1.DatasetSummary
	DatasetFeature   = apiv1.DatasetFeature
	JobSpec          = apiv1.JobSpec
	TrainingSpec     = apiv1.TrainingSpec
	Job              = apiv1.Job
	JobProgress      = apiv1.JobProgress
	JobResult        = apiv1.JobResult
	JobLineage       = apiv1.JobLineage
	DriftReport      = apiv1.DriftReport
	DriftWindow      = apiv1.DriftWindow
	FeatureDrift     = apiv1.FeatureDrift
	DriftPolicy      = apiv1.DriftPolicy
	Alert            = apiv1.Alert
	AlertWindow      = apiv1.AlertWindow
	LoopPolicy       = apiv1.LoopPolicy
	LoopRun          = apiv1.LoopRun
	LoopEvent        = apiv1.LoopEvent
	CaptureCounts    = apiv1.CaptureCounts
)
