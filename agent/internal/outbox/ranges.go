package outbox

// seqRange is an inclusive range of sequence numbers.
type seqRange struct{ first, last uint64 }

// overlaps reports whether r and first..last share a sequence.
func (r seqRange) overlaps(first, last uint64) bool { return first <= r.last && last >= r.first }

// seqRanges is a set of sequence numbers as sorted, disjoint ranges: the
// acks the outbox applied in memory while it could not delete the records
// from disk. It is a plain value with no lock; the outbox keeps it under
// Outbox.mu.
type seqRanges []seqRange

// index returns the index of the range that holds seq, or -1.
func (rs seqRanges) index(seq uint64) int {
	for i, r := range rs {
		if seq < r.first {
			return -1
		}
		if seq <= r.last {
			return i
		}
	}
	return -1
}

// contains reports whether seq is in the set.
func (rs seqRanges) contains(seq uint64) bool { return rs.index(seq) >= 0 }

// add returns the set with first..last added, merging ranges that touch or
// overlap. It does not modify rs.
func (rs seqRanges) add(first, last uint64) seqRanges {
	out := make(seqRanges, 0, len(rs)+1)
	n := seqRange{first, last}
	placed := false
	for _, r := range rs {
		switch {
		case r.last+1 < n.first:
			out = append(out, r)
		case n.last+1 < r.first:
			if !placed {
				out = append(out, n)
				placed = true
			}
			out = append(out, r)
		default:
			n.first, n.last = min(n.first, r.first), max(n.last, r.last)
		}
	}
	if !placed {
		out = append(out, n)
	}
	return out
}
