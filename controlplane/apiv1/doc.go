// Package apiv1 holds the request and response bodies of the control
// plane's HTTP API (docs/API.md): the routes under /api/v1 and the
// enrollment route agents call. They are plain structs with the JSON tags
// of the wire, declared once here and used by the API's handlers, the Go
// client (controlplane/client) and the web console; a change to a type
// here is a change to the API.
//
// The package depends on the standard library only, so that any program
// may import it without the control plane's dependencies.
package apiv1
