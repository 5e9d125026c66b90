package api

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// logRequests logs each request at debug level once it is answered.
func (s *server) logRequests(c *gin.Context) {
	start := time.Now()
	c.Next()
	if !s.log.Enabled(c.Request.Context(), slog.LevelDebug) {
		return
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelDebug, "http request",
		slog.String("method", c.Request.Method),
		slog.String("path", c.Request.URL.Path),
		slog.Int("status", c.Writer.Status()),
		slog.Int("bytes", c.Writer.Size()),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", c.ClientIP()),
	)
}

// recovered answers a handler's panic with a JSON 500 and logs it with its
// stack.
func (s *server) recovered(c *gin.Context, rec any) {
	s.log.Error("panic in HTTP handler", "method", c.Request.Method, "path", c.Request.URL.Path,
		"panic", rec, "stack", string(debug.Stack()))
	if c.Writer.Written() {
		c.Abort()
		return
	}
	c.AbortWithStatusJSON(http.StatusInternalServerError, errorBody{errorDetail{
		Code:    shoalerr.Internal,
		Message: "internal error; the control plane's log has the details",
	}})
}
