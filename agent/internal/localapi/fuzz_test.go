package localapi

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// fuzzModels are the models FuzzInfer sends bodies to (not "reshape", which
// fails at run time by design).
var fuzzModels = []string{"echo FP32", "echo FP64", "echo INT8", "echo UINT64", "echo BOOL", "echo BYTES",
	"grid", "multi", "strings", "fp16", "mnist", "scalar"}

// FuzzInfer sends arbitrary bodies to the infer endpoint: the handler must
// never panic or answer 5xx, must always answer JSON, and must not accept a
// body that is not valid JSON.
func FuzzInfer(f *testing.F) {
	for i, body := range []string{
		`{"inputs":[{"name":"in FP32","datatype":"FP32","shape":[3],"data":[1,2.5,-3e-2]}]}`,
		`{"id":"a","inputs":[{"data":[0.5,"NaN","-Infinity"],"shape":[3],"datatype":"FP64","name":"in FP64"}],"outputs":[{"name":"out FP64"}]}`,
		`{"inputs":[{"name":"in INT8","datatype":"INT8","shape":[2],"data":[-128,127]}]}`,
		`{"inputs":[{"name":"in UINT64","datatype":"UINT64","shape":[1],"data":[18446744073709551615]}]}`,
		`{"inputs":[{"name":"in BOOL","datatype":"BOOL","shape":[2],"data":[true,false]}]}`,
		`{"inputs":[{"name":"in BYTES","datatype":"BYTES","shape":[2],"data":["a\"b","\ud83d\ude00"]}]}`,
		`{"inputs":[{"name":"grid","datatype":"FP32","shape":[2,1,3],"data":[[[1,2,3]],[[4,5,6]]]}]}`,
		`{"inputs":[{"name":"InputA","datatype":"UINT8","shape":[1,1,1],"data":[3]},{"name":"InputB","datatype":"FP64","shape":[1,2,2],"data":[1,2,3,4]}]}`,
		`{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["Hello"]}],"parameters":{"x":[null,{}]}}`,
		`{"inputs":[{"name":"InputA","datatype":"FP16","shape":[1,2,2,2],"data":[1,2,3,4,5,6,7,8]}]}`,
		`{"inputs":[{"name":"input","datatype":"FP32","shape":[0,784],"data":[]}]}`,
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[],"data":[1]}]}`,
	} {
		f.Add(uint8(i), body)
	}
	h := New(sharedModels(f), nil, Config{MaxBodyBytes: 1 << 16}, nil)
	f.Fuzz(func(t *testing.T, model uint8, body string) {
		name := fuzzModels[int(model)%len(fuzzModels)]
		req := httptest.NewRequest("POST", "/v2/models/"+url.PathEscape(name)+"/infer", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		resp := w.Body.Bytes()
		var v map[string]any
		if err := json.Unmarshal(resp, &v); err != nil {
			t.Fatalf("status %d: response is not a JSON object: %v\n%s", w.Code, err, resp)
		}
		switch w.Code {
		case 200:
			if !json.Valid([]byte(body)) {
				t.Fatalf("accepted a body that is not JSON: %q", body)
			}
			if _, ok := v["outputs"].([]any); !ok {
				t.Fatalf("200 without outputs: %s", resp)
			}
		case 400, 413:
			if msg, _ := v["error"].(string); msg == "" {
				t.Fatalf("status %d without an error message: %s", w.Code, resp)
			}
		default:
			t.Fatalf("status %d for body %q: %s", w.Code, body, resp)
		}
	})
}
