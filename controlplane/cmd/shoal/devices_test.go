package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/client"
	"github.com/shoalfleet/shoal/controlplane/controltest"
)

// enrollDevice enrolls id on the control plane with the given extra
// enrollment fields (JSON, starting with a comma), as an agent would.
func enrollDevice(t *testing.T, cp *controltest.Server, id, extra string) {
	t.Helper()
	body := fmt.Sprintf(`{"token":%q,"device_id":%q,"agent_version":"0.1.0","profile":"rpi4"%s}`, cp.Token(t), id, extra)
	resp, err := http.Post(cp.URL()+"/v1/enroll", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("enroll %s: %d %s", id, resp.StatusCode, b)
	}
}

// TestDevicesLabel drives `shoal devices label` and the device list's
// filters and columns against a real control plane.
func TestDevicesLabel(t *testing.T) {
	cp := controltest.Start(t)
	s := cp.URL()
	enrollDevice(t, cp, "pump-1", `,"labels":{"env":"prod","site":"north"},"group":"canary"`)
	enrollDevice(t, cp, "pump-2", `,"labels":{"env":"prod"}`)
	enrollDevice(t, cp, "pump-3", ``)

	out, _, err := run(t, s, "devices")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "GROUP") || !strings.Contains(lines[0], "LABELS") {
		t.Fatalf("devices table:\n%s", out)
	}
	if !strings.Contains(lines[1], "canary") || !strings.Contains(lines[1], "env=prod,site=north") {
		t.Errorf("pump-1's row lacks its group and labels: %q", lines[1])
	}

	// kubectl style: key=value sets, key- removes; --group sets the group.
	out, _, err = run(t, s, "devices", "label", "pump-2", "rack=r7", "env-", "--group", "wave-2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "pump-2") || !strings.Contains(out, "wave-2") || !strings.Contains(out, "rack=r7") || strings.Contains(out, "env=") {
		t.Errorf("label output:\n%s", out)
	}
	out, _, err = run(t, s, "devices", "label", "pump-2", "env=dev", "--json")
	var d client.Device
	if err != nil || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("label --json: %q %v", out, err)
	}
	if fmt.Sprint(d.Labels) != "map[env:dev rack:r7]" || d.Group != "wave-2" {
		t.Errorf("after labelling: labels %v, group %q; want the group kept", d.Labels, d.Group)
	}
	// --group "" takes the device out of its group, and changes no label.
	out, _, err = run(t, s, "devices", "label", "pump-2", "--group", "", "--json")
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || d.Group != "" || len(d.Labels) != 2 {
		t.Fatalf(`label --group "": %q %v`, out, err)
	}

	// Filters.
	ids := func(args ...string) string {
		t.Helper()
		out, _, err := run(t, s, append([]string{"devices", "--json"}, args...)...)
		var devs []client.Device
		if err != nil || json.Unmarshal([]byte(out), &devs) != nil {
			t.Fatalf("devices %v: %q %v", args, out, err)
		}
		var got []string
		for _, d := range devs {
			got = append(got, d.ID)
		}
		return strings.Join(got, ",")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "pump-1,pump-2,pump-3"},
		{[]string{"--selector", "env=prod"}, "pump-1"},
		{[]string{"--selector", "env=dev,rack=r7"}, "pump-2"},
		{[]string{"--selector", "env=dev", "--selector", "rack=r8"}, ""},
		{[]string{"--group", "canary"}, "pump-1"},
		{[]string{"--group", "canary", "--selector", "env=dev"}, ""},
	} {
		if got := ids(tc.args...); got != tc.want {
			t.Errorf("devices %v = %q; want %q", tc.args, got, tc.want)
		}
	}
	out, _, err = run(t, s, "devices", "--selector", "env=staging")
	if err != nil || !strings.Contains(out, "no devices match --selector env=staging") {
		t.Errorf("no match: %q %v", out, err)
	}
	if out, _, err := run(t, s, "devices", "--json", "--group", "nobody"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("no match --json: %q %v", out, err)
	}

	// Errors say what was wrong.
	for _, tc := range []struct {
		args []string
		text string
	}{
		{[]string{"devices", "label", "pump-1"}, "nothing to change"},
		{[]string{"devices", "label", "pump-1", "env"}, `"env": write key=value`},
		{[]string{"devices", "label", "pump-1", "-"}, `"-": write key=value`},
		{[]string{"devices", "label", "pump-1", "a=1", "a-"}, `"a" is given more than once`},
		{[]string{"devices", "label", "pump-1", "env=a b"}, `value "a b" of label "env"`},
		{[]string{"devices", "label", "ghost", "env=x"}, `"ghost" is not enrolled`},
		{[]string{"devices", "--selector", "env=a/b"}, `value "a/b" of label "env"`},
		{[]string{"devices", "--group", "a b"}, `group "a b"`},
		{[]string{"devices", "--selector", "env"}, "key=value"},
	} {
		if _, _, err := run(t, s, tc.args...); err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%v: error %v; want it to say %q", tc.args, err, tc.text)
		}
	}
}

func TestLabelsCell(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{"env": "prod"}, "env=prod"},
		{map[string]string{"site": "north", "env": "prod", "rack": ""}, "env=prod,rack=,site=north"},
		// 40 characters: what fits whole, then how many are left out.
		{map[string]string{"a": strings.Repeat("x", 20), "b": strings.Repeat("y", 20), "c": "1"}, "a=xxxxxxxxxxxxxxxxxxxx,+2"},
		{map[string]string{"a": strings.Repeat("x", 16), "b": strings.Repeat("y", 16)}, "a=xxxxxxxxxxxxxxxx,b=yyyyyyyyyyyyyyyy"},
		{map[string]string{"key": strings.Repeat("v", 50)}, "key=" + strings.Repeat("v", 35) + "…"},
		{map[string]string{"key": strings.Repeat("v", 50), "z": "1"}, "key=" + strings.Repeat("v", 32) + "…,+1"},
	} {
		got := labelsCell(tc.labels, 40)
		if got != tc.want {
			t.Errorf("labelsCell(%v) = %q; want %q", tc.labels, got, tc.want)
		}
		if n := len([]rune(got)); n > 40 {
			t.Errorf("labelsCell(%v) is %d characters; want at most 40", tc.labels, n)
		}
	}
}
