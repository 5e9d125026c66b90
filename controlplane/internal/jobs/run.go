package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/controlplane/internal/training"
	"github.com/shoalfleet/shoal/controlplane/internal/validation"
	"github.com/shoalfleet/shoal/internal/buildinfo"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// publishTimeout bounds storing a trained model and its profile.
const publishTimeout = 10 * time.Minute

// pushAttempts is how often a job tries the next version number when
// another push took the one it chose.
const pushAttempts = 5

// predictRows bounds the rows run through the model at once.
const predictRows = 4096

// run runs one job: it loads the dataset, trains, and stores the model
// with its reference profile.
func (r *Runner) run(ctx context.Context, e *entry) (*Result, error) {
	const op = "jobs.run"
	r.mu.Lock()
	spec := e.job.Spec
	r.mu.Unlock()
	spec.Hidden = append([]int(nil), spec.Hidden...)

	ds, err := r.datasets.Load(ctx, spec.Dataset, spec.DatasetVersion)
	if err != nil {
		return nil, err
	}
	task := training.Task(ds.Task)
	if spec.Task != "" && spec.Task != task {
		return nil, shoalerr.E(shoalerr.Invalid, op, "the job asks for %s but dataset %s v%d is a %s dataset (label %q); leave task out, or push the dataset again with --task %s",
			spec.Task, ds.Name, ds.Version, ds.Task, ds.Label, spec.Task)
	}
	tspec := spec.Spec
	tspec.Task = task
	if err := spec.Gates.Check(task); err != nil {
		return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "job spec")
	}
	trainer := r.trainers[spec.Trainer]
	if _, builtin := trainer.(training.Builtin); builtin {
		tspec = tspec.Defaults()
	}
	names := make([]string, len(ds.Features))
	for i, f := range ds.Features {
		names[i] = f.Name
	}
	data := training.Data{X: ds.X, Y: ds.Y, Features: names, Target: ds.Label, Classes: ds.Classes}
	res, err := trainer.Train(ctx, tspec, data, func(p training.Progress) { r.progress(e, p) })
	if err != nil {
		return nil, err
	}

	// Training is done: what follows stores the model whatever happens to
	// the job's context, so that a late cancel or a shutdown does not
	// leave a version half-made.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	out := &Result{
		Model: spec.Model, Metrics: res.Metrics, Epochs: res.Epochs, BestEpoch: res.BestEpoch,
		TrainRows: res.TrainRows, ValidationRows: res.ValidationRows, HoldoutRows: res.HoldoutRows, Imputed: res.Imputed,
		Lineage: Lineage{
			Dataset: ds.Name, DatasetVersion: ds.Version, DatasetSHA256: ds.Digest, DatasetRows: ds.Rows,
			Features: names, Label: ds.Label, Classes: ds.Classes,
			Trainer: spec.Trainer, Spec: tspec, CodeVersion: buildinfo.Version,
			Metrics: res.Metrics, Model: spec.Model,
		},
	}
	profile, perr := profileOf(res, ds)
	rep, err := r.validate(pctx, spec, tspec, res, ds, out.Lineage)
	if err != nil {
		return nil, err
	}
	mv, err := r.push(pctx, spec.Model, res.Model, rep)
	if err != nil {
		return nil, err
	}
	out.ModelVersion, out.ModelSHA256, out.Lineage.ModelVersion = mv.Version, mv.SHA256, mv.Version
	out.Validation = mv.Validation
	if perr == nil {
		perr = r.registry.SetReferenceProfile(pctx, mv.Name, mv.Version, profile)
	}
	if perr != nil {
		out.ProfileError = perr.Error()
		r.log.Warn("model stored without a reference profile: agents will send no data statistics for it", "job", e.job.ID,
			"model", mv.Name, "version", mv.Version, "err", perr)
	} else if b, err := datastats.EncodeProfile(profile); err == nil {
		out.ProfileBytes = len(b)
	}
	if !rep.Passed() {
		return out, shoalerr.E(shoalerr.Invalid, op, "version %s of %s failed validation: %s; it is kept, unsigned, and cannot be deployed",
			mv.Version, mv.Name, rep.Summary())
	}
	return out, nil
}

// validate judges a trained model by the job's gates on the holdout rows
// the built-in trainers held out (training.Split with the spec's holdout
// share and seed). A command trainer's holdout is its own, so its
// metrics are recomputed on that same split but not held to parity.
//
// The champion is the newest version of the model that is deployable:
// passed validation, or pushed by hand.
func (r *Runner) validate(ctx context.Context, spec Spec, tspec training.Spec, res *training.Result, ds *dataset.Dataset, lin Lineage) (*validation.Report, error) {
	lineage, err := json.Marshal(lin)
	if err != nil {
		return nil, fmt.Errorf("validation: encode lineage: %w", err)
	}
	clf := tspec.Task == training.Classification
	reported := res.Metrics
	split := tspec
	if _, builtin := r.trainers[spec.Trainer].(training.Builtin); !builtin {
		split, reported = tspec.Defaults(), nil
	}
	_, held := training.Split(ds.Y, split.Holdout, clf, split.Seed)
	in := validation.Input{
		Candidate: res.Model, Input: res.Input, Task: tspec.Task, Classes: len(ds.Classes),
		Reported: reported, Lineage: lineage, Now: r.now,
	}
	for _, i := range held {
		in.X, in.Y = append(in.X, ds.X[i]), append(in.Y, ds.Y[i])
	}
	if in.ChampionVersion, in.Champion, err = r.champion(ctx, spec.Model); err != nil {
		return nil, err
	}
	rep, err := validation.Validate(ctx, in, spec.Gates)
	if err != nil {
		return nil, err
	}
	return &rep, nil
}

// champion returns the newest deployable version of model and its bytes,
// or nothing when there is none.
func (r *Runner) champion(ctx context.Context, model string) (string, []byte, error) {
	vs, err := r.registry.Versions(ctx, model)
	if shoalerr.Is(err, shoalerr.NotFound) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ValidationStatus() == validation.Failed {
			continue
		}
		f, err := r.registry.OpenArtifact(vs[i].SHA256)
		if err != nil {
			return "", nil, fmt.Errorf("validation: open champion %s version %s: %w", model, vs[i].Version, err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return "", nil, fmt.Errorf("validation: read champion %s version %s: %w", model, vs[i].Version, err)
		}
		return vs[i].Version, b, nil
	}
	return "", nil, nil
}

// push stores the model as the next numeric version of name.
func (r *Runner) push(ctx context.Context, name string, model []byte, rep *validation.Report) (registry.ModelVersion, error) {
	r.publish.Lock()
	defer r.publish.Unlock()
	var err error
	for range pushAttempts {
		var vs []registry.ModelVersion
		vs, err = r.registry.Versions(ctx, name)
		if err != nil && !shoalerr.Is(err, shoalerr.NotFound) {
			return registry.ModelVersion{}, err
		}
		var mv registry.ModelVersion
		mv, _, err = r.registry.PushValidated(ctx, name, nextVersion(vs), bytes.NewReader(model), rep)
		if !shoalerr.Is(err, shoalerr.Conflict) {
			return mv, err
		}
	}
	return registry.ModelVersion{}, err
}

// nextVersion is one more than the highest version that is a whole
// number written plainly ("7", not "07"), or "1".
func nextVersion(vs []registry.ModelVersion) string {
	top := 0
	for _, v := range vs {
		if n, err := strconv.Atoi(v.Version); err == nil && n > top && strconv.Itoa(n) == v.Version {
			top = n
		}
	}
	return strconv.Itoa(top + 1)
}

// profileOf makes the reference profile of a trained model: the dataset's
// rows as its input, the model's predictions on them as its output.
func profileOf(res *training.Result, ds *dataset.Dataset) (*shoalv1.ReferenceProfile, error) {
	s, err := onnxrt.Open(res.Model, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		return nil, fmt.Errorf("reference profile: load the trained model: %w", err)
	}
	defer s.Close()
	in, ok := findInput(s.Inputs(), res.Input)
	if !ok {
		return nil, fmt.Errorf("reference profile: the trained model has no input %q", res.Input)
	}
	inputs := datastats.Table{Name: in.Name, Rows: ds.X}
	for _, f := range ds.Features {
		c := datastats.Column{Name: f.Name}
		if f.Categorical && len(f.Categories) > 0 && len(f.Categories) <= datastats.MaxBins {
			c.Classes = len(f.Categories)
		}
		inputs.Columns = append(inputs.Columns, c)
	}
	outputs, err := predict(s, in.Name, ds)
	if err != nil {
		return nil, err
	}
	p, err := datastats.NewProfile(inputs, outputs, datastats.ProfileOptions{})
	if err != nil {
		return nil, fmt.Errorf("reference profile: %w", err)
	}
	return p, nil
}

func findInput(specs []onnxrt.TensorSpec, name string) (onnxrt.TensorSpec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	if name == "" && len(specs) > 0 {
		return specs[0], true
	}
	return onnxrt.TensorSpec{}, false
}

// predict runs the model over the dataset's rows and returns the output a
// profile bins: for classification the INT64 output named "label" (or the
// only INT64 output) as one categorical column, for regression the output
// named "output" (or the first float output). It returns an empty table
// when the model has no such output.
func predict(s *onnxrt.Session, input string, ds *dataset.Dataset) (datastats.Table, error) {
	var out onnxrt.TensorSpec
	clf := ds.Task == dataset.Classification
	for _, o := range s.Outputs() {
		want := o.DataType == onnxrt.FP32 || o.DataType == onnxrt.FP64
		if clf {
			want = o.DataType == onnxrt.INT64
		}
		if want && (out.Name == "" || o.Name == "label" || o.Name == "output") {
			out = o
		}
	}
	if out.Name == "" {
		return datastats.Table{}, nil
	}
	width := len(ds.Features)
	t := datastats.Table{Name: out.Name, Rows: make([][]float64, 0, len(ds.X))}
	for start := 0; start < len(ds.X); start += predictRows {
		rows := ds.X[start:min(start+predictRows, len(ds.X))]
		x := make([]float32, 0, len(rows)*width)
		for _, row := range rows {
			for _, v := range row {
				x = append(x, float32(v))
			}
		}
		res, err := s.Run([]onnxrt.Tensor{{Name: input, DataType: onnxrt.FP32, Shape: []int64{int64(len(rows)), int64(width)}, Data: x}})
		if err != nil {
			return datastats.Table{}, fmt.Errorf("reference profile: run the trained model: %w", err)
		}
		var vals []float64
		for _, r := range res {
			if r.Name != out.Name {
				continue
			}
			switch d := r.Data.(type) {
			case []int64:
				for _, v := range d {
					vals = append(vals, float64(v))
				}
			case []float32:
				for _, v := range d {
					vals = append(vals, float64(v))
				}
			case []float64:
				vals = d
			}
		}
		if len(vals) == 0 || len(vals)%len(rows) != 0 {
			return datastats.Table{}, fmt.Errorf("reference profile: output %q gave %d values for %d rows", out.Name, len(vals), len(rows))
		}
		w := len(vals) / len(rows)
		for i := range rows {
			t.Rows = append(t.Rows, vals[i*w:(i+1)*w])
		}
		if t.Columns == nil {
			switch {
			case clf:
				t.Columns = []datastats.Column{{Name: out.Name, Classes: len(ds.Classes)}}
			case w == 1:
				t.Columns = []datastats.Column{{Name: out.Name}}
			default:
				for j := range w {
					t.Columns = append(t.Columns, datastats.Column{Name: out.Name + "_" + strconv.Itoa(j)})
				}
			}
		}
		if len(t.Columns) != w {
			return datastats.Table{}, fmt.Errorf("reference profile: output %q changed width from %d to %d", out.Name, len(t.Columns), w)
		}
	}
	return t, nil
}
