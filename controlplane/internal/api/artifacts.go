package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// getArtifact serves a blob by digest, for agents: Range (206) lets a
// download resume, and the digest is the ETag, so If-None-Match and If-Range
// work without a modification time.
func (s *server) getArtifact(c *gin.Context) {
	s.serveArtifact(c, c.Param("sha256"), "")
}

// getVersionArtifact serves a version's ONNX file as a download.
func (s *server) getVersionArtifact(c *gin.Context) {
	name, version := c.Param("name"), c.Param("version")
	mv, err := s.Registry.Get(c.Request.Context(), name, version)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.serveArtifact(c, mv.SHA256, name+"-"+version+".onnx")
}

func (s *server) serveArtifact(c *gin.Context, sha, filename string) {
	f, err := s.Registry.OpenArtifact(sha)
	if err != nil {
		s.fail(c, err)
		return
	}
	defer f.Close()
	h := c.Writer.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+sha+`"`)
	// Content-addressed: the bytes behind a digest never change.
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if filename != "" {
		h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	}
	http.ServeContent(c.Writer, c.Request, "", time.Time{}, f)
}
