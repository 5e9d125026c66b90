package api

import (
	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/loop"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// The views the domain packages build (a rollout, a device, drift,
// telemetry) are apiv1 types already. The records below are not, since
// they carry domain types and behaviour of their own (a training spec, a
// latency budget as a time.Duration, ONNX tensor types); this file is the
// one place they become apiv1 types, and requests become them.
// views_test.go checks that no field is lost: a record's stored JSON and
// its view's are the same bytes.

// convert maps f over in, keeping nil nil (null in JSON) and empty empty.
func convert[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

func modelVersionView(mv registry.ModelVersion) apiv1.ModelVersion {
	return apiv1.ModelVersion{
		Name: mv.Name, Version: mv.Version, SHA256: mv.SHA256, Size: mv.Size, CreatedAt: mv.CreatedAt,
		ArtifactURL: mv.ArtifactURL, Signature: mv.Signature, KeyID: mv.KeyID,
		Inputs:     convert(mv.Inputs, tensorSpecView),
		Outputs:    convert(mv.Outputs, tensorSpecView),
		Validation: validationView(mv.Validation),
	}
}

func tensorSpecView(s onnxrt.TensorSpec) apiv1.TensorSpec {
	return apiv1.TensorSpec{Name: s.Name, DataType: string(s.DataType), Shape: s.Shape}
}

func validationView(r *validation.Report) *apiv1.Validation {
	if r == nil {
		return nil
	}
	return &apiv1.Validation{
		Status: string(r.Status),
		Checks: convert(r.Checks, func(c validation.Check) apiv1.ValidationCheck {
			return apiv1.ValidationCheck{Name: c.Name, Passed: c.Passed, Value: c.Value, Limit: c.Limit, Detail: c.Detail}
		}),
		Reasons: r.Reasons, Champion: r.Champion, HoldoutRows: r.HoldoutRows,
		Gates:   gatesView(r.Gates),
		Lineage: r.Lineage, ValidatedAt: r.ValidatedAt,
	}
}

func gatesView(g validation.Gates) apiv1.Gates {
	return apiv1.Gates{
		MinAccuracy: g.MinAccuracy, MinF1: g.MinF1, MaxRMSE: g.MaxRMSE, MaxMAE: g.MaxMAE,
		ChampionMargin: g.ChampionMargin, LatencyRuns: g.LatencyRuns, MaxLatencyP95: apiv1.Duration(g.MaxLatencyP95),
	}
}

func gatesOf(g apiv1.Gates) validation.Gates {
	return validation.Gates{
		MinAccuracy: g.MinAccuracy, MinF1: g.MinF1, MaxRMSE: g.MaxRMSE, MaxMAE: g.MaxMAE,
		ChampionMargin: g.ChampionMargin, LatencyRuns: g.LatencyRuns, MaxLatencyP95: g.MaxLatencyP95.D(),
	}
}

func datasetVersionView(v dataset.Version) apiv1.DatasetVersion {
	return apiv1.DatasetVersion{
		Name: v.Name, Version: v.Version, SHA256: v.SHA256, Size: v.Size, Label: v.Label, Task: string(v.Task), Rows: v.Rows,
		Features: convert(v.Features, func(f dataset.Feature) apiv1.DatasetFeature {
			return apiv1.DatasetFeature{Name: f.Name, Categorical: f.Categorical, Categories: f.Categories}
		}),
		Classes: v.Classes, CreatedAt: v.CreatedAt, CSVURL: v.CSVURL,
	}
}

func datasetSummaryView(s dataset.Summary) apiv1.DatasetSummary {
	return apiv1.DatasetSummary{
		Name: s.Name, Versions: s.Versions, Latest: s.Latest, Label: s.Label, Task: string(s.Task),
		Rows: s.Rows, Features: s.Features, Classes: s.Classes, Size: s.Size, UpdatedAt: s.UpdatedAt,
	}
}

func jobView(j jobs.Job) apiv1.Job {
	out := apiv1.Job{
		ID: j.ID, State: string(j.State), Spec: jobSpecView(j.Spec), CreatedAt: j.CreatedAt,
		StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
		History:         convert(j.History, progressView),
		CancelRequested: j.CancelRequested, Error: j.Error,
	}
	if j.Progress != nil {
		p := progressView(*j.Progress)
		out.Progress = &p
	}
	if r := j.Result; r != nil {
		out.Result = &apiv1.JobResult{
			Model: r.Model, ModelVersion: r.ModelVersion, ModelSHA256: r.ModelSHA256, Metrics: r.Metrics,
			Epochs: r.Epochs, BestEpoch: r.BestEpoch,
			TrainRows: r.TrainRows, ValidationRows: r.ValidationRows, HoldoutRows: r.HoldoutRows,
			Imputed: convert(r.Imputed, func(im training.Imputation) apiv1.Imputation {
				return apiv1.Imputation{Feature: im.Feature, Missing: im.Missing, Value: im.Value}
			}),
			ProfileBytes: r.ProfileBytes, ProfileError: r.ProfileError,
			Lineage:    lineageView(r.Lineage),
			Validation: validationView(r.Validation),
		}
	}
	return out
}

func jobSpecView(s jobs.Spec) apiv1.JobSpec {
	return apiv1.JobSpec{
		Dataset: s.Dataset, DatasetVersion: s.DatasetVersion, Model: s.Model,
		Gates:        gatesView(s.Gates),
		TrainingSpec: trainingSpecView(s.Spec),
	}
}

func jobSpecOf(s apiv1.JobSpec) jobs.Spec {
	return jobs.Spec{
		Dataset: s.Dataset, DatasetVersion: s.DatasetVersion, Model: s.Model,
		Gates: gatesOf(s.Gates),
		Spec: training.Spec{
			Trainer: s.Trainer, Task: training.Task(s.Task), Hidden: s.Hidden, Activation: s.Activation,
			LearningRate: s.LearningRate, Epochs: s.Epochs, BatchSize: s.BatchSize, L2: s.L2, Seed: s.Seed,
			ValidationSplit: s.ValidationSplit, Patience: s.Patience, Holdout: s.Holdout,
		},
	}
}

func trainingSpecView(s training.Spec) apiv1.TrainingSpec {
	return apiv1.TrainingSpec{
		Trainer: s.Trainer, Task: string(s.Task), Hidden: s.Hidden, Activation: s.Activation,
		LearningRate: s.LearningRate, Epochs: s.Epochs, BatchSize: s.BatchSize, L2: s.L2, Seed: s.Seed,
		ValidationSplit: s.ValidationSplit, Patience: s.Patience, Holdout: s.Holdout,
	}
}

func progressView(p training.Progress) apiv1.JobProgress {
	return apiv1.JobProgress{
		Epoch: p.Epoch, Epochs: p.Epochs, TrainLoss: p.TrainLoss, ValidationLoss: p.ValidationLoss,
		ValidationMetric: p.ValidationMetric, Metric: p.Metric, Line: p.Line, Stream: p.Stream,
	}
}

func lineageView(l jobs.Lineage) apiv1.JobLineage {
	return apiv1.JobLineage{
		Dataset: l.Dataset, DatasetVersion: l.DatasetVersion, DatasetSHA256: l.DatasetSHA256, DatasetRows: l.DatasetRows,
		Features: l.Features, Label: l.Label, Classes: l.Classes, Trainer: l.Trainer,
		Spec:        trainingSpecView(l.Spec),
		CodeVersion: l.CodeVersion, Metrics: l.Metrics, Model: l.Model, ModelVersion: l.ModelVersion,
	}
}

func loopPolicyView(p loop.Policy) apiv1.LoopPolicy {
	out := apiv1.LoopPolicy{
		Retrain: p.Retrain, Dataset: p.Dataset, Captures: p.Captures,
		Rollout: p.Rollout, Cooldown: p.Cooldown, UpdatedAt: p.UpdatedAt,
	}
	if p.Gates != nil {
		g := gatesView(*p.Gates)
		out.Gates = &g
	}
	return out
}

func loopPolicyOf(p apiv1.LoopPolicy) loop.Policy {
	out := loop.Policy{
		Retrain: p.Retrain, Dataset: p.Dataset, Captures: p.Captures,
		Rollout: p.Rollout, Cooldown: p.Cooldown, UpdatedAt: p.UpdatedAt,
	}
	if p.Gates != nil {
		g := gatesOf(*p.Gates)
		out.Gates = &g
	}
	return out
}

func loopRunView(r loop.Run) apiv1.LoopRun { return r.LoopRun }
