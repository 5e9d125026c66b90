package failpoint

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want map[string]string // name → rule
	}{
		{"", map[string]string{}},
		{" , ", map[string]string{}},
		{"download-partial=kill", map[string]string{DownloadPartial: "kill@1"}},
		{"upload-after-publish=kill@3", map[string]string{UploadAfterPublish: "kill@3"}},
		{" upload-after-ack = pause@2 , telemetry-after-append=log ", map[string]string{UploadAfterAck: "pause@2", TelemetryAfterAppend: "log"}},
		{"activate-before-state=kill,activate-after-state=pause,activated=log,downloaded=kill@10,verified=pause@1",
			map[string]string{ActivateBeforeState: "kill@1", ActivateAfterState: "pause@1", Activated: "log", Downloaded: "kill@10", Verified: "pause@1"}},
	} {
		rules, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if len(rules) != len(tc.want) {
			t.Errorf("Parse(%q) = %v; want %v", tc.spec, rules, tc.want)
		}
		for name, want := range tc.want {
			r, ok := rules[name]
			if !ok || r.String() != want || r.Name != name {
				t.Errorf("Parse(%q)[%s] = %+v (%s); want %s", tc.spec, name, r, r, want)
			}
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"download-partial", "want name=action"},
		{"=kill", "want name=action"},
		{"download-partial=", "want name=action"},
		{"download-partail=kill", `unknown point "download-partail"`},
		{"downloaded=kill,downloaded=log", "more than one rule"},
		{"downloaded=explode", `unknown action "explode"`},
		{"downloaded=kill@0", "not a hit number"},
		{"downloaded=kill@-1", "not a hit number"},
		{"downloaded=pause@x", "not a hit number"},
		{"downloaded=kill@", "not a hit number"},
		{"downloaded=log@2", "log applies to every hit"},
	} {
		_, err := Parse(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v; want one containing %q", tc.spec, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), Env) {
			t.Errorf("Parse(%q) error %q does not name %s", tc.spec, err, Env)
		}
	}
}

func TestPointsAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Points {
		if seen[p] || p == "" || strings.ContainsAny(p, "=,@ ") {
			t.Errorf("point %q is empty, repeated or holds a spec delimiter", p)
		}
		seen[p] = true
	}
}
