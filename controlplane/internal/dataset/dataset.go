// Package dataset turns uploaded CSV files into training data and keeps
// them. Parse reads a CSV into a Dataset: a float64 matrix of features and
// a label vector. Store keeps each pushed CSV once, content-addressed on
// disk, with a versioned record in the control plane's store, so that a
// trainer can Load any version again from the very bytes that were pushed.
//
// # Reading the CSV
//
// The first row is a header naming every column. Names and values are
// trimmed of the spaces around them (iris.csv's ", Sepal width" is the
// column "Sepal width"), a UTF-8 byte-order mark before the header is
// dropped, lines may end in LF or CRLF, and fields may be quoted as RFC
// 4180 says (encoding/csv). Blank lines are skipped. Rows are numbered as
// the lines of the file: the header is row 1, so the row an error names is
// the line an editor shows (for a row with a quoted line break, the line
// it starts on).
//
// One column, named by the caller, is the label; it may be anywhere. Every
// other column is a feature, in file order.
//
// # Missing values
//
// An empty cell is missing, and so are NA, N/A, NaN, null and ? in any
// case, the markers R, pandas, spreadsheets and the UCI data sets write: a
// missing feature value is NaN in X. Every row needs a label.
//
// # Column types
//
// A number is what strconv.ParseFloat reads from decimal digits, a sign, a
// point and an exponent: no hex, underscores or infinities. A feature
// column is numeric when most of its non-missing values are numbers, and
// categorical otherwise (a tie is categorical). In a numeric column, a
// value that is not a number is an error naming its row and column: a
// stray typo among measurements is a mistake to fix, not a reason to make
// 150 numbers into 150 categories, which typing by the first value or by
// "all values parse" would do silently.
//
// # Categorical encoding
//
// A categorical column stays one feature, holding an ordinal code: its
// distinct values are numbered 0, 1, 2, ... in the order they first appear
// in the file, and kept as Feature.Categories so that the same encoding can
// be applied later (Feature.Value). One column per category was not chosen
// because the width of X would then depend on the data: a model's inputs
// would no longer be the CSV's columns one for one (the drift statistics
// and reference profiles are per input), and a new category would shift
// every later column. A trainer that wants one-hot inputs expands the codes
// itself from Categories. First appearance rather than sorted order keeps
// the codes of a dataset whose next version appends rows: new categories
// get new codes at the end and the old ones keep theirs. A number in a
// categorical column is the category named by its shortest form ("01",
// "1.0" and "1" are the category "1").
//
// # Label and task
//
// The task is Classification or Regression. The caller may say which;
// otherwise it is inferred from the label column: if most labels are not
// numbers, classification; if every label is a number, classification when
// they are whole numbers with at most MaxInferredClasses distinct values
// (digits 0–9, ratings 1–5, 0/1 flags), regression otherwise. A label
// column where most values are numbers but some are not is an error naming
// the first row that is not, unless the caller asks for classification.
// The rule errs towards classification for small integer labels because a
// regression target with so few whole values is rare; pass the task to
// override it.
//
// For classification, the classes are the distinct label values, sorted
// (by value if every label is a number, the shortest form naming each, so
// "1.0" and "1" are one class; by byte order otherwise), and Y holds each
// row's class index. Sorted order makes the mapping independent of the
// order of the rows, so shuffling a CSV does not renumber a model's
// outputs. For regression, every label must be a number, and Y holds it.
//
// # Bounds
//
// Limits bound the bytes, rows, columns, feature values, categories per
// column and classes; the column names, categories and classes together
// may hold at most 1 MiB, so that the schema fits in one store record.
package dataset

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Task says what a model trained on a dataset predicts.
type Task string

// The tasks.
const (
	Classification Task = "classification"
	Regression     Task = "regression"
)

// checkTask accepts the tasks and "" (infer it).
func checkTask(op string, t Task) error {
	switch t {
	case "", Classification, Regression:
		return nil
	}
	return shoalerr.E(shoalerr.Invalid, op, "task %.40q is not %s or %s; leave it out to infer it from the label column", t, Classification, Regression)
}

// MaxInferredClasses is the most distinct whole-number labels an inferred
// task treats as classes rather than a regression target.
const MaxInferredClasses = 20

// Feature is one feature column.
type Feature struct {
	Name string `json:"name"`
	// Categorical marks a column of categories; X holds their codes.
	Categorical bool `json:"categorical"`
	// Categories are a categorical column's values; the code of each is
	// its index.
	Categories []string `json:"categories,omitempty"`
}

// Value encodes one cell of this feature's column as Parse does: a missing
// value is NaN, a number in a numeric column is itself, a category is its
// code. Errors: Invalid (not a number in a numeric column; a category the
// column does not have).
func (f Feature) Value(cell string) (float64, error) {
	const op = "dataset.Feature.Value"
	v := strings.TrimSpace(cell)
	if isMissing(v) {
		return math.NaN(), nil
	}
	num, isNum := parseNumber(v)
	if !f.Categorical {
		if !isNum {
			return 0, shoalerr.E(shoalerr.Invalid, op, "column %q: %s", f.Name, notNumber(v))
		}
		return num, nil
	}
	if isNum {
		v = numberName(num)
	}
	for i, c := range f.Categories {
		if c == v {
			return float64(i), nil
		}
	}
	return 0, shoalerr.E(shoalerr.Invalid, op, "column %q has no category %.80q; its %d categories are those of the data it was read from",
		f.Name, v, len(f.Categories))
}

// Dataset is a parsed CSV: one row of X and one value of Y per data row.
type Dataset struct {
	// Name and Version are the stored dataset's (Store.Load); Parse sets
	// Name from its options and leaves Version 0.
	Name    string
	Version int
	Task    Task
	// Features are the columns other than the label, in file order; X's
	// columns.
	Features []Feature
	// Label is the label column's name.
	Label string
	// Classes are the class names of a classification task, sorted (the
	// package doc says how); Y holds indexes into them. Nil for regression.
	Classes []string
	// X holds Rows rows of len(Features) values: numbers, category codes,
	// NaN for missing.
	X [][]float64
	// Y holds the label of each row: a class index or a number.
	Y    []float64
	Rows int
	// Digest is the SHA-256 of the CSV's bytes, in lower-case hex.
	Digest string
	// CreatedAt is when the version was pushed (Store.Load); zero from
	// Parse.
	CreatedAt time.Time
}

// isMissing reports whether a trimmed cell is a missing value.
func isMissing(v string) bool {
	switch len(v) {
	case 0:
		return true
	case 1:
		return v == "?"
	case 2:
		return strings.EqualFold(v, "NA")
	case 3:
		return strings.EqualFold(v, "N/A") || strings.EqualFold(v, "NaN")
	case 4:
		return strings.EqualFold(v, "null")
	}
	return false
}

// parseNumber reads a decimal number; ok is false for anything else,
// infinities and values out of float64's range included.
func parseNumber(v string) (float64, bool) {
	if v == "" {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9', c == '.', c == '-', c == '+', c == 'e', c == 'E':
		default:
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// numberName is the shortest form of a number, naming it as a category or
// class.
func numberName(f float64) string {
	if f == 0 {
		f = 0 // -0 is 0
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// notNumber says why v is not a number.
func notNumber(v string) string {
	if _, err := strconv.ParseFloat(v, 64); errors.Is(err, strconv.ErrRange) {
		return fmt.Sprintf("%.80q is out of the range of a 64-bit float", v)
	}
	return fmt.Sprintf("%.80q is not a number", v)
}
