package fleet

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

func TestCheckLabel(t *testing.T) {
	long := strings.Repeat("x", 63)
	for _, tc := range []struct {
		key, value string
		err        string // "" = valid
	}{
		{"env", "prod", ""},
		{"a", "", ""},
		{"shoal.dev/site", "north-1_b.2", ""},
		{"9rack", long, ""},
		{long, "v", ""},
		{"", "v", "label key is empty"},
		{long + "x", "v", "64 characters"},
		{"-env", "v", `"-env" starts with '-'`},
		{"/env", "v", "starts with '/'"},
		{"éenv", "v", "starts with 'é'"},
		{"env site", "v", `has ' ' at position 3`},
		{"env=", "v", `has '=' at position 3`},
		{"env", long + "x", `value of label "env" is 64 characters`},
		{"env", "a/b", `value "a/b" of label "env" has '/' at position 1`},
		{"env", "a,b", `has ','`},
		{"env", "nörth", `has 'ö'`},
	} {
		err := checkLabel(tc.key, tc.value)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("checkLabel(%q, %q) = %v; want nil", tc.key, tc.value, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("checkLabel(%q, %q) = %v; want it to say %q", tc.key, tc.value, err, tc.err)
		}
	}
	for _, tc := range []struct{ group, err string }{
		{"canary", ""},
		{long, ""},
		{"", "empty"},
		{long + "x", "64 characters"},
		{"a/b", `group "a/b" has '/'`},
	} {
		err := checkGroup(tc.group)
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("checkGroup(%q) = %v; want %q", tc.group, err, tc.err)
		}
	}
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	if err := checkLabels(many); err == nil || !strings.Contains(err.Error(), "33 labels") {
		t.Errorf("checkLabels(33 labels) = %v", err)
	}
	delete(many, "k0")
	if err := checkLabels(many); err != nil {
		t.Errorf("checkLabels(32 labels) = %v", err)
	}
}

func TestEnrollWithLabels(t *testing.T) {
	e := newEnv(t)
	tok, err := e.svc.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Bad labels are refused before the token is looked at: it stays good.
	for _, tc := range []struct {
		labels map[string]string
		group  string
		text   string
	}{
		{map[string]string{"env": "pr od"}, "", `value "pr od" of label "env"`},
		{map[string]string{"-x": "1"}, "", `label key "-x"`},
		{nil, "a b", `group "a b"`},
	} {
		_, err := e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: "a", Labels: tc.labels, Group: tc.group})
		wantCode(t, err, shoalerr.Invalid, tc.text)
	}
	labels := map[string]string{"env": "prod", "site": "north"}
	if _, err := e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: "a", Labels: labels, Group: "canary"}); err != nil {
		t.Fatal(err)
	}
	labels["env"] = "changed by the caller afterwards"
	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.Labels) != "map[env:prod site:north]" || d.Group != "canary" {
		t.Errorf("enrolled device labels %v, group %q", d.Labels, d.Group)
	}
}

func TestSetLabels(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	if _, err := e.svc.SetDesired(ctx, "m1", envelope(t, "m1", "1"), nil); err != nil {
		t.Fatal(err)
	}
	published := len(e.pub.all())
	str := func(s string) *string { return &s }

	d, err := e.svc.SetLabels(ctx, "a", map[string]*string{"env": str("prod"), "site": str("north"), "rack": str("")}, str("canary"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.Labels) != "map[env:prod rack: site:north]" || d.Group != "canary" || d.ID != "a" || d.DesiredGeneration != 1 {
		t.Fatalf("device after labelling = %+v", d)
	}

	// Merge patch: set one, remove one (nil), remove one that is not
	// there; the group (nil) is kept.
	d, err = e.svc.SetLabels(ctx, "a", map[string]*string{"env": str("staging"), "site": nil, "nope": nil}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.Labels) != "map[env:staging rack:]" || d.Group != "canary" {
		t.Fatalf("device after the patch = labels %v, group %q", d.Labels, d.Group)
	}

	// Refusals change nothing.
	before := e.rawDevice(t, "a")
	for _, tc := range []struct {
		name   string
		id     string
		labels map[string]*string
		group  *string
		code   shoalerr.Code
		text   string
	}{
		{"bad value", "a", map[string]*string{"env": str("a b")}, nil, shoalerr.Invalid, `value "a b" of label "env"`},
		{"bad key", "a", map[string]*string{"env": str("x"), "_x": str("1")}, nil, shoalerr.Invalid, `label key "_x"`},
		{"bad key, removed", "a", map[string]*string{"a b": nil}, nil, shoalerr.Invalid, `label key "a b"`},
		{"bad group", "a", nil, str("a/b"), shoalerr.Invalid, `group "a/b"`},
		{"unknown device", "zz", map[string]*string{"env": str("x")}, nil, shoalerr.NotFound, `"zz" is not enrolled`},
		{"invalid device id", "a/b", nil, nil, shoalerr.NotFound, `"a/b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.SetLabels(ctx, tc.id, tc.labels, tc.group)
			wantCode(t, err, tc.code, tc.text)
		})
	}
	// At most MaxLabels, counting those the device has: it has 2.
	many := map[string]*string{}
	for i := range MaxLabels - 1 {
		many[fmt.Sprintf("k%d", i)] = str("v")
	}
	_, err = e.svc.SetLabels(ctx, "a", many, nil)
	wantCode(t, err, shoalerr.Invalid, "would have 33 labels")
	if !bytes.Equal(e.rawDevice(t, "a"), before) {
		t.Error("a refused change was stored")
	}
	many["rack"] = nil
	if d, err = e.svc.SetLabels(ctx, "a", many, nil); err != nil || len(d.Labels) != MaxLabels {
		t.Fatalf("32 labels: %d, %v", len(d.Labels), err)
	}

	// "" takes the device out of its group; removing every label leaves {}.
	all := map[string]*string{}
	for k := range d.Labels {
		all[k] = nil
	}
	d, err = e.svc.SetLabels(ctx, "a", all, str(""))
	if err != nil || d.Labels == nil || len(d.Labels) != 0 || d.Group != "" {
		t.Fatalf("after removing everything: %+v, %v", d, err)
	}

	// Labels are not desired state: nothing published, no new generation.
	if n := len(e.pub.all()) - published; n != 0 {
		t.Errorf("%d publishes for label changes", n)
	}
	if d.DesiredGeneration != 1 {
		t.Errorf("desired generation = %d; want 1", d.DesiredGeneration)
	}

	// Kept across a restart.
	if _, err := e.svc.SetLabels(ctx, "a", map[string]*string{"env": str("prod")}, str("g1")); err != nil {
		t.Fatal(err)
	}
	e.reopen(t)
	if d, err := e.svc.Get(ctx, "a"); err != nil || fmt.Sprint(d.Labels) != "map[env:prod]" || d.Group != "g1" || len(d.Models) != 1 {
		t.Errorf("after a restart: %+v, %v", d, err)
	}
}

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // fmt of the map, or the error text
		ok   bool
	}{
		{"", "map[]", true},
		{"  ", "map[]", true},
		{"env=prod", "map[env:prod]", true},
		{"env=prod, site=north", "map[env:prod site:north]", true},
		{"rack=", "map[rack:]", true},
		{"env=prod,env=prod", "map[env:prod]", true},
		{"env", `"env" is not key=value`, false},
		{"env=prod,", `"" is not key=value`, false},
		{"env=a=b", `value "a=b" of label "env"`, false},
		{"-x=1", `label key "-x"`, false},
		{"env=prod,env=dev", `both "prod" and "dev"`, false},
	} {
		got, err := ParseSelector(tc.in)
		switch {
		case tc.ok && (err != nil || fmt.Sprint(got) != tc.want):
			t.Errorf("ParseSelector(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		case !tc.ok && (shoalerr.CodeOf(err) != shoalerr.Invalid || !strings.Contains(fmt.Sprint(err), tc.want)):
			t.Errorf("ParseSelector(%q) = %v; want an Invalid error saying %q", tc.in, err, tc.want)
		}
	}
}

func TestListMatchingAndDevices(t *testing.T) {
	e := newEnv(t)
	str := func(s string) *string { return &s }
	for _, dev := range []struct {
		id     string
		labels map[string]*string
		group  string
	}{
		{"a", map[string]*string{"env": str("prod"), "site": str("north")}, "canary"},
		{"b", map[string]*string{"env": str("prod"), "site": str("south")}, ""},
		{"c", map[string]*string{"env": str("dev"), "rack": str("")}, "canary"},
		{"d", nil, ""},
	} {
		e.enroll(t, dev.id)
		if _, err := e.svc.SetLabels(ctx, dev.id, dev.labels, str(dev.group)); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(devs []Device) string {
		var out []string
		for _, d := range devs {
			out = append(out, d.ID)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		sel  Selector
		want string
	}{
		{Selector{}, "a,b,c,d"},
		{Selector{Labels: map[string]string{"env": "prod"}}, "a,b"},
		{Selector{Labels: map[string]string{"env": "prod", "site": "south"}}, "b"},
		{Selector{Labels: map[string]string{"env": "prod"}, Group: "canary"}, "a"},
		{Selector{Group: "canary"}, "a,c"},
		{Selector{Labels: map[string]string{"rack": ""}}, "c"},
		{Selector{Labels: map[string]string{"env": "staging"}}, ""},
		{Selector{Group: "none"}, ""},
	} {
		devs, err := e.svc.ListMatching(ctx, tc.sel)
		if err != nil || ids(devs) != tc.want {
			t.Errorf("ListMatching(%+v) = %q, %v; want %q", tc.sel, ids(devs), err, tc.want)
		}
		for _, d := range devs {
			if !tc.sel.Matches(d) {
				t.Errorf("%+v does not match the device %s it selected", tc.sel, d.ID)
			}
		}
	}
	_, err := e.svc.ListMatching(ctx, Selector{Labels: map[string]string{"env": "a b"}})
	wantCode(t, err, shoalerr.Invalid, `value "a b" of label "env"`)
	_, err = e.svc.ListMatching(ctx, Selector{Group: "a/b"})
	wantCode(t, err, shoalerr.Invalid, `group "a/b"`)

	// Devices reads just the ones asked for; unknown and invalid ids are
	// absent.
	got, err := e.svc.Devices(ctx, []string{"c", "a", "zz", "a/b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if keys := fmt.Sprint(slices.Sorted(maps.Keys(got))); keys != "[a c]" {
		t.Fatalf("Devices = %v; want a and c", keys)
	}
	want, _ := e.svc.Get(ctx, "c")
	if !reflect.DeepEqual(got["c"], want) {
		t.Errorf("Devices[c] = %+v; want what Get says, %+v", got["c"], want)
	}
	if got, err := e.svc.Devices(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Devices(nil) = %v, %v", got, err)
	}
}

// TestSetLabelsConcurrentWithSetDesired: labels and desired state live in
// the same record; changing both at once loses neither.
func TestSetLabelsConcurrentWithSetDesired(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "a")
	const n = 10
	envs := make([][]byte, n)
	for i := range envs {
		envs[i] = envelope(t, fmt.Sprintf("m%d", i), "1")
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			v := "1"
			if _, err := e.svc.SetLabels(ctx, "a", map[string]*string{fmt.Sprintf("k%d", i): &v}, nil); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Go(func() {
		for i := range n {
			if _, err := e.svc.SetDesired(ctx, fmt.Sprintf("m%d", i), envs[i], []string{"a"}); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	d, err := e.svc.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Labels) != n || len(d.Models) != n || d.DesiredGeneration != n {
		t.Errorf("after concurrent changes: %d labels, %d models, generation %d; want %d of each", len(d.Labels), len(d.Models), d.DesiredGeneration, n)
	}
}
