package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
)

func (s *server) listModels(c *gin.Context) {
	models, err := s.Registry.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	if models == nil {
		models = []registry.Model{}
	}
	c.JSON(http.StatusOK, apiv1.ModelList{Models: models})
}

func (s *server) getModel(c *gin.Context) {
	name := c.Param("name")
	versions, err := s.Registry.Versions(c.Request.Context(), name)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiv1.ModelVersions{Name: name, Versions: convert(versions, modelVersionView)})
}

// pushModel streams the request body into the registry; gin never buffers
// it.
func (s *server) pushModel(c *gin.Context) {
	name, version := c.Param("name"), c.Param("version")
	mv, created, err := s.Registry.Push(c.Request.Context(), name, version, c.Request.Body)
	if err != nil {
		s.fail(c, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		c.Header("Location", "/api/v1/models/"+name+"/versions/"+version)
	}
	c.JSON(status, modelVersionView(mv))
}

func (s *server) getVersion(c *gin.Context) {
	mv, err := s.Registry.Get(c.Request.Context(), c.Param("name"), c.Param("version"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, modelVersionView(mv))
}

func (s *server) getSignature(c *gin.Context) {
	sig, err := s.Registry.Signature(c.Request.Context(), c.Param("name"), c.Param("version"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Data(http.StatusOK, "text/plain; charset=utf-8", []byte(sig+"\n"))
}

func (s *server) publicKey(c *gin.Context) {
	c.Data(http.StatusOK, "application/x-pem-file", s.PublicKeyPEM)
}
