package dataset

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Defaults of Limits.
const (
	DefaultMaxBytes      = 256 << 20
	DefaultMaxRows       = 10_000_000
	DefaultMaxColumns    = 16_384
	DefaultMaxCells      = 64 << 20 // 512 MiB of float64
	DefaultMaxCategories = 1024
	DefaultMaxClasses    = 1024
)

const (
	// maxNameBytes bounds a column name, category or class name.
	maxNameBytes = 256
	// maxSchemaBytes bounds the column names, categories and classes
	// together, which Store keeps in one record.
	maxSchemaBytes = 1 << 20
	// chunkValues is how many float64s X's rows are carved from at a time.
	chunkValues = 1 << 16
	// quoteBytes is how much of a bad value an error quotes.
	quoteBytes = 80
)

// Limits bound what Parse reads; a zero field takes its default.
type Limits struct {
	// MaxBytes bounds the CSV's size (DefaultMaxBytes).
	MaxBytes int64
	// MaxRows bounds the data rows, the header not included
	// (DefaultMaxRows).
	MaxRows int
	// MaxColumns bounds the columns, the label included
	// (DefaultMaxColumns).
	MaxColumns int
	// MaxCells bounds rows × feature columns, X's size in values
	// (DefaultMaxCells).
	MaxCells int64
	// MaxCategories bounds the categories of one categorical column
	// (DefaultMaxCategories).
	MaxCategories int
	// MaxClasses bounds the classes of a classification
	// (DefaultMaxClasses).
	MaxClasses int
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxCells <= 0 {
		l.MaxCells = DefaultMaxCells
	}
	def(&l.MaxRows, DefaultMaxRows)
	def(&l.MaxColumns, DefaultMaxColumns)
	def(&l.MaxCategories, DefaultMaxCategories)
	def(&l.MaxClasses, DefaultMaxClasses)
	return l
}

// Options say how to read a CSV.
type Options struct {
	// Name is copied into Dataset.Name.
	Name string
	// Label names the label column; required. Spaces around it are
	// ignored, as around the header's names.
	Label string
	// Task is Classification or Regression; empty infers it from the
	// label column (the package doc says how).
	Task Task
	// Limits bound the input.
	Limits Limits
}

// Parse reads a CSV from r as the package doc describes. Errors: Invalid
// (the CSV or the options are not what Parse takes: the message names the
// row and column), TooLarge (over Limits), or r's own read error.
func Parse(r io.Reader, opts Options) (*Dataset, error) {
	if strings.TrimSpace(opts.Label) == "" {
		return nil, shoalerr.E(shoalerr.Invalid, parseOp, "no label column is given; name the column that holds what to predict")
	}
	if err := checkTask(parseOp, opts.Task); err != nil {
		return nil, err
	}
	p := &parser{opts: opts, lim: opts.Limits.withDefaults()}
	return p.parse(r)
}

const parseOp = "dataset.Parse"

func invalid(format string, args ...any) error {
	return shoalerr.E(shoalerr.Invalid, parseOp, format, args...)
}

func tooLarge(format string, args ...any) error {
	return shoalerr.E(shoalerr.TooLarge, parseOp, format, args...)
}

// parser holds one Parse's state.
type parser struct {
	opts   Options
	lim    Limits
	header []string
	label  int       // the label column's index in the header
	cols   []*column // the feature columns, in file order
	lab    column    // the label column; lab.y are its values
	x      [][]float64
	chunk  []float64 // what is left of the chunk X's rows come from
	schema int       // bytes of names and categories so far
}

// column is what the parser learns of one column. Numbers go into X (or
// y) as they are; a value that is not a number goes in as a provisional
// code, its index in values, and its row's bit is set in coded: once the
// column's type is known, a categorical column is renumbered in order of
// first appearance, numbers included (finishFeature).
type column struct {
	name       string
	numbers    int // non-missing values that are numbers
	others     int // and that are not
	firstOther badCell
	codes      map[string]int
	values     []string
	coded      []uint64 // bit i: row i holds a provisional code
	y          []float64
}

// badCell is the first value of a column that is not a number.
type badCell struct {
	row   int
	value string
}

func (c *column) mark(i int) {
	for len(c.coded) <= i/64 {
		c.coded = append(c.coded, 0)
	}
	c.coded[i/64] |= 1 << (i % 64)
}

func (c *column) isCoded(i int) bool {
	return i/64 < len(c.coded) && c.coded[i/64]&(1<<(i%64)) != 0
}

// limitReader reads at most n bytes, then fails with errTooLarge.
type limitReader struct {
	r    io.Reader
	n    int64
	over bool
}

var errTooLarge = errors.New("too large")

func (l *limitReader) Read(b []byte) (int, error) {
	if l.over {
		return 0, errTooLarge
	}
	if int64(len(b)) > l.n+1 {
		b = b[:l.n+1]
	}
	n, err := l.r.Read(b)
	if l.n -= int64(n); l.n < 0 {
		l.over = true
		return 0, errTooLarge
	}
	return n, err
}

var utf8BOM = []byte{0xef, 0xbb, 0xbf}

func (p *parser) parse(r io.Reader) (*Dataset, error) {
	h := sha256.New()
	lr := &limitReader{r: r, n: p.lim.MaxBytes}
	br := bufio.NewReader(io.TeeReader(lr, h))
	if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
		br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1 // checked here, to say which row
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	read := func() ([]string, int, error) {
		for {
			rec, err := cr.Read()
			if err != nil {
				return nil, 0, p.readError(lr, err)
			}
			if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
				continue // a blank line
			}
			line, _ := cr.FieldPos(0)
			return rec, line, nil
		}
	}
	rec, _, err := read()
	if errors.Is(err, io.EOF) {
		return nil, invalid("the CSV is empty; its first row must be a header naming the columns")
	}
	if err != nil {
		return nil, err
	}
	if err := p.readHeader(rec); err != nil {
		return nil, err
	}
	for {
		rec, line, err := read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := p.addRow(line, rec); err != nil {
			return nil, err
		}
	}
	if len(p.x) == 0 {
		return nil, invalid("the CSV has a header but no rows of data; add rows below the header")
	}
	d := &Dataset{
		Name:   p.opts.Name,
		Label:  p.header[p.label],
		X:      p.x,
		Rows:   len(p.x),
		Digest: hex.EncodeToString(h.Sum(nil)),
	}
	if err := p.finish(d); err != nil {
		return nil, err
	}
	return d, nil
}

// readError words an error of the CSV reader; io.EOF passes through.
func (p *parser) readError(lr *limitReader, err error) error {
	var pe *csv.ParseError
	switch {
	case lr.over:
		return tooLarge("the CSV is larger than %d bytes", p.lim.MaxBytes)
	case errors.Is(err, io.EOF):
		return io.EOF
	case errors.As(err, &pe):
		return invalid("row %d: %v (line %d, character %d); quote a field that holds a comma, a quote or a line break, and double the quotes inside it",
			pe.StartLine, pe.Err, pe.Line, pe.Column)
	}
	return fmt.Errorf("dataset: read CSV: %w", err)
}

func (p *parser) readHeader(rec []string) error {
	if len(rec) > p.lim.MaxColumns {
		return tooLarge("the header has %d columns; at most %d are allowed", len(rec), p.lim.MaxColumns)
	}
	p.header = make([]string, len(rec))
	seen := make(map[string]int, len(rec))
	for i, f := range rec {
		name := strings.TrimSpace(f)
		switch {
		case name == "":
			return invalid("column %d has no name in the header (row 1); name every column", i+1)
		case len(name) > maxNameBytes:
			return invalid("the name of column %d is %d bytes long; at most %d are allowed", i+1, len(name), maxNameBytes)
		case !utf8.ValidString(name):
			return invalid("the name of column %d is not valid UTF-8; save the CSV as UTF-8", i+1)
		}
		if j, dup := seen[name]; dup {
			return invalid("columns %d and %d are both named %q; column names must be unique", j, i+1, name)
		}
		seen[name] = i + 1
		p.header[i] = strings.Clone(name)
		p.schema += len(name)
	}
	want := strings.TrimSpace(p.opts.Label)
	j, ok := seen[want]
	if !ok {
		hint := ""
		for _, n := range p.header {
			if strings.EqualFold(n, want) {
				hint = fmt.Sprintf(" (did you mean %q?)", n)
			}
		}
		return invalid("no column is named %.80q%s; the columns are %s", want, hint, quoteList(p.header, 20))
	}
	p.label = j - 1
	p.lab.name = p.header[p.label]
	if len(p.header) == 1 {
		return invalid("the CSV has only the label column %q; it needs at least one feature column", p.lab.name)
	}
	p.cols = make([]*column, 0, len(p.header)-1)
	for i, n := range p.header {
		if i != p.label {
			p.cols = append(p.cols, &column{name: n})
		}
	}
	return nil
}

// quoteList quotes names, the first max of them.
func quoteList(names []string, max int) string {
	var b strings.Builder
	for i, n := range names {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(names)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(n))
	}
	return b.String()
}

func (p *parser) addRow(line int, rec []string) error {
	if len(rec) != len(p.header) {
		return invalid("row %d has %d fields; the header has %d (every row needs one per column, an empty one for a missing value)",
			line, len(rec), len(p.header))
	}
	i := len(p.x)
	if i == p.lim.MaxRows {
		return tooLarge("the CSV has more than %d rows of data", p.lim.MaxRows)
	}
	width := len(p.cols)
	if int64(i+1)*int64(width) > p.lim.MaxCells {
		return tooLarge("the CSV has more than %d feature values (rows × feature columns: %d rows of %d)", p.lim.MaxCells, i+1, width)
	}
	if len(p.chunk) < width {
		p.chunk = make([]float64, max(width, chunkValues/width*width))
	}
	row := p.chunk[:width:width]
	p.chunk = p.chunk[width:]
	k := 0
	for j, f := range rec {
		v := strings.TrimSpace(f)
		if j == p.label {
			y, err := p.labelValue(i, line, v)
			if err != nil {
				return err
			}
			p.lab.y = append(p.lab.y, y)
			continue
		}
		x, err := p.value(p.cols[k], i, line, v, p.lim.MaxCategories)
		if err != nil {
			return err
		}
		row[k] = x
		k++
	}
	p.x = append(p.x, row)
	return nil
}

func (p *parser) labelValue(i, line int, v string) (float64, error) {
	if isMissing(v) {
		what := "empty"
		if v != "" {
			what = strconv.Quote(v) + ", a missing value"
		}
		return 0, invalid("row %d has no label: its %q column is %s; every row needs a label (fill it in or drop the row)", line, p.lab.name, what)
	}
	if p.opts.Task == Regression {
		if _, ok := parseNumber(v); !ok {
			return 0, invalid("row %d, label column %q: %s; a regression label must be a number (fix the cell, or make the task %s)",
				line, p.lab.name, notNumber(v), Classification)
		}
	}
	return p.value(&p.lab, i, line, v, p.lim.MaxClasses)
}

// value reads a non-label cell of row i (line line) in c: NaN if missing,
// the number, or a provisional code (c.values holds at most maxValues).
func (p *parser) value(c *column, i, line int, v string, maxValues int) (float64, error) {
	if isMissing(v) {
		return math.NaN(), nil
	}
	if f, ok := parseNumber(v); ok {
		c.numbers++
		return f, nil
	}
	c.others++
	if c.others == 1 {
		c.firstOther = badCell{line, strings.Clone(v[:min(len(v), 4*quoteBytes)])}
	}
	code, ok := c.codes[v]
	if !ok {
		switch {
		case len(v) > maxNameBytes:
			return 0, invalid("row %d, column %q: %.*q is %d bytes long; a value that is not a number is a category or class name, of at most %d bytes (is the column free text? drop it)",
				line, c.name, quoteBytes, v, len(v), maxNameBytes)
		case !utf8.ValidString(v):
			return 0, invalid("row %d, column %q: %.*q is not valid UTF-8; save the CSV as UTF-8", line, c.name, quoteBytes, v)
		case len(c.values) == maxValues && c == &p.lab:
			return 0, invalid("the label column %q has more than %d distinct values that are not numbers; a classification has at most %d classes",
				c.name, maxValues, maxValues)
		case len(c.values) == maxValues:
			return 0, tooManyCategories(c.name, maxValues)
		}
		if p.schema += len(v); p.schema > maxSchemaBytes {
			return 0, schemaTooLarge()
		}
		if c.codes == nil {
			c.codes = map[string]int{}
		}
		v = strings.Clone(v)
		code = len(c.values)
		c.codes[v] = code
		c.values = append(c.values, v)
	}
	c.mark(i)
	return float64(code), nil
}

func tooManyCategories(name string, n int) error {
	return invalid("column %q has more than %d distinct values; a categorical column has at most %d categories (is it an identifier or free text? drop it from the CSV)",
		name, n, n)
}

func schemaTooLarge() error {
	return invalid("the column names, categories and class names come to more than %d bytes; drop columns of free text or identifiers", maxSchemaBytes)
}

// finish types the columns, encodes the categorical ones and the label,
// and fills in d's schema.
func (p *parser) finish(d *Dataset) error {
	schema := 0
	d.Features = make([]Feature, len(p.cols))
	for k, c := range p.cols {
		f, err := p.finishFeature(k, c)
		if err != nil {
			return err
		}
		d.Features[k] = f
		schema += len(f.Name)
		for _, s := range f.Categories {
			schema += len(s)
		}
	}
	if err := p.finishLabel(d); err != nil {
		return err
	}
	schema += len(d.Label)
	for _, s := range d.Classes {
		schema += len(s)
	}
	if schema > maxSchemaBytes {
		return schemaTooLarge()
	}
	return nil
}

func (p *parser) finishFeature(k int, c *column) (Feature, error) {
	f := Feature{Name: c.name}
	switch {
	case c.others == 0:
		return f, nil
	case c.numbers > c.others:
		return f, invalid("row %d, column %q: %s (%d of the column's %d values are numbers; fix the cell, or leave it empty for a missing value)",
			c.firstOther.row, c.name, notNumber(c.firstOther.value), c.numbers, c.numbers+c.others)
	}
	f.Categorical = true
	if c.numbers == 0 {
		// The provisional codes are already in order of first appearance.
		f.Categories = c.values
		return f, nil
	}
	codes := make(map[string]int, len(c.values))
	for i, row := range p.x {
		v := row[k]
		if math.IsNaN(v) {
			continue
		}
		var name string
		if c.isCoded(i) {
			name = c.values[int(v)]
		} else {
			name = numberName(v)
		}
		code, ok := codes[name]
		if !ok {
			if len(f.Categories) == p.lim.MaxCategories {
				return f, tooManyCategories(c.name, p.lim.MaxCategories)
			}
			code = len(f.Categories)
			codes[name] = code
			f.Categories = append(f.Categories, name)
		}
		row[k] = float64(code)
	}
	return f, nil
}

func (p *parser) finishLabel(d *Dataset) error {
	c := &p.lab
	d.Task = p.opts.Task
	if d.Task == "" {
		t, err := p.inferTask()
		if err != nil {
			return err
		}
		d.Task = t
	}
	if d.Task == Regression {
		// Every label is a number: labelValue refuses others when the
		// task is given, and inferTask infers regression only then.
		d.Y = c.y
		return nil
	}
	names := make([]string, len(c.y))
	index := map[string]int{}
	for i, v := range c.y {
		if c.isCoded(i) {
			names[i] = c.values[int(v)]
		} else {
			names[i] = numberName(v)
		}
		if _, ok := index[names[i]]; !ok {
			if len(index) == p.lim.MaxClasses {
				return invalid("the label column %q has more than %d distinct values; a classification has at most %d classes (is it a regression target? make the task %s)",
					c.name, p.lim.MaxClasses, p.lim.MaxClasses, Regression)
			}
			index[names[i]] = -1
			d.Classes = append(d.Classes, names[i])
		}
	}
	if len(d.Classes) < 2 {
		return invalid("the label column %q holds one class, %q; a classifier needs at least two", c.name, d.Classes[0])
	}
	if c.others == 0 {
		slices.SortFunc(d.Classes, func(a, b string) int {
			x, _ := parseNumber(a)
			y, _ := parseNumber(b)
			return cmp.Compare(x, y)
		})
	} else {
		slices.Sort(d.Classes)
	}
	for i, n := range d.Classes {
		index[n] = i
	}
	d.Y = make([]float64, len(names))
	for i, n := range names {
		d.Y[i] = float64(index[n])
	}
	return nil
}

// inferTask infers the task from the label column (package doc).
func (p *parser) inferTask() (Task, error) {
	c := &p.lab
	switch {
	case c.others >= c.numbers:
		return Classification, nil
	case c.others > 0:
		return "", invalid("row %d, label column %q: %s, though %d of the %d labels are numbers; fix the cell, or make the task %s to make every label a class name",
			c.firstOther.row, c.name, notNumber(c.firstOther.value), c.numbers, c.numbers+c.others, Classification)
	}
	distinct := map[float64]bool{}
	for _, v := range c.y {
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return Regression, nil
		}
		if distinct[v] = true; len(distinct) > MaxInferredClasses {
			return Regression, nil
		}
	}
	return Classification, nil
}
