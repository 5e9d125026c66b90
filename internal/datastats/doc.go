// Package datastats computes the data statistics of DESIGN §7: a reference
// profile of a model's training data, the statistics an agent keeps of the
// live inputs and outputs of that model (binned with the profile's edges,
// so that histograms from any devices and windows merge by addition), the
// merging of those statistics, and the drift between a reference and a
// window.
//
// It only computes: no I/O, no clock, no logger. It is linked into the
// agent, so it depends on nothing but the standard library and protobuf.
//
// Training makes a profile with NewProfile and puts EncodeProfile's bytes
// in the manifest. An agent decodes them with DecodeProfile, makes an
// Accumulator, Observes every inference, and at the end of each window
// sends SnapshotAndReset's statistics in a StatsReport. The control plane
// checks what devices send with ValidateStats, adds windows and devices up
// with Merge (or MergeAllInto), and measures drift with Compare.
//
// # Values
//
// Every value is a float64 (an Accumulator converts tensor elements). Each
// one lands in exactly one of three counters of its feature's
// FeatureStats:
//
//   - nan: the value is NaN, the usual marker of a missing value in
//     training data and in float tensors;
//   - missing: the value is there but has no place in the statistics:
//     ±Inf or beyond ±MaxValue (the float32 range, which bounds the mean
//     and m2 so that they stay finite through any number of merges), and
//     for a categorical feature anything that is not a class index
//     0..classes-1 (a negative, fractional or too large value);
//   - count: every other value. It is binned, and min, max, mean and m2
//     (Welford's sum of squared deviations) are of these values only, so
//     the bin counts add up to count.
//
// When count is 0, min, max, mean and m2 are 0.
//
// # Bins
//
// A numeric feature's edges come from its training values (NaN and missing
// values aside), at most ProfileOptions.Bins bins (DefaultBins):
//
//   - with no more distinct values than bins, each distinct value gets a bin
//     of its own: the edges are the distinct values but the smallest (a
//     binary feature 0/1 gets the edge 1 and two bins; a constant feature no
//     edge and a single bin, so its drift shows in min, max and mean only);
//   - otherwise the edges cut the sorted values into bins of about equal
//     size, one cut at a time: with r bins left for the m values from
//     position s, the next cut aims at s + ⌊m/r⌋. Equal values are never
//     split: a cut aiming inside a run of equal values moves to the start
//     or the end of that run, whichever is nearer (the start on a tie). A
//     heavily repeated value therefore takes one bin of its own and the
//     remaining bins share the rest, and a feature may get fewer bins than
//     asked.
//
// Either way each edge is a training value above the smallest, the edges
// are strictly ascending, and every bin holds at least one training value
// (but for a feature with none: no edge, and its one bin empty).
// A value v lands in the bin i with edges[i-1] <= v < edges[i] (the proto's
// rule): a value equal to an edge goes to the bin above it.
//
// A categorical feature (a classifier's predicted label) has no edges and
// one bin per class.
//
// # Drift
//
// PSI, Jensen–Shannon and KS compare the bin shares of a reference and a
// window (see Compare): PSI with each share floored at ShareFloor, JS as a
// divergence in bits (0 to 1), KS as the largest gap between the two
// binned CDFs.
//
// # Wire
//
// A ReferenceProfile travels in DeploymentManifest.reference_profile;
// DecodeProfile refuses one over the bounds below, naming the field at
// fault.
package datastats
