package fleet

import (
	"testing"
	"time"
)

func TestTouchMovesLastSeen(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if d.LastSeen != nil {
		t.Fatalf("last_seen = %v before any message", d.LastSeen)
	}
	e.clk.Advance(time.Minute)
	e.svc.Touch("a")
	e.svc.Touch("ghost") // not enrolled: ignored, not remembered
	d, _ = e.svc.Get(ctx, "a")
	if d.LastSeen == nil || !d.LastSeen.Equal(e.clk.Now()) {
		t.Fatalf("last_seen = %v; want %v", d.LastSeen, e.clk.Now())
	}
	e.clk.Advance(time.Minute)
	e.svc.Touch("a")
	devs, _ := e.svc.List(ctx)
	if len(devs) != 1 || devs[0].LastSeen == nil || !devs[0].LastSeen.Equal(e.clk.Now()) {
		t.Fatalf("List last_seen = %+v", devs)
	}
	if _, ok := e.svc.act.seen["ghost"]; ok {
		t.Fatal("an unknown device id was remembered")
	}
}
