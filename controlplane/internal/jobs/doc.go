// Package jobs runs training jobs in the background (DESIGN §8): a job
// loads a stored dataset version, trains a model on it with a trainer
// (training.Builtin, or a command trainer the operator registers), and on
// success pushes the ONNX model into the registry as the model's next
// version, stores the version's reference profile (DESIGN §7), and keeps a
// lineage record of what the model was made from and how.
//
// # States
//
// A job is queued, then running, then one of succeeded, failed or
// cancelled, which are final. A Runner runs a few jobs at a time (one
// unless WithWorkers says otherwise) in submission order; the rest wait
// in a queue of at most WithMaxQueued jobs.
//
// Jobs live in the control plane's store under "jobs/". When the control
// plane stops — Close, or a crash found on the next start — a running job
// is marked failed with the reason: it is not started again, because a
// job that brought the process down would do so at every start, and a
// partly run job is cheap to submit again (the same seed gives the same
// model). Queued jobs had not started: they stay queued and run after the
// restart.
//
// # Progress
//
// Each epoch updates the job's progress (epoch, epochs, training loss,
// validation loss and metric) and its history. Both are kept in memory
// and written to the store at most every two seconds and at every change
// of state. The history keeps at most 1000 epochs: past that, every other
// one is dropped, so a long run keeps its whole curve at a coarser step.
//
// # Versions
//
// A job names the version it pushes after the model's highest numeric
// version: "1" for a new model, then "2", "3", ... Versions that are not
// whole numbers (pushed by hand, "2024-06-rc1") are not counted. Should
// another push take that version first, the job takes the next one.
//
// # Reference profile
//
// The profile's inputs are the dataset's features, for every row of the
// dataset (training, validation and holdout rows alike: it is the data
// the model was made from), as the model's input tensor; a categorical
// feature is a categorical column of its categories' codes. Its outputs
// are the model's own predictions on those rows, computed by running the
// ONNX model with ONNX Runtime: for classification the INT64 label output
// as a categorical column with one class per dataset class, for regression
// the float output. A model with no such output (a command trainer's) gets
// a profile of its inputs only.
//
// # Cancel
//
// Cancel ends a queued job at once and stops a running one at its next
// batch (a command trainer's process group gets SIGTERM). Once training
// has finished the model is stored whatever happens: a cancel then comes
// too late, and the job succeeds.
//
// # Validation gates
//
// There are none here yet: a succeeded job's Result holds the holdout
// metrics, and the place a gate would refuse a model is marked in run.go,
// between training and pushing.
package jobs
