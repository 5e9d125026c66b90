package failpoint

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Action is what an armed point does when its rule's hit comes.
type Action string

// The actions.
const (
	Kill  Action = "kill"
	Pause Action = "pause"
	Log   Action = "log"
)

// Rule arms one point.
type Rule struct {
	Name   string
	Action Action
	// At is the hit (1 = the first) at which Kill or Pause happens; 0 for
	// Log.
	At int
}

// String returns the rule's action as written in a spec (kill@2, log).
func (r Rule) String() string {
	if r.Action == Log {
		return string(Log)
	}
	return fmt.Sprintf("%s@%d", r.Action, r.At)
}

// Parse reads a SHOAL_FAILPOINTS value: comma-separated name=action[@n]
// rules (see the package documentation). Names must be known Points and
// appear once. An empty spec arms nothing.
func Parse(spec string) (map[string]Rule, error) {
	rules := map[string]Rule{}
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, act, ok := strings.Cut(item, "=")
		name, act = strings.TrimSpace(name), strings.TrimSpace(act)
		if !ok || name == "" || act == "" {
			return nil, fmt.Errorf("%s: rule %q: want name=action[@n], e.g. %s=kill@2", Env, item, DownloadPartial)
		}
		if !slices.Contains(Points, name) {
			return nil, fmt.Errorf("%s: rule %q: unknown point %q; the points are %s", Env, item, name, strings.Join(Points, ", "))
		}
		if _, dup := rules[name]; dup {
			return nil, fmt.Errorf("%s: point %q has more than one rule", Env, name)
		}
		r := Rule{Name: name}
		a, at, hasAt := strings.Cut(act, "@")
		switch Action(a) {
		case Kill, Pause:
			r.Action, r.At = Action(a), 1
			if hasAt {
				n, err := strconv.Atoi(at)
				if err != nil || n < 1 {
					return nil, fmt.Errorf("%s: rule %q: %q is not a hit number (1 or more)", Env, item, at)
				}
				r.At = n
			}
		case Log:
			if hasAt {
				return nil, fmt.Errorf("%s: rule %q: log applies to every hit; drop the @%s", Env, item, at)
			}
			r.Action = Log
		default:
			return nil, fmt.Errorf("%s: rule %q: unknown action %q; want kill, pause or log", Env, item, a)
		}
		rules[name] = r
	}
	return rules, nil
}
