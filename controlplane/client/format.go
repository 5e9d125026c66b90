package client

import (
	"slices"
	"strconv"
	"strings"
)

// MetricsLine lists metrics by name for people — "accuracy 0.9667
// macro_f1 0.9658" — or "-" when there are none: the CLI and the demo
// print a job's metrics with it.
func MetricsLine(m map[string]float64) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = k + " " + strconv.FormatFloat(m[k], 'f', 4, 64)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "  ")
}
