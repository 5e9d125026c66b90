package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoalfleet/shoal/controlplane/client"
)

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, aligned for people.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func newClient(o *rootOptions) (*client.Client, error) {
	return client.New(o.server)
}

func specs(ss []client.TensorSpec) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		dims := make([]string, len(s.Shape))
		for j, d := range s.Shape {
			if d < 0 {
				dims[j] = "?"
			} else {
				dims[j] = fmt.Sprint(d)
			}
		}
		parts[i] = fmt.Sprintf("%q %s[%s]", s.Name, s.DataType, strings.Join(dims, ","))
	}
	return strings.Join(parts, ", ")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// maxLabelsCell is how wide the LABELS column of the device table gets.
const maxLabelsCell = 40

// labelsCell writes labels as k=v,k2=v2 in key order, in at most width
// characters: the labels that fit whole, then ",+N" for the N left out;
// a first label too long on its own is cut short with "…".
func labelsCell(labels map[string]string, width int) string {
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for i, k := range keys {
		kv := k + "=" + labels[k]
		sep := ""
		if i > 0 {
			sep = ","
		}
		more := ""
		if left := len(keys) - i - 1; left > 0 {
			more = ",+" + strconv.Itoa(left)
		}
		if b.Len()+len(sep)+len(kv)+len(more) > width {
			if i == 0 {
				rest := ",+" + strconv.Itoa(len(keys)-1)
				if len(keys) == 1 {
					rest = ""
				}
				return kv[:max(0, width-len(rest)-1)] + "…" + rest
			}
			return b.String() + ",+" + strconv.Itoa(len(keys)-i)
		}
		b.WriteString(sep + kv)
	}
	return b.String()
}
