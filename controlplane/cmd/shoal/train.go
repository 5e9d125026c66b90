package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/client"
)

func newTrainCmd(o *rootOptions) *cobra.Command {
	var (
		spec    client.JobSpec
		version string
		wait    bool
		poll    time.Duration
		gates   client.Gates
		latency time.Duration
	)
	cmd := &cobra.Command{
		Use:   "train --dataset NAME [--dataset-version V] --model NAME --trainer logistic|mlp [flags]",
		Short: "Train a model on a dataset in the control plane; it becomes the model's next version",
		Long: "Queue a training job: the control plane trains --trainer on a version of --dataset (the latest\n" +
			"unless --dataset-version says which), and on success stores the ONNX model as the next numbered\n" +
			"version of --model, with the reference profile agents bin live data with. Without --wait it\n" +
			"prints the job's id; with --wait it shows the progress and the holdout metrics at the end.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if spec.Dataset == "" || spec.Model == "" {
				return fmt.Errorf("both --dataset and --model are needed (the dataset to train on, and the model to make a version of)")
			}
			gates.MaxLatencyP95 = apiv1.Duration(latency)
			spec.Gates = gates
			var err error
			if spec.DatasetVersion, err = parseDatasetVersion(version); err != nil {
				return fmt.Errorf("--dataset-version: %w", err)
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			j, err := c.SubmitJob(cmd.Context(), spec)
			if err != nil {
				return fmt.Errorf("train on dataset %s: %w", spec.Dataset, err)
			}
			if !wait {
				if o.json {
					return printJSON(o.stdout, j)
				}
				fmt.Fprintln(o.stdout, j.ID)
				fmt.Fprintf(o.stderr, "queued %s; follow it with `shoal job show %s`\n", j.ID, j.ID)
				return nil
			}
			bar := newJobProgress(o.stderr)
			id := j.ID
			j, err = c.WaitJob(cmd.Context(), id, poll, bar.show)
			bar.done()
			if err != nil {
				return fmt.Errorf("wait for %s (it goes on; see `shoal job show %s`): %w", id, id, err)
			}
			if o.json {
				if err := printJSON(o.stdout, j); err != nil {
					return err
				}
			} else {
				printJob(o.stdout, j)
			}
			if j.State != "succeeded" {
				return fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Dataset, "dataset", "", "dataset to train on")
	f.StringVar(&version, "dataset-version", "latest", "dataset version: a number, or latest")
	f.StringVar(&spec.Model, "model", "", "model to make the next version of")
	f.StringVar(&spec.Trainer, "trainer", "logistic", "trainer: logistic (linear for regression), mlp, or a command trainer the control plane has")
	f.StringVar(&spec.Task, "task", "", "classification or regression (default: the dataset's)")
	f.IntSliceVar(&spec.Hidden, "hidden", nil, "hidden layer widths, for mlp (e.g. 64,32; default 64)")
	f.IntVar(&spec.Epochs, "epochs", 0, "most passes over the training rows (default 100)")
	f.Float64Var(&spec.LearningRate, "learning-rate", 0, "Adam's step size (default 0.01, 0.001 for mlp)")
	f.IntVar(&spec.BatchSize, "batch-size", 0, "mini-batch size (default 32)")
	f.Uint64Var(&spec.Seed, "seed", 0, "random seed: the same seed trains the same model")
	f.Float64Var(&gates.MinAccuracy, "min-accuracy", 0, "validation gate: least holdout accuracy (classification)")
	f.DurationVar(&latency, "max-latency", 0, "validation gate: p95 latency budget of one row on the control plane (default 50ms)")
	f.Float64Var(&gates.ChampionMargin, "champion-margin", 0, "validation gate: how much worse than the deployed champion the model may be (default 0.02)")
	f.BoolVar(&wait, "wait", false, "wait for the job to end, showing its progress, and print the result")
	f.DurationVar(&poll, "poll", 500*time.Millisecond, "how often --wait asks for the job's progress")
	return cmd
}

func newJobsCmd(o *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "jobs",
		Short: "List training jobs, the newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			list, err := c.Jobs(cmd.Context())
			if err != nil {
				return err
			}
			if o.json {
				if list == nil {
					list = []client.Job{}
				}
				return printJSON(o.stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(o.stdout, "no training jobs yet: start one with `shoal train --dataset N --model M`")
				return nil
			}
			rows := [][]string{}
			for _, j := range list {
				version, metric := "-", "-"
				if j.Result != nil {
					version, metric = j.Result.ModelVersion, client.MetricsLine(j.Result.Metrics)
				}
				rows = append(rows, []string{j.ID, j.State, j.Spec.Dataset + " " + datasetVersionName(j.Spec.DatasetVersion), j.Spec.Model, version,
					j.Spec.Trainer, epochOf(j), metric, ago(j.CreatedAt)})
			}
			return table(o.stdout, []string{"JOB", "STATE", "DATASET", "MODEL", "VERSION", "TRAINER", "EPOCH", "HOLDOUT", "CREATED"}, rows)
		},
	}
}

func newJobCmd(o *rootOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Show or cancel a training job"}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a training job: its state, progress, and what it made from what",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			j, err := c.Job(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(o.stdout, j)
			}
			printJob(o.stdout, j)
			return nil
		},
	}
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a training job: a queued one at once, a running one at its next batch",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			j, err := c.CancelJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(o.stdout, j)
			}
			if j.State == "running" {
				fmt.Fprintf(o.stdout, "stopping %s\n", j.ID)
			} else {
				fmt.Fprintf(o.stdout, "%s %s\n", j.ID, j.State)
			}
			return nil
		},
	}
	cmd.AddCommand(show, cancel)
	return cmd
}

// printJob describes a job for people.
func printJob(w io.Writer, j client.Job) {
	fmt.Fprintf(w, "%s %s: %s on dataset %s %s, model %s\n", j.ID, j.State, j.Spec.Trainer, j.Spec.Dataset, datasetVersionName(j.Spec.DatasetVersion), j.Spec.Model)
	if p := j.Progress; p != nil {
		fmt.Fprintf(w, "  epoch %d/%d  train loss %.4g  validation %s %.4g\n", p.Epoch, p.Epochs, p.TrainLoss, orDash(p.Metric), p.ValidationMetric)
	}
	if j.Error != "" {
		fmt.Fprintf(w, "  %s\n", j.Error)
	}
	r := j.Result
	if r == nil {
		return
	}
	fmt.Fprintf(w, "  made %s version %s  sha256:%s\n", r.Model, r.ModelVersion, shortDigest(r.ModelSHA256))
	fmt.Fprintf(w, "  holdout %s  (%d epochs, best %d; %d/%d/%d training/validation/holdout rows)\n",
		client.MetricsLine(r.Metrics), r.Epochs, r.BestEpoch, r.TrainRows, r.ValidationRows, r.HoldoutRows)
	l := r.Lineage
	fmt.Fprintf(w, "  from dataset %s v%d  sha256:%s  %d rows; shoal %s\n", l.Dataset, l.DatasetVersion, shortDigest(l.DatasetSHA256), l.DatasetRows, l.CodeVersion)
	if r.ProfileError != "" {
		fmt.Fprintf(w, "  no reference profile: %s\n", r.ProfileError)
	}
	printValidation(w, r.Validation)
}

// printValidation prints a version's validation gates as a table.
func printValidation(w io.Writer, v *client.Validation) {
	if v == nil {
		return
	}
	verdict := "PASSED: signed, can be deployed"
	if v.Status != "passed" {
		verdict = "FAILED: kept unsigned, cannot be deployed"
	}
	fmt.Fprintf(w, "  validation %s (%d holdout rows", verdict, v.HoldoutRows)
	if v.Champion != "" {
		fmt.Fprintf(w, ", champion version %s", v.Champion)
	}
	fmt.Fprintln(w, ")")
	rows := make([][]string, 0, len(v.Checks))
	for _, c := range v.Checks {
		mark := "pass"
		if !c.Passed {
			mark = "FAIL"
		}
		rows = append(rows, []string{"   " + c.Name, strconv.FormatFloat(c.Value, 'g', 5, 64), strconv.FormatFloat(c.Limit, 'g', 5, 64), mark, orDash(c.Detail)})
	}
	table(w, []string{"   CHECK", "VALUE", "LIMIT", "RESULT", "DETAIL"}, rows)
}

func epochOf(j client.Job) string {
	if j.Progress == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", j.Progress.Epoch, j.Progress.Epochs)
}

func datasetVersionName(v int) string {
	if v == 0 {
		return "latest"
	}
	return "v" + strconv.Itoa(v)
}

// jobProgress draws a job's progress on one terminal line; on anything
// else it writes nothing, so that logs and pipes get only the result.
type jobProgress struct {
	w    io.Writer
	tty  bool
	drew bool
}

func newJobProgress(w io.Writer) *jobProgress {
	p := &jobProgress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *jobProgress) show(j client.Job) {
	if !p.tty {
		return
	}
	const width = 24
	line := fmt.Sprintf("%s %s", j.ID, j.State)
	if pr := j.Progress; pr != nil && pr.Epochs > 0 {
		filled := min(width, width*pr.Epoch/pr.Epochs)
		line = fmt.Sprintf("%s [%s%s] epoch %d/%d  loss %.4f  %s %.4f", j.ID, strings.Repeat("#", filled), strings.Repeat(" ", width-filled),
			pr.Epoch, pr.Epochs, pr.TrainLoss, orDash(pr.Metric), pr.ValidationMetric)
	}
	fmt.Fprintf(p.w, "\r%-90s", line)
	p.drew = true
}

func (p *jobProgress) done() {
	if p.drew {
		fmt.Fprintln(p.w)
	}
}
