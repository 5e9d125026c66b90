package dataset

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"math"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// fuzzLimits are small, so that the fuzzer reaches every bound.
var fuzzLimits = Limits{MaxBytes: 1 << 16, MaxRows: 2000, MaxColumns: 64, MaxCells: 8000, MaxCategories: 16, MaxClasses: 16}

// fuzzTasks are what the task byte picks.
var fuzzTasks = []Task{"", Classification, Regression}

func fuzzParse(data []byte, label string, task byte) (*Dataset, error) {
	return Parse(bytes.NewReader(data), Options{Label: label, Task: fuzzTasks[int(task)%len(fuzzTasks)], Limits: fuzzLimits})
}

// FuzzParseCSV parses CSVs as Store.Push parses uploads, allocating in
// proportion to the CSV. A CSV is refused with an Invalid or TooLarge
// error, or it is a dataset whose every part holds together: one row of
// X per row of Y, of one value per feature; features named, uniquely and
// not as the label; numbers finite, codes whole and in range, categories
// distinct and valid UTF-8; classes distinct, sorted, at least two, every
// one used, Y their indexes; the task the one asked for; the digest the
// CSV's. Reading the CSV again with encoding/csv, every cell encodes
// (Feature.Value) to what X holds, and parsing it again gives the same
// dataset. Seeds: testdata/fuzz/FuzzParseCSV, from
// TestFuzzParseCSVCorpus.
func FuzzParseCSV(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, label string, task byte) {
		var d *Dataset
		var err error
		if n := fuzzcorpus.Allocated(func() { d, err = fuzzParse(data, label, task) }); n > fuzzcorpus.AllocBudget(len(data)) {
			t.Fatalf("parsing a %d-byte CSV allocated %d bytes", len(data), n)
		}
		if err != nil {
			switch code := shoalerr.CodeOf(err); {
			case code == shoalerr.TooLarge, code == shoalerr.Invalid:
			default:
				t.Fatalf("refused with code %s: %v", code, err)
			}
			if d != nil || err.Error() == "" {
				t.Fatalf("refused with dataset %v and error %q", d, err)
			}
			return
		}
		checkDataset(t, d, data, fuzzTasks[int(task)%len(fuzzTasks)])
		checkCells(t, d, data)
		again, err := fuzzParse(data, label, task)
		if err != nil || !sameDataset(d, again) {
			t.Fatalf("parsing again gave %+v, %v; the first time %+v", again, err, d)
		}
	})
}

func checkDataset(t *testing.T, d *Dataset, data []byte, task Task) {
	t.Helper()
	sum := sha256.Sum256(data)
	switch {
	case d.Digest != hex.EncodeToString(sum[:]):
		t.Fatalf("digest %s is not the CSV's", d.Digest)
	case d.Rows < 1 || len(d.X) != d.Rows || len(d.Y) != d.Rows:
		t.Fatalf("%d rows, %d in X, %d in Y", d.Rows, len(d.X), len(d.Y))
	case len(d.Features) == 0:
		t.Fatal("no features")
	case task != "" && d.Task != task:
		t.Fatalf("task %q; %q was asked for", d.Task, task)
	}
	names := map[string]bool{d.Label: true}
	for _, f := range d.Features {
		if f.Name == "" || names[f.Name] || strings.TrimSpace(f.Name) != f.Name {
			t.Fatalf("feature name %q is empty, untrimmed or taken", f.Name)
		}
		names[f.Name] = true
		if !f.Categorical && f.Categories != nil {
			t.Fatalf("numeric feature %q has categories %q", f.Name, f.Categories)
		}
		checkNames(t, "categories of "+f.Name, f.Categories)
	}
	for i, row := range d.X {
		if len(row) != len(d.Features) {
			t.Fatalf("row %d has %d values for %d features", i, len(row), len(d.Features))
		}
		for k, v := range row {
			f := d.Features[k]
			switch {
			case math.IsNaN(v):
			case math.IsInf(v, 0):
				t.Fatalf("row %d, %s: %v", i, f.Name, v)
			case f.Categorical && (v != math.Trunc(v) || v < 0 || int(v) >= len(f.Categories)):
				t.Fatalf("row %d, %s: code %v of %d categories", i, f.Name, v, len(f.Categories))
			}
		}
	}
	switch d.Task {
	case Regression:
		if d.Classes != nil {
			t.Fatalf("a regression with classes %q", d.Classes)
		}
		for i, y := range d.Y {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				t.Fatalf("label %d is %v", i, y)
			}
		}
	case Classification:
		checkNames(t, "classes", d.Classes)
		if len(d.Classes) < 2 {
			t.Fatalf("classes %q: fewer than two", d.Classes)
		}
		used := make([]bool, len(d.Classes))
		for i, y := range d.Y {
			if y != math.Trunc(y) || y < 0 || int(y) >= len(d.Classes) {
				t.Fatalf("label %d is %v of %d classes", i, y, len(d.Classes))
			}
			used[int(y)] = true
		}
		if slices.Contains(used, false) {
			t.Fatalf("a class of %q has no row", d.Classes)
		}
		if !slices.IsSortedFunc(d.Classes, classOrder(d.Classes)) {
			t.Fatalf("classes %q are not sorted", d.Classes)
		}
	default:
		t.Fatalf("task %q", d.Task)
	}
}

// classOrder is the order classes are sorted in: by value if all are
// numbers.
func classOrder(classes []string) func(a, b string) int {
	for _, c := range classes {
		if _, ok := parseNumber(c); !ok {
			return strings.Compare
		}
	}
	return func(a, b string) int {
		x, _ := parseNumber(a)
		y, _ := parseNumber(b)
		return cmp.Compare(x, y)
	}
}

func checkNames(t *testing.T, what string, names []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] || !utf8.ValidString(n) || len(n) > maxNameBytes || isMissing(n) {
			t.Fatalf("%s: %q is empty, repeated, a missing value, too long or not UTF-8", what, n)
		}
		seen[n] = true
	}
}

// checkCells reads data again with encoding/csv and checks that each cell
// encodes to the value X holds.
func checkCells(t *testing.T, d *Dataset, data []byte) {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, utf8BOM)))
	r.FieldsPerRecord, r.TrimLeadingSpace = -1, true
	var recs [][]string
	for {
		rec, err := r.Read()
		if err != nil {
			break
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		recs = append(recs, rec)
	}
	if len(recs) != d.Rows+1 {
		t.Fatalf("encoding/csv reads %d records; the dataset has a header and %d rows", len(recs), d.Rows)
	}
	cols := map[string]int{}
	for j, n := range recs[0] {
		cols[strings.TrimSpace(n)] = j
	}
	for k, f := range d.Features {
		j, ok := cols[f.Name]
		if !ok {
			t.Fatalf("feature %q is not a column of the header %q", f.Name, recs[0])
		}
		for i, rec := range recs[1:] {
			v, err := f.Value(rec[j])
			if err != nil || !sameFloats([]float64{v}, []float64{d.X[i][k]}) {
				t.Fatalf("row %d, %s: Value(%q) = %v, %v; X holds %v", i, f.Name, rec[j], v, err, d.X[i][k])
			}
		}
	}
}

func sameDataset(a, b *Dataset) bool {
	return a.Name == b.Name && a.Task == b.Task && a.Label == b.Label && a.Rows == b.Rows && a.Digest == b.Digest &&
		slices.EqualFunc(a.Features, b.Features, func(x, y Feature) bool {
			return x.Name == y.Name && x.Categorical == y.Categorical && slices.Equal(x.Categories, y.Categories)
		}) &&
		slices.Equal(a.Classes, b.Classes) && sameMatrix(a.X, b.X) && sameFloats(a.Y, b.Y)
}

func fuzzParseCSVSeeds() []fuzzcorpus.Seed {
	seed := func(name string, valid bool, csv, label string, task byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{[]byte(csv), label, task}}
	}
	return []fuzzcorpus.Seed{
		seed("iris-head", true, "Sepal length, Sepal width,Petal length, Petal width, Species\n5.1,3.5,1.4,0.2,Iris-setosa\n7.0,3.2,4.7,1.4,Iris-versicolor\n6.3,3.3,6.0,2.5,Iris-virginica\n", "Species", 0),
		seed("crlf-label-first", true, "label,a,b\r\n1,0.5,x\r\n0,1.5,y\r\n1,,x\r\n", "label", 0),
		seed("quoted", true, "city,\"note, quoted\",price\n\"Berlin, DE\",\"say \"\"hi\"\"\",10.5\nParis,\"two\nlines\",20\n", "price", 0),
		seed("missing-markers", true, "a,b,color,y\n1,,red,0\nNA,2.5,,1\n3,?,blue,0\nnull,4,N/A,1\n", "y", 0),
		seed("mixed-categorical", true, "size,grade,label\nS,1,a\nM,01,b\n1.0,A,a\nL,B,b\n", "label", 0),
		seed("bom", true, "\ufeff\"x\",\"y\"\n1,2\n3,4\n", "y", 0),
		seed("regression-given", true, "f,y\n1,10\n2,2\n3,1.0\n", "y", 2),
		seed("classification-given", true, "f,y\n1,0.5\n2,2e3\n3,-1\n", "y", 1),
		seed("blank-lines", true, "a,y\n\n1,x\n   \n2,z\n\n", "y", 0),
		seed("empty", false, "", "y", 0),
		seed("header-only", false, "a,b\n", "b", 0),
		seed("ragged", false, "a,b,c\n1,2,3\n4,5\n", "c", 0),
		seed("not-a-number", false, "a,y\n1,p\n2,q\nabc,p\n3,q\n", "y", 0),
		seed("duplicate-columns", false, "a, b,a \n1,2,3\n", "b", 0),
		seed("no-such-label", false, "a,b\n1,2\n", "species", 0),
		seed("bare-quote", false, "a,b\n1,x\"y\n", "a", 0),
		seed("missing-label", false, "x,y\n1,a\n2,\n", "y", 0),
		seed("one-class", false, "x,y\n1,a\n2,a\n", "y", 0),
		seed("regression-not-number", false, "x,y\n1,a\n2,b\n", "y", 2),
		seed("too-many-columns", false, strings.Repeat("c,", 64)+"y\n"+strings.Repeat("1,", 64)+"1\n", "y", 0),
	}
}

// TestFuzzParseCSVCorpus keeps testdata/fuzz/FuzzParseCSV in step with the
// seeds above (-update-fuzz-corpus rewrites it).
func TestFuzzParseCSVCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, "FuzzParseCSV", fuzzParseCSVSeeds(), func(v []any) error {
		_, err := fuzzParse(v[0].([]byte), v[1].(string), v[2].(byte))
		return err
	})
}
