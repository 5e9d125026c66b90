package shoaltest

import (
	"sync"
	"time"
)

// Epoch is where a zero Clock starts: a fixed time, so that what a test
// computes from the clock is the same on every run.
var Epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Clock is a fake wall clock for code that takes its time as a
// func() time.Time: pass clk.Now. It reads what the test set and moves only
// when the test moves it, so waves, soak times and windows are reached by
// Advance, not by waiting. Its zero value reads Epoch; it is safe for
// concurrent use.
//
// It fakes the reading only. Code whose timers, tickers or sleeps should
// run on fake time too belongs in a testing/synctest bubble instead.
type Clock struct {
	mu    sync.Mutex
	t     time.Time
	moved bool // t was set; until then the clock reads Epoch
}

// NewClock returns a Clock that reads start.
func NewClock(start time.Time) *Clock {
	return &Clock{t: start, moved: true}
}

// Now returns the clock's reading.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now()
}

// Advance moves the clock by d; a negative d steps it back, as a wall
// clock may.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t, c.moved = c.now().Add(d), true
}

// Set sets the clock to t, before or after its reading.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t, c.moved = t, true
}

func (c *Clock) now() time.Time {
	if !c.moved {
		return Epoch
	}
	return c.t
}

// Ahead is a clock that runs with real time, moved ahead by Advance: for a
// control plane whose soak times a test skips over while real agents,
// on real time, must still accept what it signs. Its zero value reads
// real time; it is safe for concurrent use.
type Ahead struct {
	mu  sync.Mutex
	off time.Duration
}

// Now returns real time plus the offset.
func (c *Ahead) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// Advance moves the clock ahead by d.
func (c *Ahead) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}
