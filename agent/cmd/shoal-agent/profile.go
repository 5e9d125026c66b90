package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	firmwareprofiles "github.com/shoalfleet/shoal/firmware-profiles"
)

// cpuEP is the only execution provider the agent's ONNX Runtime adapter
// uses today; a profile's others are reported but not yet applied.
const cpuEP = "CPUExecutionProvider"

// profileChoice records how ParseFlags chose the firmware profile, for
// Run to log once the logger exists.
type profileChoice struct {
	by      string // where --profile was set ("--profile", "FILE:LINE"), or "" if detected
	facts   firmwareprofiles.Facts
	profile firmwareprofiles.Profile
	found   bool
}

// applyProfile resolves s.Profile — the named builtin profile, or the one
// Detect picks for this hardware when none is named — and makes its agent
// limits the defaults of the settings that set (flags, config file) does
// not name. A name that is not a builtin profile is an error listing them.
func (m *Main) applyProfile(s *settings, set map[string]string) error {
	var c profileChoice
	if s.Profile != "" {
		p, ok := firmwareprofiles.Lookup(s.Profile, nil)
		if !ok {
			// Worded like the other flag and config-file errors.
			where := set["profile"]
			if !strings.HasPrefix(where, "--") {
				where += ": profile"
			}
			return fmt.Errorf("%s: %q is not a known firmware profile; the known profiles are: %s (or leave profile out to detect one)", where, s.Profile, profileNames())
		}
		c = profileChoice{by: set["profile"], profile: p, found: true}
	} else {
		facts := firmwareprofiles.LocalFacts
		if m.facts != nil {
			facts = m.facts
		}
		c.facts = facts()
		c.profile, c.found = firmwareprofiles.Detect(c.facts)
	}
	m.profile = c
	if !c.found {
		return nil // the agent's own defaults
	}
	s.Profile = c.profile.Name
	lim := c.profile.Agent
	if _, ok := set["outbox-max-bytes"]; !ok && lim.OutboxMaxBytes > 0 {
		s.OutboxMaxBytes = int64(lim.OutboxMaxBytes)
	}
	if _, ok := set["telemetry-window"]; !ok && lim.TelemetryWindow > 0 {
		s.TelemetryWindow = time.Duration(lim.TelemetryWindow)
	}
	if _, ok := set["intra-op-threads"]; !ok {
		s.IntraOpThreads = lim.IntraOpThreads
	}
	return nil
}

// log says which profile the agent runs with and why, and the limits in
// force.
func (c profileChoice) log(l *slog.Logger, s settings) {
	// 0 leaves the agent's own default (outbox.DefaultMaxBytes,
	// telemetry.DefaultWindow, one thread per core).
	var outbox, window any = s.OutboxMaxBytes, s.TelemetryWindow.String()
	if s.OutboxMaxBytes == 0 {
		outbox = "default"
	}
	if s.TelemetryWindow == 0 {
		window = "default"
	}
	limits := []any{"outbox_max_bytes", outbox, "telemetry_window", window, "intra_op_threads", s.IntraOpThreads}
	hw := []any{"arch", c.facts.Arch, "os", c.facts.OS, "board", c.facts.Board, "firmware", c.facts.Firmware, "accelerators", strings.Join(c.facts.Accelerators, ",")}
	switch {
	case !c.found:
		l.Warn("no firmware profile matches this device; using the agent's defaults (pass --profile NAME to choose one)",
			append(append(hw, "known", profileNames()), limits...)...)
		return
	case c.by != "":
		l.Info("firmware profile", append([]any{"profile", c.profile.Name, "set_by", c.by}, limits...)...)
	default:
		l.Info("firmware profile detected", append(append([]any{"profile", c.profile.Name}, hw...), limits...)...)
	}
	if eps := c.profile.ExecutionProviders; len(eps) > 0 && eps[0] != cpuEP {
		l.Info("the profile prefers another execution provider; this agent runs models on the CPU only for now",
			"profile", c.profile.Name, "preferred", strings.Join(eps, ","), "using", cpuEP)
	}
}

// profileNames lists the builtin profiles, for messages.
func profileNames() string {
	ps, err := firmwareprofiles.Builtin()
	if err != nil {
		return "(none: " + err.Error() + ")"
	}
	return strings.Join(firmwareprofiles.Names(ps), ", ")
}
