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

// addDrops adds n dropped records with the sequences first..last (n of
// them; the range may hold others) and the window first from..to to report
// r (nil starts a new report) and returns it.
func addDrops(r *shoalv1.DropReport, first, last, n uint64, fromMs, toMs int64) *shoalv1.DropReport {
	if r == nil {
		r = &shoalv1.DropReport{}
	}
	if r.Records == 0 || first < r.FirstSeq {
		r.FirstSeq = first
	}
	r.LastSeq = max(r.LastSeq, last)
	r.Records += n
	if fromMs != 0 && (r.FromUnixMs == 0 || fromMs < r.FromUnixMs) {
		r.FromUnixMs = fromMs
	}
	r.ToUnixMs = max(r.ToUnixMs, toMs)
	return r
}
