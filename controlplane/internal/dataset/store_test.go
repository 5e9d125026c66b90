package dataset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// testStore is a Store on Badger in a temp dir, with a clock that moves a
// second per push.
type testStore struct {
	*Store
	t    *testing.T
	dir  string
	db   *badgerstore.Store
	logs *bytes.Buffer
}

func newTestStore(t *testing.T, opts ...Option) *testStore {
	t.Helper()
	ts := &testStore{t: t, dir: t.TempDir(), logs: &bytes.Buffer{}}
	ts.open(opts...)
	return ts
}

var clockMu sync.Mutex

func (ts *testStore) open(opts ...Option) {
	ts.t.Helper()
	log := slog.New(slog.NewTextHandler(ts.logs, nil))
	db, err := badgerstore.Open(filepath.Join(ts.dir, "store"), log)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { db.Close() })
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	s, err := NewStore(db, filepath.Join(ts.dir, "datasets"), log, clock, opts...)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.Store, ts.db = s, db
}

func (ts *testStore) push(name, label string, task Task, csv string) (Version, bool) {
	ts.t.Helper()
	v, created, err := ts.Push(context.Background(), name, label, task, strings.NewReader(csv))
	if err != nil {
		ts.t.Fatalf("push %s: %v", name, err)
	}
	return v, created
}

// blobs lists the files under the CSV directory, tmp included.
func (ts *testStore) blobs() []string {
	var files []string
	filepath.WalkDir(filepath.Join(ts.dir, "datasets"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(filepath.Join(ts.dir, "datasets"), path)
			files = append(files, rel)
		}
		return err
	})
	return files
}

const (
	csvA = "x,color,y\n1,red,a\n2,blue,b\n3,red,a\n"
	csvB = csvA + "4,green,b\n"
	csvN = "x,y\n1,1\n2,2\n3,1\n"
)

func TestStorePushVersions(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t)

	v1, created := ts.push("toy", "y", "", csvA)
	want := Version{
		Name: "toy", Version: 1, SHA256: sha(csvA), Size: int64(len(csvA)), Label: "y", Task: Classification, Rows: 3,
		Features:  []Feature{{Name: "x"}, {Name: "color", Categorical: true, Categories: []string{"red", "blue"}}},
		Classes:   []string{"a", "b"},
		CreatedAt: v1.CreatedAt, CSVURL: "/api/v1/datasets/toy/versions/1/csv",
	}
	if !created || !reflect.DeepEqual(v1, want) || v1.CreatedAt.IsZero() {
		t.Fatalf("first push = %+v, %v\nwant %+v, true", v1, created, want)
	}
	if !strings.Contains(ts.logs.String(), "dataset version stored") {
		t.Errorf("no log of the new version: %s", ts.logs)
	}

	// The same bytes, label and task again: the same version.
	again, created := ts.push("toy", " y ", "", csvA)
	if created || !reflect.DeepEqual(again, v1) {
		t.Errorf("identical push = %+v, %v; want version 1 again, not created", again, created)
	}
	again, created = ts.push("toy", "y", Classification, csvA)
	if created || again.Version != 1 {
		t.Errorf("identical push with the inferred task given = version %d, %v; want 1, not created", again.Version, created)
	}

	// Other bytes: version 2, the latest.
	v2, created := ts.push("toy", "y", "", csvB)
	if !created || v2.Version != 2 || v2.Rows != 4 || v2.SHA256 != sha(csvB) || !v2.CreatedAt.After(v1.CreatedAt) ||
		!reflect.DeepEqual(v2.Features[1].Categories, []string{"red", "blue", "green"}) {
		t.Errorf("second push = %+v, %v", v2, created)
	}
	// Version 1's bytes again: not the latest, so a new version.
	v3, created := ts.push("toy", "y", "", csvA)
	if !created || v3.Version != 3 || v3.SHA256 != v1.SHA256 {
		t.Errorf("push of version 1's bytes after version 2 = %+v, %v; want version 3", v3, created)
	}
	// Same bytes, another task or label: a new version.
	ts.push("nums", "y", "", csvN)
	if v, created := ts.push("nums", "y", Regression, csvN); !created || v.Version != 2 || v.Task != Regression || v.Classes != nil {
		t.Errorf("push as regression = %+v, %v; want version 2", v, created)
	}
	nums3, created := ts.push("nums", "x", Regression, csvN)
	if !created || nums3.Version != 3 || nums3.Label != "x" {
		t.Errorf("push with label x = %+v, %v; want version 3", nums3, created)
	}

	vs, err := ts.Versions(ctx, "toy")
	if err != nil || len(vs) != 3 || vs[0].Version != 1 || vs[2].Version != 3 || !reflect.DeepEqual(vs[1], v2) {
		t.Errorf("Versions = %+v, %v", vs, err)
	}
	if got, err := ts.Get(ctx, "toy", 0); err != nil || !reflect.DeepEqual(got, v3) {
		t.Errorf("Get latest = %+v, %v; want version 3", got, err)
	}
	if got, err := ts.Get(ctx, "toy", 2); err != nil || !reflect.DeepEqual(got, v2) {
		t.Errorf("Get 2 = %+v, %v", got, err)
	}
	list, err := ts.List(ctx)
	wantList := []Summary{
		{Name: "nums", Versions: 3, Latest: 3, Label: "x", Task: Regression, Rows: 3, Features: 1, Size: int64(len(csvN)), UpdatedAt: nums3.CreatedAt},
		{Name: "toy", Versions: 3, Latest: 3, Label: "y", Task: Classification, Rows: 3, Features: 2, Classes: 2, Size: int64(len(csvA)), UpdatedAt: v3.CreatedAt},
	}
	if err != nil || !reflect.DeepEqual(list, wantList) {
		t.Errorf("List = %+v, %v\nwant %+v", list, err, wantList)
	}

	// One blob per distinct content, no temp files left.
	if files := ts.blobs(); !reflect.DeepEqual(files, sortedBlobs(csvA, csvB, csvN)) {
		t.Errorf("files = %q", files)
	}

	// Everything survives a restart.
	ts.db.Close()
	ts.open()
	if vs, err := ts.Versions(ctx, "toy"); err != nil || len(vs) != 3 || !reflect.DeepEqual(vs[2], v3) {
		t.Errorf("after restart: %+v, %v", vs, err)
	}
	if v4, created := ts.push("toy", "y", "", csvB); !created || v4.Version != 4 {
		t.Errorf("push after restart = version %d, %v; want 4", v4.Version, created)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func sortedBlobs(csvs ...string) []string {
	var out []string
	for _, c := range csvs {
		out = append(out, filepath.Join("sha256", sha(c)))
	}
	slices.Sort(out)
	return out
}

func TestStoreLoad(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t)
	v1, _ := ts.push("toy", "y", "", csvA)
	ts.push("toy", "y", "", csvB)

	d, err := ts.Load(ctx, "toy", 1)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Parse(strings.NewReader(csvA), Options{Name: "toy", Label: "y"})
	want.Version, want.CreatedAt = 1, v1.CreatedAt
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Load(toy, 1) = %+v\nwant %+v", d, want)
	}
	if d, err := ts.Load(ctx, "toy", 0); err != nil || d.Version != 2 || d.Rows != 4 {
		t.Errorf("Load latest = %+v, %v; want version 2", d, err)
	}
	// The task and label pushed are those loaded.
	ts.push("nums", "y", Regression, csvN)
	if d, err := ts.Load(ctx, "nums", 0); err != nil || d.Task != Regression || d.Classes != nil || d.Y[1] != 2 {
		t.Errorf("Load nums = %+v, %v; want a regression", d, err)
	}

	f, v, err := ts.OpenCSV(ctx, "toy", 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != csvA || v.Version != 1 {
		t.Errorf("OpenCSV(toy, 1) = %q, version %d", b, v.Version)
	}

	// A CSV changed on disk is found out, and not blamed on the caller.
	path := filepath.Join(ts.dir, "datasets", "sha256", v1.SHA256)
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, []byte(strings.Replace(csvA, "1,red", "9,red", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Load(ctx, "toy", 1); err == nil || !strings.Contains(err.Error(), "the data directory was changed") || shoalerr.CodeOf(err) != shoalerr.Internal {
		t.Errorf("Load of a changed CSV: %v", err)
	}
	os.Remove(path)
	if _, err := ts.Load(ctx, "toy", 1); err == nil || shoalerr.CodeOf(err) != shoalerr.Internal {
		t.Errorf("Load of a missing CSV: %v (%s); want an internal error", err, shoalerr.CodeOf(err))
	}
}

func TestStoreErrors(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, WithLimits(Limits{MaxBytes: 64}))
	ts.push("toy", "y", "", csvA)
	for _, tc := range []struct {
		name, label string
		task        Task
		body        string
		code        shoalerr.Code
		want        string
	}{
		{"", "y", "", csvA, shoalerr.Invalid, "dataset name is empty"},
		{"a/b", "y", "", csvA, shoalerr.Invalid, `dataset name "a/b" has '/' at position 1`},
		{"..", "y", "", csvA, shoalerr.Invalid, `dataset name ".." is not allowed`},
		{strings.Repeat("a", 129), "y", "", csvA, shoalerr.Invalid, "is 129 characters long"},
		{"toy", " ", "", csvA, shoalerr.Invalid, "no label column is given for dataset toy"},
		{"toy", "y", "ranking", csvA, shoalerr.Invalid, `task "ranking" is not classification or regression`},
		{"toy", "y", "", "", shoalerr.Invalid, "the upload of dataset toy is empty; send the CSV file as the request body"},
		{"toy", "y", "", csvA + strings.Repeat("5,red,a\n", 8), shoalerr.TooLarge, "dataset toy is larger than the 64-byte limit"},
		{"toy", "y", "", "x,y\n1,a\n2,b\nabc,a\n9,b\n", shoalerr.Invalid, `dataset toy not stored: row 4, column "x": "abc" is not a number`},
		{"toy", "z", "", csvA, shoalerr.Invalid, `dataset toy not stored: no column is named "z"; the columns are "x", "color", "y"`},
	} {
		_, _, err := ts.Push(ctx, tc.name, tc.label, tc.task, strings.NewReader(tc.body))
		if !strings.Contains(fmt.Sprint(err), tc.want) || shoalerr.CodeOf(err) != tc.code {
			t.Errorf("Push(%.20q, %q, %q) = %v (%s);\nwant %s containing %q", tc.name, tc.label, tc.task, err, shoalerr.CodeOf(err), tc.code, tc.want)
		}
	}
	// Nothing refused was stored.
	if vs, err := ts.Versions(ctx, "toy"); err != nil || len(vs) != 1 {
		t.Errorf("versions after refused pushes: %+v, %v", vs, err)
	}
	if files := ts.blobs(); !reflect.DeepEqual(files, sortedBlobs(csvA)) {
		t.Errorf("files after refused pushes: %q", files)
	}

	for _, tc := range []struct {
		name    string
		version int
		code    shoalerr.Code
		want    string
	}{
		{"nope", 0, shoalerr.NotFound, `dataset "nope" has no versions; push one with POST /api/v1/datasets?name=nope&label=COLUMN`},
		{"toy", 2, shoalerr.NotFound, `dataset "toy" has no version 2; list its versions with GET /api/v1/datasets/toy`},
		{"toy", -1, shoalerr.Invalid, "dataset version -1 is not a version number"},
		{"a b", 1, shoalerr.Invalid, `dataset name "a b" has ' '`},
	} {
		_, err := ts.Get(ctx, tc.name, tc.version)
		if !strings.Contains(fmt.Sprint(err), tc.want) || shoalerr.CodeOf(err) != tc.code {
			t.Errorf("Get(%q, %d) = %v; want %s containing %q", tc.name, tc.version, err, tc.code, tc.want)
		}
		if _, err2 := ts.Load(ctx, tc.name, tc.version); shoalerr.CodeOf(err2) != tc.code {
			t.Errorf("Load(%q, %d) = %v; want code %s", tc.name, tc.version, err2, tc.code)
		}
	}
	if _, err := ts.Versions(ctx, "nope"); !shoalerr.Is(err, shoalerr.NotFound) {
		t.Errorf("Versions(nope) = %v; want NotFound", err)
	}
	if list, err := newTestStore(t).List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List of an empty store = %+v, %v", list, err)
	}
}

// TestStoreConcurrentPushes: pushes of one name at once each get their
// own version; none is lost to another writing the same number.
func TestStoreConcurrentPushes(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t)
	const n = 12
	var wg sync.WaitGroup
	versions := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			v, _, err := ts.Push(ctx, "toy", "y", "", strings.NewReader(fmt.Sprintf("%s%d,red,a\n", csvA, i)))
			versions[i], errs[i] = v.Version, err
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("push %d: %v", i, errs[i])
		}
		seen[versions[i]] = true
	}
	vs, err := ts.Versions(ctx, "toy")
	if err != nil || len(vs) != n || len(seen) != n {
		t.Fatalf("%d versions stored, %d distinct numbers returned; want %d (%v)", len(vs), len(seen), n, err)
	}
	for i, v := range vs {
		if v.Version != i+1 || !seen[v.Version] {
			t.Errorf("version %d is numbered %d", i+1, v.Version)
		}
	}
}

// TestStoreClearsInterruptedUploads: a temp file left by a crash is
// removed when the store opens.
func TestStoreClearsInterruptedUploads(t *testing.T) {
	ts := newTestStore(t)
	left := filepath.Join(ts.dir, "datasets", "tmp", "upload-123")
	if err := os.WriteFile(left, []byte("x,y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts.db.Close()
	ts.open()
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("interrupted upload still there: %v", err)
	}
}

func TestStoreIris(t *testing.T) {
	path := sharedDataset(t, "iris.csv")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestStore(t)
	v, _, err := ts.Push(context.Background(), "iris", "Species", "", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if v.Rows != 150 || len(v.Features) != 4 || len(v.Classes) != 3 || v.Task != Classification || v.Features[1].Name != "Sepal width" {
		t.Errorf("iris = %+v", v)
	}
	d, err := ts.Load(context.Background(), "iris", 1)
	if err != nil || d.Rows != 150 || d.Digest != v.SHA256 {
		t.Errorf("Load(iris) = %v rows, %v", d.Rows, err)
	}
}
