package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
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

// fail writes err as the error response. A client error (4xx) says what
// went wrong: its message is err's. A server error (5xx) may be about the
// server's files and state (a store's I/O error names its path), so its
// client gets a generic message naming the request's id, and the log gets
// the cause under that id. An error without a shoalerr code is internal.
func (s *server) fail(c *gin.Context, err error) {
	var se *shoalerr.Error
	code := shoalerr.Internal
	switch {
	case errors.As(err, &se):
		code = se.Code
	case errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		c.Abort()
		return
	}
	status := statusOf(code)
	if status < 500 {
		c.AbortWithStatusJSON(status, apiv1.ErrorBody{Error: apiv1.ErrorDetail{Code: string(code), Message: err.Error()}})
		return
	}
	id := requestIDOf(c)
	s.log.Error("request failed", "request_id", id, "method", c.Request.Method, "path", c.Request.URL.Path, "status", status, "err", err)
	c.AbortWithStatusJSON(status, serverError(code, id))
}

// serverError is the body of a 5xx answer: generic, with the request id
// that finds its cause in the log.
func serverError(code shoalerr.Code, requestID string) apiv1.ErrorBody {
	msg := fmt.Sprintf("internal error (request id %s); the control plane's log has the details", requestID)
	if code == shoalerr.Unavailable {
		msg = fmt.Sprintf("the control plane cannot do this now (request id %s); try again later, or see its log for why", requestID)
	}
	return apiv1.ErrorBody{Error: apiv1.ErrorDetail{Code: string(code), Message: msg, RequestID: requestID}}
}

func (s *server) noRoute(c *gin.Context) {
	s.fail(c, shoalerr.E(shoalerr.NotFound, "api", "no route %s %s; docs/API.md lists the routes", c.Request.Method, c.Request.URL.Path))
}

func (s *server) noMethod(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusMethodNotAllowed, apiv1.ErrorBody{Error: apiv1.ErrorDetail{
		Code:    string(shoalerr.Invalid),
		Message: "method " + c.Request.Method + " is not allowed on " + c.Request.URL.Path + "; docs/API.md lists the routes",
	}})
}
