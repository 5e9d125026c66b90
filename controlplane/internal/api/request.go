package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// decodeJSON reads the request body as one JSON value into v. An empty body
// is allowed only if optional. Unknown fields are refused, so that a typo
// in a field name is not silently ignored.
func decodeJSON(c *gin.Context, v any, optional bool) error {
	const op = "api.decodeJSON"
	what := c.Request.Method + " " + c.FullPath()
	body := http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		if optional {
			return nil
		}
		return shoalerr.E(shoalerr.Invalid, op, "%s needs a JSON body; docs/API.md shows its fields", what)
	case errors.As(err, &mbe):
		return shoalerr.E(shoalerr.TooLarge, op, "%s: the JSON body is larger than %d bytes", what, maxJSONBody)
	case err != nil:
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "%s: the body is not the JSON this route takes (docs/API.md)", what)
	}
	if dec.More() {
		return shoalerr.E(shoalerr.Invalid, op, "%s: the body holds more than one JSON value", what)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return shoalerr.E(shoalerr.Invalid, op, "%s: unexpected data after the JSON body", what)
	}
	return nil
}

// errInvalid is a shorthand for request validation failures.
func errInvalid(format string, args ...any) error {
	return shoalerr.E(shoalerr.Invalid, "api", "%s", fmt.Sprintf(format, args...))
}
