package dataset

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/blobstore"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// Key layout, all under "dataset/" (names never hold '/'):
//
//	dataset/version/{name}/{version, 10 digits}  JSON Version
//	dataset/latest/{name}                        uint64, the latest version
//
// The version is zero-padded so that a scan lists versions in order. The
// latest version is a key of its own, read by every push of the name, so
// that two pushes at once conflict (and one retries) rather than both
// writing the same next version.
const (
	versionPrefix = "dataset/version/"
	latestPrefix  = "dataset/latest/"
)

const (
	// maxNameLen bounds dataset names.
	maxNameLen = 128
	// updateAttempts is how often a transaction is retried on a write
	// conflict.
	updateAttempts = 16
)

// Version is one stored version of a dataset (JSON as in docs/API.md).
type Version struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// SHA256 is the digest of the CSV's bytes, in lower-case hex.
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	Label    string    `json:"label"`
	Task     Task      `json:"task"`
	Rows     int       `json:"rows"`
	Features []Feature `json:"features"`
	// Classes are a classification's class names; Y's indexes.
	Classes   []string  `json:"classes,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// CSVURL is where the API serves the CSV.
	CSVURL string `json:"csv_url"`
}

// Summary describes one dataset by its latest version.
type Summary struct {
	Name string `json:"name"`
	// Versions is how many versions there are; Latest is the number of
	// the last one, which the other fields describe.
	Versions  int       `json:"versions"`
	Latest    int       `json:"latest"`
	Label     string    `json:"label"`
	Task      Task      `json:"task"`
	Rows      int       `json:"rows"`
	Features  int       `json:"features"`
	Classes   int       `json:"classes"`
	Size      int64     `json:"size"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CSVURL returns the API path a version's CSV is served at.
func CSVURL(name string, version int) string {
	return "/api/v1/datasets/" + name + "/versions/" + strconv.Itoa(version) + "/csv"
}

// Store keeps datasets: each pushed CSV once, content-addressed in its
// directory, and a record per version in the control plane's store. Its
// methods are safe for concurrent use.
//
// Versions are numbered 1, 2, ... per name. Pushing a name again with
// other bytes, or another label or task, makes a new version rather than
// being refused: datasets grow, retraining takes the latest, and the older
// versions stay, so that what a model was trained on can be loaded again.
// Pushing what the latest version holds (bytes, label and task) returns
// that version, so that a retried upload makes no new one.
type Store struct {
	st     store.Store
	blobs  blobstore.Dir
	log    *slog.Logger
	now    func() time.Time
	limits Limits
}

// Option adjusts a Store.
type Option func(*Store)

// WithLimits bounds what Push accepts (zero fields: the defaults);
// MaxBytes bounds the upload. Load reads stored versions with the same
// limits.
func WithLimits(l Limits) Option { return func(s *Store) { s.limits = l.withDefaults() } }

// NewStore returns a Store keeping its records in st and its CSVs under
// dir (created if missing). Temporary files left in dir by an interrupted
// upload are removed.
func NewStore(st store.Store, dir string, log *slog.Logger, now func() time.Time, opts ...Option) (*Store, error) {
	if st == nil || log == nil {
		return nil, errors.New("dataset.NewStore: store and logger are required")
	}
	if now == nil {
		now = time.Now
	}
	b, err := blobstore.Open(dir, "CSV")
	if err != nil {
		return nil, err
	}
	s := &Store{st: st, blobs: b, log: log, now: now, limits: Limits{}.withDefaults()}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// ValidateName checks a dataset name (names.Check): the error is Invalid.
func ValidateName(name string) error {
	if err := names.Check("dataset name", name); err != nil {
		return shoalerr.E(shoalerr.Invalid, "dataset.ValidateName", "%v", err)
	}
	return nil
}

// Push stores the CSV read from body as the next version of name, with
// label naming its label column and task its task ("" infers it). It
// streams body to a temporary file while hashing it, parses it (Parse),
// and stores it content-addressed.
//
// created is false when the latest version already holds these bytes,
// label and task: that version is returned. Errors: Invalid (bad name,
// label or task; an empty upload; a CSV Parse refuses, the message saying
// which row and column), TooLarge. On error no version is stored.
func (s *Store) Push(ctx context.Context, name, label string, task Task, body io.Reader) (_ Version, created bool, _ error) {
	const op = "dataset.Push"
	if err := ValidateName(name); err != nil {
		return Version{}, false, err
	}
	if strings.TrimSpace(label) == "" {
		return Version{}, false, shoalerr.E(shoalerr.Invalid, op, "no label column is given for dataset %s; name the column that holds what to predict", name)
	}
	if err := checkTask(op, task); err != nil {
		return Version{}, false, err
	}
	tmp, sha, size, err := s.receive(ctx, name, body)
	if err != nil {
		return Version{}, false, err
	}
	defer os.Remove(tmp) // a no-op once committed
	ds, err := s.parseFile(tmp, Options{Name: name, Label: label, Task: task})
	if err != nil {
		if code := shoalerr.CodeOf(err); code != shoalerr.Internal {
			return Version{}, false, shoalerr.Wrap(err, code, op, "dataset %s not stored", name)
		}
		return Version{}, false, err
	}
	if err := s.blobs.Commit(tmp, sha); err != nil {
		return Version{}, false, err
	}
	v := Version{
		Name: name, SHA256: sha, Size: size,
		Label: ds.Label, Task: ds.Task, Rows: ds.Rows, Features: ds.Features, Classes: ds.Classes,
	}
	var stored Version
	err = store.Retry(s.st, updateAttempts, func(tx store.Tx) error {
		n, err := getLatest(tx, name)
		if err != nil {
			return err
		}
		if n > 0 {
			prev, err := getVersion(tx, name, n)
			if err != nil {
				return err
			}
			if prev.SHA256 == v.SHA256 && prev.Label == v.Label && prev.Task == v.Task {
				stored, created = prev, false
				return nil
			}
		}
		v.Version = n + 1
		v.CreatedAt = s.now().UTC()
		v.CSVURL = CSVURL(name, v.Version)
		if err := tx.Set(latestKey(name), binary.BigEndian.AppendUint64(nil, uint64(v.Version))); err != nil {
			return err
		}
		stored, created = v, true
		return store.PutJSON(tx, versionKey(name, v.Version), v)
	})
	if err != nil {
		return Version{}, false, fmt.Errorf("dataset: store %s: %w", name, err)
	}
	if created {
		s.log.Info("dataset version stored", "dataset", name, "version", stored.Version, "sha256", sha, "size", size,
			"rows", stored.Rows, "features", len(stored.Features), "label", stored.Label, "task", stored.Task, "classes", len(stored.Classes))
	}
	return stored, created, nil
}

// receive copies body into a temporary file, hashing it, and returns the
// file's path. On error the file is removed.
func (s *Store) receive(ctx context.Context, name string, body io.Reader) (path, sha string, size int64, err error) {
	const op = "dataset.Push"
	u, err := s.blobs.Receive(ctx, body, s.limits.MaxBytes)
	var re *blobstore.ReadError
	switch {
	case errors.As(err, &re):
		return "", "", 0, shoalerr.Wrap(re.Err, shoalerr.Invalid, op, "reading the upload of dataset %s failed; send the file again", name)
	case errors.Is(err, blobstore.ErrTooLarge):
		return "", "", 0, shoalerr.E(shoalerr.TooLarge, op, "dataset %s is larger than the %d-byte limit", name, s.limits.MaxBytes)
	case errors.Is(err, blobstore.ErrEmpty):
		return "", "", 0, shoalerr.E(shoalerr.Invalid, op, "the upload of dataset %s is empty; send the CSV file as the request body", name)
	case err != nil:
		return "", "", 0, fmt.Errorf("dataset: upload of %s: %w", name, err)
	}
	return u.Path, u.SHA256, u.Size, nil
}

func (s *Store) parseFile(path string, opts Options) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: read upload back: %w", err)
	}
	defer f.Close()
	opts.Limits = s.limits
	return Parse(f, opts)
}

// Get returns one version of a dataset; version 0 is the latest. Errors:
// Invalid (bad name or version), NotFound.
func (s *Store) Get(ctx context.Context, name string, version int) (Version, error) {
	const op = "dataset.Get"
	if err := ValidateName(name); err != nil {
		return Version{}, err
	}
	if version < 0 {
		return Version{}, shoalerr.E(shoalerr.Invalid, op, "dataset version %d is not a version number (1, 2, ...)", version)
	}
	if err := ctx.Err(); err != nil {
		return Version{}, err
	}
	var v Version
	err := s.st.View(func(tx store.Tx) error {
		n := version
		if n == 0 {
			latest, err := getLatest(tx, name)
			if err != nil {
				return err
			}
			if latest == 0 {
				return store.ErrNotFound
			}
			n = latest
		}
		var err error
		v, err = getVersion(tx, name, n)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound) && version == 0:
		return Version{}, noVersions(op, name)
	case errors.Is(err, store.ErrNotFound):
		return Version{}, shoalerr.E(shoalerr.NotFound, op, "dataset %q has no version %d; list its versions with GET /api/v1/datasets/%s", name, version, name)
	case err != nil:
		return Version{}, fmt.Errorf("dataset: read %s version %d: %w", name, version, err)
	}
	return v, nil
}

// Versions returns every version of a dataset, oldest first. Errors:
// Invalid, NotFound (no version of that name is stored).
func (s *Store) Versions(ctx context.Context, name string) ([]Version, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var vs []Version
	err := s.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(versionPrefix+name+"/"), func(_, b []byte) error {
			v, err := decodeVersion(b)
			vs = append(vs, v)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dataset: list versions of %s: %w", name, err)
	}
	if len(vs) == 0 {
		return nil, noVersions("dataset.Versions", name)
	}
	return vs, nil
}

// List summarises every dataset by its latest version, sorted by name.
func (s *Store) List(ctx context.Context) ([]Summary, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Summary
	err := s.st.View(func(tx store.Tx) error {
		// Keys sort by name, then version: each name's versions are
		// consecutive, the latest last.
		return tx.Scan([]byte(versionPrefix), func(_, b []byte) error {
			v, err := decodeVersion(b)
			if err != nil {
				return err
			}
			n := 0
			if k := len(out) - 1; k >= 0 && out[k].Name == v.Name {
				n = out[k].Versions
				out = out[:k]
			}
			out = append(out, Summary{
				Name: v.Name, Versions: n + 1, Latest: v.Version, Label: v.Label, Task: v.Task,
				Rows: v.Rows, Features: len(v.Features), Classes: len(v.Classes), Size: v.Size, UpdatedAt: v.CreatedAt,
			})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dataset: list datasets: %w", err)
	}
	return out, nil
}

// OpenCSV opens the CSV of one version (0: the latest) and returns it
// with the version. Errors as Get.
func (s *Store) OpenCSV(ctx context.Context, name string, version int) (*os.File, Version, error) {
	v, err := s.Get(ctx, name, version)
	if err != nil {
		return nil, Version{}, err
	}
	f, err := s.blobs.Open("dataset.OpenCSV", v.SHA256)
	if err != nil {
		// The record is there and its file is not: the data directory
		// was damaged, which is no fault of the caller's.
		return nil, Version{}, fmt.Errorf("dataset: %s version %d: %v", name, v.Version, err)
	}
	return f, v, nil
}

// Load parses one version (0: the latest) from its stored CSV, with the
// label and task it was pushed with, and checks the bytes against the
// version's digest. Errors as Get.
func (s *Store) Load(ctx context.Context, name string, version int) (*Dataset, error) {
	f, v, err := s.OpenCSV(ctx, name, version)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ds, err := Parse(f, Options{Name: name, Label: v.Label, Task: v.Task, Limits: s.limits})
	if err != nil {
		return nil, fmt.Errorf("dataset: load %s version %d: %w", name, v.Version, err)
	}
	if ds.Digest != v.SHA256 {
		return nil, fmt.Errorf("dataset: the stored CSV of %s version %d has SHA-256 %s, not the %s it was pushed with; the data directory was changed",
			name, v.Version, ds.Digest, v.SHA256)
	}
	ds.Version, ds.CreatedAt = v.Version, v.CreatedAt
	return ds, nil
}

func noVersions(op, name string) error {
	return shoalerr.E(shoalerr.NotFound, op, "dataset %q has no versions; push one with POST /api/v1/datasets?name=%s&label=COLUMN", name, name)
}

func versionKey(name string, version int) []byte {
	return fmt.Appendf(nil, "%s%s/%010d", versionPrefix, name, version)
}

func latestKey(name string) []byte { return []byte(latestPrefix + name) }

// getLatest returns the latest version of name, 0 if none.
func getLatest(tx store.Tx, name string) (int, error) {
	b, err := tx.Get(latestKey(name))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	case len(b) != 8:
		return 0, fmt.Errorf("%s holds %d bytes; want 8", latestKey(name), len(b))
	}
	return int(binary.BigEndian.Uint64(b)), nil
}

func getVersion(tx store.Tx, name string, version int) (Version, error) {
	b, err := tx.Get(versionKey(name, version))
	if err != nil {
		return Version{}, err
	}
	return decodeVersion(b)
}

func decodeVersion(b []byte) (Version, error) {
	var v Version
	if err := json.Unmarshal(b, &v); err != nil {
		return Version{}, fmt.Errorf("decode dataset version record: %w", err)
	}
	return v, nil
}
