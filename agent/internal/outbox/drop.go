package outbox

import (
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// addDrop adds one dropped record to report r (nil starts a new report) and
// returns it. Window times are skipped when zero (a record that could not
// be decoded has none).
func addDrop(r *shoalv1.DropReport, seq uint64, fromMs, toMs int64) *shoalv1.DropReport {
	if r == nil {
		r = &shoalv1.DropReport{}
	}
	if r.Records == 0 || seq < r.FirstSeq {
		r.FirstSeq = seq
	}
	if seq > r.LastSeq {
		r.LastSeq = seq
	}
	r.Records++
	if fromMs != 0 && (r.FromUnixMs == 0 || fromMs < r.FromUnixMs) {
		r.FromUnixMs = fromMs
	}
	if toMs > r.ToUnixMs {
		r.ToUnixMs = toMs
	}
	return r
}
