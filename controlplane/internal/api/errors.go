package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// statusOf maps an error code to its HTTP status. This is the only place
// codes become statuses.
func statusOf(code shoalerr.Code) int {
	switch code {
	case shoalerr.Invalid:
		return http.StatusBadRequest
	case shoalerr.NotFound:
		return http.StatusNotFound
	case shoalerr.Conflict:
		return http.StatusConflict
	case shoalerr.Unauthorized:
		return http.StatusUnauthorized
	case shoalerr.Forbidden:
		return http.StatusForbidden
	case shoalerr.TooLarge:
		return http.StatusRequestEntityTooLarge
	case shoalerr.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    shoalerr.Code `json:"code"`
	Message string        `json:"message"`
}

// fail writes err as the error response. Errors without a shoalerr code are
// internal: they are logged and the client gets a generic message, since
// their text may describe the server's files and state.
func (s *server) fail(c *gin.Context, err error) {
	var se *shoalerr.Error
	code, msg := shoalerr.Internal, "internal error; the control plane's log has the details"
	switch {
	case errors.As(err, &se):
		code, msg = se.Code, err.Error()
	case errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		c.Abort()
		return
	}
	status := statusOf(code)
	if status >= 500 {
		s.log.Error("request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "status", status, "error", err)
	}
	c.AbortWithStatusJSON(status, errorBody{errorDetail{Code: code, Message: msg}})
}

func (s *server) noRoute(c *gin.Context) {
	s.fail(c, shoalerr.E(shoalerr.NotFound, "api", "no route %s %s; docs/API.md lists the routes", c.Request.Method, c.Request.URL.Path))
}

func (s *server) noMethod(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusMethodNotAllowed, errorBody{errorDetail{
		Code:    shoalerr.Invalid,
		Message: "method " + c.Request.Method + " is not allowed on " + c.Request.URL.Path + "; docs/API.md lists the routes",
	}})
}
