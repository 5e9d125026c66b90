package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// fuzzRoutes are the JSON bodies FuzzDecodeJSON decodes: what the route
// decodes into, and whether an empty body is allowed.
var fuzzRoutes = []struct {
	path     string
	new      func() any
	optional bool
}{
	{"/v1/enroll", func() any { return &apiv1.EnrollRequest{} }, false},
	{"/api/v1/deployments", func() any { return &apiv1.DeployRequest{} }, false},
	{"/api/v1/tokens", func() any { return &apiv1.TokenRequest{} }, true},
}

func decodeBody(route int, body []byte) (any, error) {
	gin.SetMode(gin.ReleaseMode) // as New does; debug mode prints on every engine
	r := fuzzRoutes[route]
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("POST", r.path, bytes.NewReader(body))
	v := r.new()
	return v, decodeJSON(c, v, r.optional)
}

// FuzzDecodeJSON decodes request bodies of the control plane's API as its
// handlers do (enrollment, deployment, token), allocating in proportion
// to the body. A body is refused with an Invalid (or TooLarge) error, or
// it is one JSON value whose object keys are all fields of the request
// type, and the decoded request re-encodes to a body that decodes to the
// same request. Seeds:
// testdata/fuzz/FuzzDecodeJSON, from TestFuzzDecodeJSONCorpus.
func FuzzDecodeJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, route byte, body []byte) {
		ri := int(route) % len(fuzzRoutes)
		var v any
		var err error
		if n := fuzzcorpus.Allocated(func() { v, err = decodeBody(ri, body) }); n > fuzzcorpus.AllocBudget(len(body)) {
			t.Fatalf("decoding a %d-byte body allocated %d bytes", len(body), n)
		}
		if err != nil {
			switch code := shoalerr.CodeOf(err); {
			case code == shoalerr.TooLarge && len(body) > maxJSONBody:
			case code == shoalerr.Invalid:
			default:
				t.Fatalf("refused with code %s: %v", code, err)
			}
			if !strings.Contains(err.Error(), "POST") {
				t.Fatalf("error %q does not name the request", err)
			}
			return
		}
		if len(bytes.TrimSpace(body)) == 0 {
			if !fuzzRoutes[ri].optional {
				t.Fatal("accepted an empty body on a route that needs one")
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(body, &obj) == nil {
			fields := reflect.TypeOf(v).Elem()
			for k := range obj {
				known := false
				for i := range fields.NumField() {
					known = known || strings.EqualFold(strings.Split(fields.Field(i).Tag.Get("json"), ",")[0], k)
				}
				if !known {
					t.Fatalf("accepted the unknown field %q", k)
				}
			}
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeBody(ri, b)
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("re-encoded request %s decodes to %+v (%v); want %+v", b, again, err, v)
		}
	})
}

func fuzzDecodeJSONSeeds() []fuzzcorpus.Seed {
	seed := func(name string, valid bool, route byte, body string) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{route, []byte(body)}}
	}
	return []fuzzcorpus.Seed{
		seed("enroll", true, 0, `{"token":"3q2-7w","device_id":"pump-7","agent_version":"0.3.0","profile":"raspberry-pi-4"}`),
		seed("enroll-labels", true, 0, `{"token":"3q2-7w","device_id":"pump-7","labels":{"env":"prod","site":"north"},"group":"canary"}`),
		seed("deploy", true, 1, `{"model":"summer","version":"1","devices":["a","pump-7"],"rollback":false,"profile":"","ttl":"720h"}`),
		seed("deploy-all-devices", true, 1, `{"model":"summer","version":"2"}`),
		seed("token-empty-body", true, 2, ``),
		seed("token-ttl", true, 2, "{\"ttl\":\"30m\"}\n"),
		seed("enroll-null", true, 0, `null`),
		seed("enroll-case-insensitive", true, 0, `{"Device_ID":"a","TOKEN":"t"}`),
		seed("enroll-empty-body", false, 0, ``),
		seed("unknown-field", false, 1, `{"model":"summer","version":"1","canary":10}`),
		seed("two-values", false, 0, `{"token":"t"} {"token":"u"}`),
		seed("trailing-garbage", false, 2, `{"ttl":"1h"}]`),
		seed("wrong-type", false, 1, `{"model":"summer","version":1}`),
		seed("devices-not-list", false, 1, `{"model":"m","version":"1","devices":"a"}`),
		seed("truncated", false, 0, `{"token":"3q2-7w","device_id":"pu`),
		seed("bad-utf8", true, 0, "{\"token\":\"\xff\xfe\",\"device_id\":\"a\"}"),
		seed("array", false, 2, `[]`),
	}
}

// TestFuzzDecodeJSONCorpus keeps testdata/fuzz/FuzzDecodeJSON in step with
// the seeds above (-update-fuzz-corpus rewrites it).
func TestFuzzDecodeJSONCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, "FuzzDecodeJSON", fuzzDecodeJSONSeeds(), func(v []any) error {
		_, err := decodeBody(int(v[0].(byte))%len(fuzzRoutes), v[1].([]byte))
		return err
	})
}
