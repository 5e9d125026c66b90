package api

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/store/badgerstore"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

const testMaxCSV = 1 << 10

// datasetEnv is the API with only the dataset store behind it (Badger in
// a temp dir), which takes CSVs of up to testMaxCSV bytes.
func datasetEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := badgerstore.Open(filepath.Join(dir, "store"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ds, err := dataset.NewStore(st, filepath.Join(dir, "datasets"), log, time.Now, dataset.WithLimits(dataset.Limits{MaxBytes: testMaxCSV}))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, logs: logs}
	e.srv = httptest.NewServer(mustNew(t, Deps{Datasets: ds}, log))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) pushCSV(query, csv string) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/api/v1/datasets?"+query, strings.NewReader(csv), "Content-Type", "text/csv")
}

const (
	toyCSV  = "x, color ,y\r\n1,red,a\r\n2,blue,b\r\n3,red,a\r\n"
	toyCSV2 = toyCSV + "4,green,b\r\n"
)

func TestDatasets(t *testing.T) {
	e := datasetEnv(t)
	r := e.get("/api/v1/datasets")
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"datasets":[]}` {
		t.Errorf("empty dataset list = %d %s", r.status, r.body)
	}

	r = e.pushCSV("name=toy&label=y", toyCSV)
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s; want 201", r.status, r.body)
	}
	if loc := r.header.Get("Location"); loc != "/api/v1/datasets/toy/versions/1" {
		t.Errorf("Location = %q", loc)
	}
	var raw map[string]any
	r.json(t, &raw)
	for _, k := range []string{"name", "version", "sha256", "size", "label", "task", "rows", "features", "classes", "created_at", "csv_url"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("dataset version JSON lacks %q: %s", k, r.body)
		}
	}
	var v1 dataset.Version
	r.json(t, &v1)
	if v1.Name != "toy" || v1.Version != 1 || v1.SHA256 != digest([]byte(toyCSV)) || v1.Size != int64(len(toyCSV)) ||
		v1.Label != "y" || v1.Task != dataset.Classification || v1.Rows != 3 || len(v1.Features) != 2 ||
		v1.Features[1].Name != "color" || !v1.Features[1].Categorical || strings.Join(v1.Classes, ",") != "a,b" ||
		v1.CSVURL != "/api/v1/datasets/toy/versions/1/csv" {
		t.Errorf("version = %+v", v1)
	}

	// The same CSV again: 200 and the same version.
	r = e.pushCSV("name=toy&label=y", toyCSV)
	var again dataset.Version
	if r.json(t, &again); r.status != http.StatusOK || again.Version != 1 || !again.CreatedAt.Equal(v1.CreatedAt) {
		t.Errorf("re-POST = %d %s; want 200 with version 1", r.status, r.body)
	}
	// Another CSV: version 2, as a regression when asked.
	r = e.pushCSV("name=toy&label=x&task=regression", toyCSV2)
	var v2 dataset.Version
	if r.json(t, &v2); r.status != http.StatusCreated || v2.Version != 2 || v2.Task != dataset.Regression || v2.Rows != 4 || v2.Classes != nil {
		t.Errorf("POST of version 2 = %d %s", r.status, r.body)
	}

	r = e.get("/api/v1/datasets")
	var list struct{ Datasets []dataset.Summary }
	if r.json(t, &list); r.status != http.StatusOK || len(list.Datasets) != 1 || list.Datasets[0].Latest != 2 || list.Datasets[0].Versions != 2 || list.Datasets[0].Rows != 4 {
		t.Errorf("dataset list = %d %s", r.status, r.body)
	}
	r = e.get("/api/v1/datasets/toy")
	var versions struct {
		Name     string
		Versions []dataset.Version
	}
	if r.json(t, &versions); r.status != http.StatusOK || versions.Name != "toy" || len(versions.Versions) != 2 || versions.Versions[0].Version != 1 {
		t.Errorf("GET toy = %d %s", r.status, r.body)
	}
	for path, want := range map[string]int{"/api/v1/datasets/toy/versions/1": 1, "/api/v1/datasets/toy/versions/latest": 2} {
		r = e.get(path)
		var v dataset.Version
		if r.json(t, &v); r.status != http.StatusOK || v.Version != want {
			t.Errorf("GET %s = %d %s; want version %d", path, r.status, r.body, want)
		}
	}

	// The CSV, as pushed, as a download.
	r = e.get("/api/v1/datasets/toy/versions/1/csv")
	if r.status != http.StatusOK || string(r.body) != toyCSV {
		t.Fatalf("GET csv = %d %q", r.status, r.body)
	}
	for k, want := range map[string]string{
		"Content-Type":        "text/csv; charset=utf-8",
		"ETag":                `"` + v1.SHA256 + `"`,
		"Content-Disposition": `attachment; filename="toy-v1.csv"`,
		"Cache-Control":       "public, max-age=31536000, immutable",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q; want %q", k, got, want)
		}
	}
	r = e.get("/api/v1/datasets/toy/versions/latest/csv")
	if r.status != http.StatusOK || string(r.body) != toyCSV2 || r.header.Get("Cache-Control") != "no-cache" ||
		r.header.Get("Content-Disposition") != `attachment; filename="toy-v2.csv"` {
		t.Errorf("GET latest csv = %d %q %v", r.status, r.body, r.header)
	}
	r = e.get("/api/v1/datasets/toy/versions/1/csv", "Range", "bytes=0-2")
	if r.status != http.StatusPartialContent || string(r.body) != toyCSV[:3] {
		t.Errorf("GET csv with Range = %d %q", r.status, r.body)
	}
	r = e.get("/api/v1/datasets/toy/versions/1/csv", "If-None-Match", `"`+v1.SHA256+`"`)
	if r.status != http.StatusNotModified {
		t.Errorf("GET csv with If-None-Match = %d; want 304", r.status)
	}
	r = e.do(http.MethodHead, "/api/v1/datasets/toy/versions/1/csv", nil)
	if r.status != http.StatusOK || len(r.body) != 0 || r.header.Get("Content-Length") != strconv.Itoa(len(toyCSV)) {
		t.Errorf("HEAD csv = %d, %d bytes, Content-Length %q", r.status, len(r.body), r.header.Get("Content-Length"))
	}
}

func TestDatasetErrors(t *testing.T) {
	e := datasetEnv(t)
	e.pushCSV("name=toy&label=y", toyCSV)
	e.pushCSV("name=toy&label=y", "x,y\n1,a\n2,b\nabc,a\n3,b\n").wantError(t, http.StatusBadRequest, shoalerr.Invalid,
		`dataset toy not stored: row 4, column "x": "abc" is not a number`)
	e.pushCSV("name=toy&label=z", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid,
		`no column is named "z"; the columns are "x", "color", "y"`)
	e.pushCSV("name=toy", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "no label column is given for dataset toy")
	e.pushCSV("label=y", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid, "dataset name is empty")
	e.pushCSV("name=a%2Fb&label=y", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid, `dataset name "a/b" has '/'`)
	e.pushCSV("name=toy&lable=y", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid,
		`unknown query parameter "lable"; the parameters are name, label and task`)
	e.pushCSV("name=toy&label=y&label=x", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid, `query parameter "label" is given 2 times`)
	e.pushCSV("name=toy&label=y&task=ranking", toyCSV).wantError(t, http.StatusBadRequest, shoalerr.Invalid, `task "ranking" is not classification or regression`)
	e.pushCSV("name=toy&label=y", "").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "the upload of dataset toy is empty")
	e.pushCSV("name=toy&label=y", toyCSV+strings.Repeat("9,red,b\n", testMaxCSV/8)).wantError(t, http.StatusRequestEntityTooLarge, shoalerr.TooLarge,
		"dataset toy is larger than the 1024-byte limit")

	e.get("/api/v1/datasets/nope").wantError(t, http.StatusNotFound, shoalerr.NotFound, `dataset "nope" has no versions`)
	e.get("/api/v1/datasets/toy/versions/2").wantError(t, http.StatusNotFound, shoalerr.NotFound, `dataset "toy" has no version 2`)
	e.get("/api/v1/datasets/toy/versions/2/csv").wantError(t, http.StatusNotFound, shoalerr.NotFound, `dataset "toy" has no version 2`)
	e.get("/api/v1/datasets/nope/versions/latest/csv").wantError(t, http.StatusNotFound, shoalerr.NotFound, `dataset "nope" has no versions`)
	for _, bad := range []string{"0", "01", "-1", "v1", "1.0"} {
		e.get("/api/v1/datasets/toy/versions/"+bad).wantError(t, http.StatusBadRequest, shoalerr.Invalid,
			`dataset version "`+bad+`" is not a version number (1, 2, ...) or "latest"`)
		e.get("/api/v1/datasets/toy/versions/"+bad+"/csv").wantError(t, http.StatusBadRequest, shoalerr.Invalid, "is not a version number")
	}
	e.do(http.MethodPut, "/api/v1/datasets/toy", bytes.NewReader(nil)).wantError(t, http.StatusMethodNotAllowed, shoalerr.Invalid, "method PUT is not allowed")

	// Only version 1 was stored.
	r := e.get("/api/v1/datasets")
	var list struct{ Datasets []dataset.Summary }
	if r.json(t, &list); len(list.Datasets) != 1 || list.Datasets[0].Versions != 1 {
		t.Errorf("after refused pushes: %s", r.body)
	}
}

// TestDatasetRoutesNeedDatasets: without a dataset store the routes are
// not there.
func TestDatasetRoutesNeedDatasets(t *testing.T) {
	e := &env{t: t}
	e.srv = httptest.NewServer(mustNew(t, Deps{}, slog.New(slog.DiscardHandler)))
	t.Cleanup(e.srv.Close)
	e.pushCSV("name=toy&label=y", toyCSV).wantError(t, http.StatusNotFound, shoalerr.NotFound, "no route POST /api/v1/datasets")
	e.get("/api/v1/datasets").wantError(t, http.StatusNotFound, shoalerr.NotFound, "no route")
}
