package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// storeFailure is what a Badger read that the OS refuses looks like once
// a domain package has wrapped it: an Internal *shoalerr.Error whose text
// names the server's files.
var storeFailure = shoalerr.Wrap(errors.New("open /var/lib/shoal/badger/000123.vlog: permission denied"),
	shoalerr.Internal, "registry.Versions", "read the versions of model %q", "summer")

// brokenStoreRegistry fails Versions as a registry over a broken store
// would.
type brokenStoreRegistry struct{ Registry }

func (brokenStoreRegistry) Versions(context.Context, string) ([]registry.ModelVersion, error) {
	return nil, storeFailure
}

// TestServerErrorsHideTheirCause: a 5xx answer names the request's id, in
// its body and its X-Request-Id header, and nothing of the cause, which
// the log holds under the same id.
func TestServerErrorsHideTheirCause(t *testing.T) {
	e := newEnv(t, func(r Registry) Registry { return brokenStoreRegistry{r} })
	r := e.get("/api/v1/models/summer")
	r.wantError(t, http.StatusInternalServerError, shoalerr.Internal, "internal error", "log")
	for _, secret := range []string{"000123.vlog", "/var/lib/shoal", "permission denied", "badger"} {
		if strings.Contains(string(r.body), secret) {
			t.Errorf("the answer leaks %q: %s", secret, r.body)
		}
	}
	var body apiv1.ErrorBody
	r.json(t, &body)
	id := r.header.Get(apiv1.RequestIDHeader)
	if id == "" || body.Error.RequestID != id || !strings.Contains(body.Error.Message, "request id "+id) {
		t.Fatalf("X-Request-Id %q, body %s: want the same request id in both, and in the message", id, r.body)
	}
	var line string
	for l := range strings.SplitSeq(e.logs.String(), "\n") {
		if strings.Contains(l, "request_id="+id) && strings.Contains(l, "level=ERROR") {
			line = l
		}
	}
	if !strings.Contains(line, "open /var/lib/shoal/badger/000123.vlog: permission denied") || !strings.Contains(line, "path=/api/v1/models/summer") {
		t.Errorf("no error line with request_id=%s, its path and the cause in the log:\n%s", id, e.logs.String())
	}

	// Another request, another id.
	if again := e.get("/api/v1/models/summer"); again.header.Get(apiv1.RequestIDHeader) == id {
		t.Errorf("two requests share the id %s", id)
	}
}

// TestRequestIDs: every answer carries X-Request-Id, the client's when it
// is sane; a client error keeps its message and has no request id in its
// body.
func TestRequestIDs(t *testing.T) {
	e := newEnv(t, func(r Registry) Registry { return brokenStoreRegistry{r} })
	for _, tc := range []struct {
		name, sent string
		kept       bool
	}{
		{"none", "", false},
		{"sane", "edge-proxy.7f3a_01", true},
		{"too long", strings.Repeat("a", 65), false},
		{"odd characters", "a b\"<script>", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r response
			if tc.sent == "" {
				r = e.get("/api/v1/models/summer")
			} else {
				r = e.get("/api/v1/models/summer", apiv1.RequestIDHeader, tc.sent)
			}
			got := r.header.Get(apiv1.RequestIDHeader)
			switch {
			case tc.kept && got != tc.sent:
				t.Errorf("X-Request-Id = %q; want the client's %q", got, tc.sent)
			case !tc.kept && (got == tc.sent || !saneRequestID(got)):
				t.Errorf("X-Request-Id = %q; want a new id of the control plane's", got)
			}
			var body apiv1.ErrorBody
			r.json(t, &body)
			if body.Error.RequestID != got || !strings.Contains(e.logs.String(), "request_id="+got) {
				t.Errorf("body request id %q, header %q: want the same, logged", body.Error.RequestID, got)
			}
		})
	}

	r := e.get("/api/v1/devices/nobody")
	r.wantError(t, http.StatusNotFound, shoalerr.NotFound, "nobody")
	if r.header.Get(apiv1.RequestIDHeader) == "" || strings.Contains(string(r.body), "request_id") {
		t.Errorf("a 404: X-Request-Id %q, body %s; want the header, and the body as before", r.header.Get(apiv1.RequestIDHeader), r.body)
	}
	if ok := e.get("/api/v1/trust/public-key"); ok.status != http.StatusOK || ok.header.Get(apiv1.RequestIDHeader) == "" {
		t.Errorf("a 200 has no X-Request-Id: %d %v", ok.status, ok.header)
	}
}
