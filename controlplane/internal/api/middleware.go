package api

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

// requestIDKey is where a request's id is kept in its gin.Context.
const requestIDKey = "shoal.request-id"

// maxRequestIDLen bounds an X-Request-Id the control plane takes from a
// client.
const maxRequestIDLen = 64

// requestID gives each request an id and answers with it in X-Request-Id:
// the client's, if it sent a sane one (1–64 letters, digits, '.', '_',
// '-'), so that a proxy's id carries through; else a new random one. A
// server error's body and log line name it.
func (s *server) requestID(c *gin.Context) {
	id := c.GetHeader(apiv1.RequestIDHeader)
	if !saneRequestID(id) {
		id = newRequestID()
	}
	c.Set(requestIDKey, id)
	c.Header(apiv1.RequestIDHeader, id)
	c.Next()
}

func saneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for _, r := range id {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// newRequestID returns 16 random hex digits.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// requestIDOf returns the id requestID gave c's request.
func requestIDOf(c *gin.Context) string {
	return c.GetString(requestIDKey)
}

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
		slog.String("request_id", requestIDOf(c)),
	)
}

// recovered answers a handler's panic with a JSON 500 and logs it with its
// stack and the request's id.
func (s *server) recovered(c *gin.Context, rec any) {
	id := requestIDOf(c)
	s.log.Error("panic in HTTP handler", "request_id", id, "method", c.Request.Method, "path", c.Request.URL.Path,
		"panic", rec, "stack", string(debug.Stack()))
	if c.Writer.Written() {
		c.Abort()
		return
	}
	c.AbortWithStatusJSON(http.StatusInternalServerError, serverError(shoalerr.Internal, id))
}
