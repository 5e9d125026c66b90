package outbox

import (
	"slices"
	"testing"
)

func TestSeqRangesAdd(t *testing.T) {
	for _, tc := range []struct {
		name string
		rs   seqRanges
		add  seqRange
		want seqRanges
	}{
		{"into none", nil, seqRange{3, 5}, seqRanges{{3, 5}}},
		{"before", seqRanges{{10, 12}}, seqRange{3, 5}, seqRanges{{3, 5}, {10, 12}}},
		{"after", seqRanges{{3, 5}}, seqRange{10, 12}, seqRanges{{3, 5}, {10, 12}}},
		{"between", seqRanges{{1, 2}, {10, 12}}, seqRange{5, 6}, seqRanges{{1, 2}, {5, 6}, {10, 12}}},
		{"touching below", seqRanges{{6, 8}}, seqRange{3, 5}, seqRanges{{3, 8}}},
		{"touching above", seqRanges{{3, 5}}, seqRange{6, 8}, seqRanges{{3, 8}}},
		{"overlapping", seqRanges{{3, 5}}, seqRange{4, 9}, seqRanges{{3, 9}}},
		{"inside", seqRanges{{3, 9}}, seqRange{4, 5}, seqRanges{{3, 9}}},
		{"joining two", seqRanges{{1, 2}, {5, 6}, {10, 12}}, seqRange{3, 4}, seqRanges{{1, 6}, {10, 12}}},
		{"covering all", seqRanges{{1, 2}, {5, 6}, {10, 12}}, seqRange{1, 20}, seqRanges{{1, 20}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.rs)
			got := tc.rs.add(tc.add.first, tc.add.last)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%v.add(%d, %d) = %v; want %v", tc.rs, tc.add.first, tc.add.last, got, tc.want)
			}
			if !slices.Equal(tc.rs, before) {
				t.Errorf("add changed its receiver to %v", tc.rs)
			}
			for seq := uint64(0); seq <= 21; seq++ {
				in := false
				for _, r := range tc.want {
					in = in || r.first <= seq && seq <= r.last
				}
				if i := got.index(seq); got.contains(seq) != in || (i >= 0) != in || (in && (seq < got[i].first || seq > got[i].last)) {
					t.Errorf("%v: index(%d) = %d, contains %v; want in: %v", got, seq, i, got.contains(seq), in)
				}
			}
		})
	}
}
