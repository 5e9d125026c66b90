package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// runGroup runs components until the first fails or the group's context
// is cancelled. A component returning nil or context.Canceled has stopped
// cleanly; the first other error cancels the rest and is returned by Wait.
type runGroup struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error
	failed chan struct{} // closed on the first failure
}

func newRunGroup(parent context.Context) *runGroup {
	ctx, cancel := context.WithCancel(parent)
	return &runGroup{ctx: ctx, cancel: cancel, failed: make(chan struct{})}
}

// Go runs f(ctx) in a goroutine.
func (g *runGroup) Go(name string, f func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil && !errors.Is(err, context.Canceled) {
			g.once.Do(func() {
				g.err = fmt.Errorf("%s: %w", name, err)
				close(g.failed)
				g.cancel()
			})
		}
	}()
}

// Wait waits for every component and returns the first failure.
func (g *runGroup) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
