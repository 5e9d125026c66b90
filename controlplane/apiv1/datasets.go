package apiv1

import "time"

// Tasks: what a model trained on a dataset predicts.
const (
	TaskClassification = "classification"
	TaskRegression     = "regression"
)

// DatasetList is the answer to GET /api/v1/datasets.
type DatasetList struct {
	Datasets []DatasetSummary `json:"datasets"`
}

// DatasetSummary is one dataset of the dataset list, described by its
// latest version.
type DatasetSummary struct {
	Name string `json:"name"`
	// Versions is how many versions there are; Latest is the number of
	// the last one, which the other fields describe.
	Versions  int       `json:"versions"`
	Latest    int       `json:"latest"`
	Label     string    `json:"label"`
	Task      string    `json:"task"`
	Rows      int       `json:"rows"`
	Features  int       `json:"features"`
	Classes   int       `json:"classes"`
	Size      int64     `json:"size"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DatasetVersions is the answer to GET /api/v1/datasets/{name}: every
// version, oldest first.
type DatasetVersions struct {
	Name     string           `json:"name"`
	Versions []DatasetVersion `json:"versions"`
}

// DatasetVersion is one stored version of a dataset.
type DatasetVersion struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// SHA256 is the digest of the CSV's bytes, in lower-case hex.
	SHA256   string           `json:"sha256"`
	Size     int64            `json:"size"`
	Label    string           `json:"label"`
	Task     string           `json:"task"` // TaskClassification or TaskRegression
	Rows     int              `json:"rows"`
	Features []DatasetFeature `json:"features"`
	// Classes are a classification's class names, in the order of the
	// model's class indexes.
	Classes   []string  `json:"classes,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// CSVURL is where the API serves the CSV.
	CSVURL string `json:"csv_url"`
}

// DatasetFeature is one feature column of a dataset.
type DatasetFeature struct {
	Name string `json:"name"`
	// Categorical marks a column of categories, which a model sees as
	// their codes: the index of each in Categories.
	Categorical bool     `json:"categorical"`
	Categories  []string `json:"categories,omitempty"`
}

// CaptureCounts is the answer to GET /api/v1/captures/{model}: the
// model's captured predictions kept, those with a label, and rows by
// model version.
type CaptureCounts struct {
	Model     string            `json:"model"`
	Rows      uint64            `json:"rows"`
	Labelled  uint64            `json:"labelled"`
	ByVersion map[string]uint64 `json:"by_version"`
}
