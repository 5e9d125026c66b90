package shoaltest

import (
	"sync"
	"testing"
	"time"
)

func TestClockZeroReadsEpoch(t *testing.T) {
	var c Clock
	if got := c.Now(); !got.Equal(Epoch) {
		t.Fatalf("zero Clock reads %v; want Epoch %v", got, Epoch)
	}
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(Epoch.Add(time.Minute)) {
		t.Fatalf("zero Clock advanced a minute reads %v; want %v", got, Epoch.Add(time.Minute))
	}
}

func TestClockMovesOnlyWhenMoved(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := NewClock(start)
	time.Sleep(time.Millisecond) // real time passing must not move it
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("NewClock(%v) reads %v", start, got)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("after Advance(90s) the clock reads %v; want %v", got, want)
	}
	c.Advance(-time.Hour)
	if got, want := c.Now(), start.Add(90*time.Second-time.Hour); !got.Equal(want) {
		t.Fatalf("after Advance(-1h) the clock reads %v; want %v", got, want)
	}
	back := start.Add(-24 * time.Hour)
	c.Set(back)
	if got := c.Now(); !got.Equal(back) {
		t.Fatalf("after Set(%v) the clock reads %v", back, got)
	}
	c.Set(time.Time{})
	if got := c.Now(); !got.IsZero() {
		t.Fatalf("after Set(time.Time{}) the clock reads %v; want the zero time", got)
	}
}

// TestClockConcurrent: readers and movers at once lose no Advance (and,
// under -race, share no unguarded state).
func TestClockConcurrent(t *testing.T) {
	c := NewClock(Epoch)
	const movers, each = 4, 1000
	var wg sync.WaitGroup
	for range movers {
		wg.Go(func() {
			for range each {
				c.Advance(time.Second)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got, want := c.Now(), Epoch.Add(movers*each*time.Second); !got.Equal(want) {
		t.Fatalf("after %d Advance(1s) the clock reads %v; want %v", movers*each, got, want)
	}
}

func TestAhead(t *testing.T) {
	var c Ahead
	before := time.Now()
	c.Advance(time.Hour)
	got := c.Now()
	if got.Before(before.Add(time.Hour)) || got.After(time.Now().Add(time.Hour)) {
		t.Errorf("Now = %v; want real time plus an hour (from %v)", got, before.Add(time.Hour))
	}
}
