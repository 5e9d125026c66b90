package training

import (
	"math"
	"math/rand/v2"
)

// Split divides the rows 0..len(y)-1 into a training part and a held-out
// part of about share of them, both in an order shuffled with seed. When
// stratify is set, y holds class indexes and each class is split in that
// proportion on its own, so that a rare class is found in both parts; a
// class with one row stays in training. Without stratify, and with at
// least two rows, each part gets at least one.
func Split(y []float64, share float64, stratify bool, seed uint64) (train, held []int) {
	r := rand.New(rand.NewPCG(seed, streamSplit))
	take := func(n int) int {
		k := int(math.Round(share * float64(n)))
		return max(0, min(k, n-1))
	}
	if !stratify {
		perm := r.Perm(len(y))
		k := take(len(y))
		if k == 0 && len(y) > 1 && share > 0 {
			k = 1
		}
		return perm[k:], perm[:k]
	}
	var byClass [][]int
	for i, v := range y {
		c := int(v)
		for len(byClass) <= c {
			byClass = append(byClass, nil)
		}
		byClass[c] = append(byClass[c], i)
	}
	for _, rows := range byClass {
		r.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		k := take(len(rows))
		held = append(held, rows[:k]...)
		train = append(train, rows[k:]...)
	}
	r.Shuffle(len(train), func(i, j int) { train[i], train[j] = train[j], train[i] })
	r.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	return train, held
}

// Streams of the seeded generators, so that each use of a seed draws its
// own sequence.
const (
	streamSplit = iota + 1
	streamInit
	streamShuffle
)
