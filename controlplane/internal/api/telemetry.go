package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// telemetry summarises stored telemetry, for every device or, with
// ?device={id}, one.
func (s *server) telemetry(c *gin.Context) {
	sum, err := s.Monitor.Summary(c.Request.Context(), c.Query("device"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, sum)
}
