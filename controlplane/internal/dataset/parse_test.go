package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

var nan = math.NaN()

// sameFloats compares as ==, with NaN equal to NaN (a missing value).
func sameFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}

func sameMatrix(a, b [][]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameFloats(a[i], b[i]) {
			return false
		}
	}
	return true
}

func parseFile(t *testing.T, path string, opts Options) (*Dataset, []byte, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(bytes.NewReader(data), opts)
	return d, data, err
}

func num(names ...string) []Feature {
	fs := make([]Feature, len(names))
	for i, n := range names {
		fs[i] = Feature{Name: n}
	}
	return fs
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		file     string
		opts     Options
		task     Task
		features []Feature
		label    string
		classes  []string
		x        [][]float64
		y        []float64
	}{
		{
			// Spaces around names and values, CRLF, the label in the middle.
			file: "spaces-crlf.csv", opts: Options{Label: " Species"},
			task: Classification, features: num("Sepal length", "Petal width"), label: "Species",
			classes: []string{"Iris-setosa", "Iris-versicolor", "Iris-virginica"},
			x:       [][]float64{{5.1, 0.2}, {7.0, 1.4}, {6.3, 2.5}},
			y:       []float64{0, 1, 2},
		},
		{
			// Quoted commas, quotes and a line break; fractional labels are
			// a regression.
			file: "quoted.csv", opts: Options{Label: "price"},
			task: Regression, label: "price",
			features: []Feature{
				{Name: "city", Categorical: true, Categories: []string{"Berlin, DE", "Paris"}},
				{Name: "note, quoted", Categorical: true, Categories: []string{`say "hi"`, "two\nlines", "plain"}},
			},
			x: [][]float64{{0, 0}, {1, 1}, {0, 2}},
			y: []float64{10.5, 20, 30},
		},
		{
			// Empty cells and the missing markers are NaN; 0/1 labels are
			// classes.
			file: "missing.csv", opts: Options{Label: "y"},
			task: Classification, label: "y", classes: []string{"0", "1"},
			features: []Feature{{Name: "a"}, {Name: "b"}, {Name: "color", Categorical: true, Categories: []string{"red", "blue"}}},
			x:        [][]float64{{1, nan, 0}, {nan, 2.5, nan}, {3, nan, 1}, {nan, 4, nan}},
			y:        []float64{0, 1, 0, 1},
		},
		{
			// Mostly not numbers, or half: categorical, numbers named by
			// their shortest form ("01" and "1" are one category), in order
			// of first appearance.
			file: "mixed-categorical.csv", opts: Options{Label: "label"},
			task: Classification, label: "label", classes: []string{"a", "b"},
			features: []Feature{
				{Name: "size", Categorical: true, Categories: []string{"S", "M", "1", "L"}},
				{Name: "grade", Categorical: true, Categories: []string{"1", "A", "B"}},
			},
			x: [][]float64{{0, 0}, {1, 0}, {2, 1}, {3, 2}},
			y: []float64{0, 1, 0, 1},
		},
		{
			// A byte-order mark before a quoted header.
			file: "bom.csv", opts: Options{Label: "y"},
			task: Classification, label: "y", classes: []string{"2", "4"}, features: num("x"),
			x: [][]float64{{1}, {3}}, y: []float64{0, 1},
		},
		{
			// Numeric classes sort by value, "1.0" is the class "1".
			file: "numeric-classes.csv", opts: Options{Label: "y"},
			task: Classification, label: "y", classes: []string{"1", "2", "10"}, features: num("f"),
			x: [][]float64{{1}, {2}, {3}, {4}}, y: []float64{2, 1, 0, 1},
		},
		{
			// The task given overrides the inferred one.
			file: "numeric-classes.csv", opts: Options{Label: "y", Task: Regression},
			task: Regression, label: "y", features: num("f"),
			x: [][]float64{{1}, {2}, {3}, {4}}, y: []float64{10, 2, 1, 2},
		},
		{
			// Numbers given as classes are named by their shortest form.
			file: "quoted.csv", opts: Options{Label: "price", Task: Classification},
			task: Classification, label: "price", classes: []string{"10.5", "20", "30"},
			features: []Feature{
				{Name: "city", Categorical: true, Categories: []string{"Berlin, DE", "Paris"}},
				{Name: "note, quoted", Categorical: true, Categories: []string{`say "hi"`, "two\nlines", "plain"}},
			},
			x: [][]float64{{0, 0}, {1, 1}, {0, 2}},
			y: []float64{0, 1, 2},
		},
		{
			// Blank and whitespace-only lines are skipped.
			file: "blank-lines.csv", opts: Options{Label: "y"},
			task: Classification, label: "y", classes: []string{"x", "z"}, features: num("a"),
			x: [][]float64{{1}, {2}}, y: []float64{0, 1},
		},
	} {
		t.Run(tc.file+"/"+string(tc.opts.Task), func(t *testing.T) {
			tc.opts.Name = "test"
			d, data, err := parseFile(t, filepath.Join("testdata", tc.file), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if d.Name != "test" || d.Digest != hex.EncodeToString(sum[:]) || d.Rows != len(tc.x) || d.Version != 0 || !d.CreatedAt.IsZero() {
				t.Errorf("name %q, digest %s, rows %d, version %d, created %v", d.Name, d.Digest, d.Rows, d.Version, d.CreatedAt)
			}
			if d.Task != tc.task || d.Label != tc.label || !reflect.DeepEqual(d.Classes, tc.classes) {
				t.Errorf("task %q, label %q, classes %q; want %q, %q, %q", d.Task, d.Label, d.Classes, tc.task, tc.label, tc.classes)
			}
			if !reflect.DeepEqual(d.Features, tc.features) {
				t.Errorf("features = %+v\nwant %+v", d.Features, tc.features)
			}
			if !sameMatrix(d.X, tc.x) || !sameFloats(d.Y, tc.y) {
				t.Errorf("X = %v, Y = %v\nwant %v, %v", d.X, d.Y, tc.x, tc.y)
			}
		})
	}
}

func TestParseRegressionInferred(t *testing.T) {
	// 21 distinct whole numbers: more than MaxInferredClasses.
	d, _, err := parseFile(t, "testdata/regression.csv", Options{Label: "y"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Task != Regression || d.Classes != nil || d.Rows != 21 || d.Y[20] != 60 {
		t.Errorf("task %q, classes %q, rows %d, Y[20] %v; want regression of 21 rows", d.Task, d.Classes, d.Rows, d.Y[20])
	}
	// One row fewer: 20 classes.
	data, _ := os.ReadFile("testdata/regression.csv")
	data = data[:bytes.LastIndexByte(data[:len(data)-1], '\n')+1]
	d, err = Parse(bytes.NewReader(data), Options{Label: "y"})
	if err != nil || d.Task != Classification || len(d.Classes) != MaxInferredClasses {
		t.Errorf("20 distinct whole labels: %v, task %q, %d classes; want classification", err, d.Task, len(d.Classes))
	}
}

func TestParseErrors(t *testing.T) {
	tiny := func(l Limits) Options { return Options{Label: "label", Limits: l} }
	for _, tc := range []struct {
		file string
		opts Options
		code shoalerr.Code
		want string
	}{
		{"empty.bad.csv", Options{Label: "y"}, shoalerr.Invalid, "the CSV is empty; its first row must be a header"},
		{"blank.bad.csv", Options{Label: "y"}, shoalerr.Invalid, "the CSV is empty"},
		{"header-only.bad.csv", Options{Label: "b"}, shoalerr.Invalid, "the CSV has a header but no rows of data"},
		{"ragged.bad.csv", Options{Label: "c"}, shoalerr.Invalid, "row 3 has 2 fields; the header has 3"},
		{"not-a-number.bad.csv", Options{Label: "Species"}, shoalerr.Invalid,
			`row 17, column "Petal width": "abc" is not a number (15 of the column's 16 values are numbers; fix the cell, or leave it empty`},
		{"inf.bad.csv", Options{Label: "b"}, shoalerr.Invalid, `row 4, column "a": "1e400" is out of the range of a 64-bit float`},
		{"duplicate.bad.csv", Options{Label: "b"}, shoalerr.Invalid, `columns 1 and 3 are both named "a"; column names must be unique`},
		{"unnamed.bad.csv", Options{Label: "a"}, shoalerr.Invalid, "column 2 has no name in the header (row 1)"},
		{"spaces-crlf.csv", Options{Label: "species"}, shoalerr.Invalid,
			`no column is named "species" (did you mean "Species"?); the columns are "Sepal length", "Species", "Petal width"`},
		{"bare-quote.bad.csv", Options{Label: "a"}, shoalerr.Invalid, `row 2: bare " in non-quoted-field (line 2, character 4); quote a field`},
		{"unclosed-quote.bad.csv", Options{Label: "a"}, shoalerr.Invalid, `row 2: extraneous or missing " in quoted-field`},
		{"missing-label.bad.csv", Options{Label: "y"}, shoalerr.Invalid, `row 3 has no label: its "y" column is empty; every row needs a label`},
		{"na-label.bad.csv", Options{Label: "y"}, shoalerr.Invalid, `row 3 has no label: its "y" column is "NA", a missing value`},
		{"one-class.bad.csv", Options{Label: "y"}, shoalerr.Invalid, `the label column "y" holds one class, "a"; a classifier needs at least two`},
		{"label-typo.bad.csv", Options{Label: "y"}, shoalerr.Invalid,
			`row 4, label column "y": "x" is not a number, though 3 of the 4 labels are numbers; fix the cell, or make the task classification`},
		{"mixed-categorical.csv", Options{Label: "label", Task: Regression}, shoalerr.Invalid,
			`row 2, label column "label": "a" is not a number; a regression label must be a number`},
		{"only-label.bad.csv", Options{Label: "y"}, shoalerr.Invalid, `the CSV has only the label column "y"; it needs at least one feature column`},
		{"utf8.bad.csv", Options{Label: "b"}, shoalerr.Invalid, `row 2, column "a": "\xff" is not valid UTF-8; save the CSV as UTF-8`},
		{"long-value.bad.csv", Options{Label: "b"}, shoalerr.Invalid, `row 2, column "a": "xxxx`},
		{"long-value.bad.csv", Options{Label: "b"}, shoalerr.Invalid, `is 300 bytes long; a value that is not a number is a category or class name, of at most 256 bytes`},
		{"spaces-crlf.csv", Options{Label: ""}, shoalerr.Invalid, "no label column is given"},
		{"spaces-crlf.csv", Options{Label: "Species", Task: "clustering"}, shoalerr.Invalid, `task "clustering" is not classification or regression`},
		// Bounds.
		{"mixed-categorical.csv", tiny(Limits{MaxBytes: 20}), shoalerr.TooLarge, "the CSV is larger than 20 bytes"},
		{"mixed-categorical.csv", tiny(Limits{MaxRows: 3}), shoalerr.TooLarge, "the CSV has more than 3 rows of data"},
		{"mixed-categorical.csv", tiny(Limits{MaxColumns: 2}), shoalerr.TooLarge, "the header has 3 columns; at most 2 are allowed"},
		{"mixed-categorical.csv", tiny(Limits{MaxCells: 5}), shoalerr.TooLarge, "the CSV has more than 5 feature values (rows × feature columns: 3 rows of 2)"},
		// Three values that are not numbers, then four categories with "1".
		{"mixed-categorical.csv", tiny(Limits{MaxCategories: 2}), shoalerr.Invalid, `column "size" has more than 2 distinct values; a categorical column has at most 2 categories`},
		{"mixed-categorical.csv", tiny(Limits{MaxCategories: 3}), shoalerr.Invalid, `column "size" has more than 3 distinct values`},
		{"numeric-classes.csv", Options{Label: "y", Task: Classification, Limits: Limits{MaxClasses: 2}}, shoalerr.Invalid,
			`the label column "y" has more than 2 distinct values; a classification has at most 2 classes (is it a regression target?`},
		{"spaces-crlf.csv", Options{Label: "Species", Limits: Limits{MaxClasses: 2}}, shoalerr.Invalid,
			`the label column "Species" has more than 2 distinct values that are not numbers`},
	} {
		t.Run(tc.file+"/"+tc.want, func(t *testing.T) {
			d, _, err := parseFile(t, filepath.Join("testdata", tc.file), tc.opts)
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", d)
			}
			if !strings.Contains(err.Error(), tc.want) || shoalerr.CodeOf(err) != tc.code {
				t.Errorf("error = %v (%s);\nwant %s containing %q", err, shoalerr.CodeOf(err), tc.code, tc.want)
			}
			if d != nil {
				t.Errorf("Parse returned a dataset with its error")
			}
		})
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader("a,b\n1,2\n"), &failingReader{boom})
	_, err := Parse(r, Options{Label: "b"})
	if !errors.Is(err, boom) || shoalerr.CodeOf(err) != shoalerr.Internal {
		t.Errorf("error = %v; want the reader's error, not blamed on the CSV", err)
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

// TestParseLargeInput: many rows take X's rows from shared chunks, and
// bits of the coded-row set past the first word are kept.
func TestParseLargeInput(t *testing.T) {
	var b strings.Builder
	b.WriteString("n,kind,y\n")
	const rows = 5000
	for i := range rows {
		kind := []string{"x", "y", "7"}[i%3]
		b.WriteString(strings.Join([]string{strconv.Itoa(i), kind, strconv.Itoa(i % 4)}, ",") + "\n")
	}
	d, err := Parse(strings.NewReader(b.String()), Options{Label: "y"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Rows != rows || len(d.Classes) != 4 || !reflect.DeepEqual(d.Features[1].Categories, []string{"x", "y", "7"}) {
		t.Fatalf("rows %d, classes %q, kind %+v", d.Rows, d.Classes, d.Features[1])
	}
	for i, row := range d.X {
		if row[0] != float64(i) || row[1] != float64(i%3) || d.Y[i] != float64(i%4) || len(row) != 2 || cap(row) != 2 {
			t.Fatalf("row %d = %v (cap %d), y %v", i, row, cap(row), d.Y[i])
		}
	}
}

func TestFeatureValue(t *testing.T) {
	d, _, err := parseFile(t, "testdata/mixed-categorical.csv", Options{Label: "label"})
	if err != nil {
		t.Fatal(err)
	}
	size, grade := d.Features[0], d.Features[1]
	numeric := Feature{Name: "n"}
	for _, tc := range []struct {
		f    Feature
		cell string
		want float64
		err  string
	}{
		{size, " L ", 3, ""},
		{size, "1.00", 2, ""}, // a number names its category by its shortest form
		{size, "", nan, ""},
		{size, "n/a", nan, ""},
		{size, "XL", 0, `column "size" has no category "XL"; its 4 categories`},
		{grade, "01", 0, ""},
		{numeric, "2.5e1", 25, ""},
		{numeric, "?", nan, ""},
		{numeric, "abc", 0, `column "n": "abc" is not a number`},
		{numeric, "Inf", 0, `"Inf" is not a number`},
		{numeric, "0x10", 0, `"0x10" is not a number`},
	} {
		got, err := tc.f.Value(tc.cell)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !shoalerr.Is(err, shoalerr.Invalid)):
			t.Errorf("%s.Value(%q) = %v, %v; want an Invalid error containing %q", tc.f.Name, tc.cell, got, err, tc.err)
		case tc.err == "" && (err != nil || !sameFloats([]float64{got}, []float64{tc.want})):
			t.Errorf("%s.Value(%q) = %v, %v; want %v", tc.f.Name, tc.cell, got, err, tc.want)
		}
	}
	// Value encodes every cell as Parse did.
	data, _ := os.ReadFile("testdata/mixed-categorical.csv")
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")[1:]
	for i, line := range lines {
		cells := strings.Split(line, ",")
		for k, f := range d.Features {
			if v, err := f.Value(cells[k]); err != nil || v != d.X[i][k] {
				t.Errorf("row %d %s: Value(%q) = %v, %v; Parse gave %v", i+2, f.Name, cells[k], v, err, d.X[i][k])
			}
		}
	}
}

// sharedDataset returns the path of a data set in the shared folder next
// to the repository, skipping the test if it is absent.
func sharedDataset(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join("..", "..", "..", "..", "shared", "datasets", name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s: %v (the shared data sets are not here)", name, err)
	}
	return path
}

func TestParseIris(t *testing.T) {
	d, data, err := parseFile(t, sharedDataset(t, "iris.csv"), Options{Name: "iris", Label: "Species"})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if d.Rows != 150 || len(d.X) != 150 || len(d.Y) != 150 || d.Task != Classification || d.Digest != hex.EncodeToString(sum[:]) {
		t.Fatalf("rows %d, task %q, digest %s", d.Rows, d.Task, d.Digest)
	}
	if want := num("Sepal length", "Sepal width", "Petal length", "Petal width"); !reflect.DeepEqual(d.Features, want) {
		t.Errorf("features = %+v; want %+v", d.Features, want)
	}
	if want := []string{"Iris-setosa", "Iris-versicolor", "Iris-virginica"}; !reflect.DeepEqual(d.Classes, want) {
		t.Errorf("classes = %q; want %q", d.Classes, want)
	}
	counts := map[float64]int{}
	for _, y := range d.Y {
		counts[y]++
	}
	if !reflect.DeepEqual(counts, map[float64]int{0: 50, 1: 50, 2: 50}) {
		t.Errorf("class counts = %v; want 50 each", counts)
	}
	if !sameFloats(d.X[0], []float64{5.1, 3.5, 1.4, 0.2}) || !sameFloats(d.X[149], []float64{5.9, 3.0, 5.1, 1.8}) || d.Y[149] != 2 {
		t.Errorf("first row %v, last row %v → %v", d.X[0], d.X[149], d.Y[149])
	}
}

func TestParseMNIST(t *testing.T) {
	d, _, err := parseFile(t, sharedDataset(t, "mnist_test.csv"), Options{Label: "label"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Rows != 500 || len(d.Features) != 784 || d.Task != Classification || d.Features[0].Name != "pixel0" || d.Features[783].Name != "pixel783" {
		t.Fatalf("rows %d, features %d (%s..%s), task %q", d.Rows, len(d.Features), d.Features[0].Name, d.Features[len(d.Features)-1].Name, d.Task)
	}
	if want := strings.Fields("0 1 2 3 4 5 6 7 8 9"); !reflect.DeepEqual(d.Classes, want) {
		t.Errorf("classes = %q; want %q", d.Classes, want)
	}
	if d.Y[0] != 8 || d.Y[1] != 7 {
		t.Errorf("first labels %v, %v; want 8, 7", d.Y[0], d.Y[1])
	}
	for i, row := range d.X {
		for k, v := range row {
			if v < 0 || v > 255 || v != math.Trunc(v) || d.Features[k].Categorical {
				t.Fatalf("row %d pixel %d = %v", i, k, v)
			}
		}
	}
}
