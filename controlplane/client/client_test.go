package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// request is what the test server was asked.
type request struct {
	method, path, query, body string
}

// recordingServer answers every request with answer and keeps what it
// was asked.
func recordingServer(t *testing.T, answer string) (*Client, func() request) {
	t.Helper()
	var mu sync.Mutex
	var last request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = request{r.Method, r.URL.Path, r.URL.RawQuery, string(b)}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, func() request {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

const deviceJSON = `{"id":"pump-1","labels":{"env":"prod"},"group":"canary","last_seen":null,
 "models":[{"name":"m","active_version":"2","target_version":"2","healthy":true,"active_since":null}]}`

func TestDevicesMatching(t *testing.T) {
	c, last := recordingServer(t, `{"devices":[`+deviceJSON+`]}`)
	ctx := context.Background()
	for _, tc := range []struct {
		f     DeviceFilter
		query string
	}{
		{DeviceFilter{}, ""},
		{DeviceFilter{Labels: map[string]string{"site": "north", "env": "prod"}}, "selector=env%3Dprod%2Csite%3Dnorth"},
		{DeviceFilter{Labels: map[string]string{"rack": ""}, Group: "canary"}, "group=canary&selector=rack%3D"},
		{DeviceFilter{Group: "canary"}, "group=canary"},
	} {
		devs, err := c.DevicesMatching(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if r := last(); r.method != http.MethodGet || r.path != "/api/v1/devices" || r.query != tc.query {
			t.Errorf("DevicesMatching(%+v) asked %+v; want GET /api/v1/devices?%s", tc.f, r, tc.query)
		}
		if len(devs) != 1 || devs[0].Labels["env"] != "prod" || devs[0].Group != "canary" ||
			!devs[0].Models[0].Healthy || devs[0].Models[0].TargetVersion != "2" || devs[0].Models[0].ActiveSince != nil || devs[0].LastSeen != nil {
			t.Errorf("devices = %+v", devs)
		}
	}
	if _, err := c.Devices(ctx); err != nil || last().query != "" {
		t.Errorf("Devices asked ?%s, %v; want no filter", last().query, err)
	}
}

func TestUpdateDevice(t *testing.T) {
	c, last := recordingServer(t, deviceJSON)
	ctx := context.Background()
	v, empty := "1", ""
	for _, tc := range []struct {
		labels map[string]*string
		group  *string
		body   string
	}{
		{map[string]*string{"a": &v, "b": nil}, nil, `{"labels":{"a":"1","b":null}}`},
		{nil, &empty, `{"group":""}`},
		{map[string]*string{"a": &v}, &v, `{"group":"1","labels":{"a":"1"}}`},
	} {
		d, err := c.UpdateDevice(ctx, "pump 1", tc.labels, tc.group)
		if err != nil {
			t.Fatal(err)
		}
		r := last()
		var got, want any
		json.Unmarshal([]byte(r.body), &got)
		json.Unmarshal([]byte(tc.body), &want)
		if r.method != http.MethodPatch || r.path != "/api/v1/devices/pump 1" || !jsonEqual(got, want) {
			t.Errorf("UpdateDevice asked %+v; want PATCH with %s", r, tc.body)
		}
		if d.ID != "pump-1" || d.Group != "canary" {
			t.Errorf("device = %+v", d)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
