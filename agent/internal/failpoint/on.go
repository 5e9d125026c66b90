//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this build has failpoints (the failpoints tag).
const Enabled = true

// armed is one rule and the hits of its point so far.
type armed struct {
	rule Rule
	hits atomic.Int64
}

var (
	loadOnce sync.Once
	points   map[string]*armed
)

// load reads the rules from the environment once. A spec that does not
// parse stops the process: a fault-injection run that silently injects
// nothing would prove nothing.
func load() {
	loadOnce.Do(func() {
		rules, err := Parse(os.Getenv(Env))
		if err != nil {
			fmt.Fprintf(os.Stderr, "failpoint: %v\n", err)
			os.Exit(2)
		}
		points = make(map[string]*armed, len(rules))
		for name, r := range rules {
			points[name] = &armed{rule: r}
		}
	})
}

func init() { load() }

// Hit marks a point: if a rule arms it, the hit is written to stderr and,
// on the rule's hit, the process is killed or the calling goroutine
// blocked for good.
func Hit(name string) {
	p := points[name]
	if p == nil {
		return
	}
	n := p.hits.Add(1)
	effect := "none"
	if p.rule.Action != Log && n == int64(p.rule.At) {
		effect = string(p.rule.Action)
	}
	// One write per line, so that lines from concurrent hits and the
	// agent's own log never interleave.
	os.Stderr.WriteString(fmt.Sprintf("failpoint: name=%s hit=%d rule=%s effect=%s\n", name, n, p.rule, effect))
	switch effect {
	case string(Kill):
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; go no further meanwhile
	case string(Pause):
		select {}
	}
}
