// Package training turns a data set and a spec into an ONNX model and its
// metrics (DESIGN.md §8). It takes the data set as plain slices: parsing
// files is the dataset package's job.
//
// # Built-in trainers
//
// Builtin trains in Go, with no process or library beyond gonum's BLAS:
//
//   - "logistic" (alias "linear"): softmax regression for classification,
//     linear regression for regression;
//   - "mlp": a multi-layer perceptron with Spec.Hidden layers and ReLU or
//     tanh between them.
//
// The rows are split, shuffled with Spec.Seed, into a holdout share
// (Spec.Holdout, stratified by class for classification) that only
// measures the model, and the rest, of which Spec.ValidationSplit picks
// the best epoch and stops training early. Missing values (NaN) become the
// feature's mean over the training rows. Features are standardised with
// the training rows' mean and standard deviation. Adam minimises softmax
// cross-entropy or squared error over shuffled mini-batches.
//
// The model written is onnxbuild's MLP (opset 17): FP32 input "input"
// [batch, features] of raw values, as the data set holds them — the
// imputation (only when the data set had missing values), the
// standardisation and, for regression, the target's scale are in the
// graph — and outputs "probabilities" [batch, classes] and "label" [batch]
// (INT64 class index) for classification, or "output" [batch, 1]. Its
// metadata holds the feature names, target and class names (Meta*).
// ONNX Runtime's outputs match the trainer's own forward pass within 1e-4,
// and the same seed gives the same bytes.
//
// # Command trainer
//
// Command runs any executable — a PyTorch script, a wrapper that starts a
// container or a Kubernetes Job and waits for it — in a fresh work
// directory, as
//
//	EXE [ARGS...] --data DIR/data.csv --spec DIR/spec.json --out DIR/out
//
// with the same three paths in $SHOAL_DATA, $SHOAL_SPEC and $SHOAL_OUT.
// Its environment is only PATH, HOME, TMPDIR (the work directory), those
// three and Command.Env: none of the control plane's own.
//
// data.csv has a header row of the feature names then the target's name,
// one row per example, numbers in Go's shortest form ("0.1", "1e-07"), a
// missing value as an empty field, and the target as the class index
// (0, 1, ...) for classification or the value for regression.
//
// spec.json is the Spec as given (its JSON field names), plus "features",
// "target" and, for classification, "classes" (class i's name).
//
// The executable must, before it exits 0:
//   - write the model to out/model.onnx (at most onnxrt.MaxModelBytes);
//   - write its metrics to out/metrics.json, a JSON object of numbers,
//     such as {"accuracy": 0.93, "macro_f1": 0.91}; use the names of the
//     Metric* constants for the metrics they name.
//
// Every line it writes to stdout or stderr is passed on as Progress. A
// line that is a JSON object with an "epoch" field, such as
//
//	{"epoch": 3, "epochs": 20, "train_loss": 0.41, "validation_loss": 0.45, "validation_metric": 0.88, "metric": "accuracy"}
//
// also fills Progress's epoch fields and Result.History. Lines are cut at
// 4 KiB.
//
// A run that exits non-zero, is killed, writes no model, a model that is
// not ONNX, or metrics that are not that object fails with an error that
// says which, with the last lines of the executable's output. A run that
// outlives Command.Timeout (default one hour) or its context is stopped:
// its process group gets SIGTERM, then SIGKILL 10 s later. The work
// directory is removed afterwards.
package training
