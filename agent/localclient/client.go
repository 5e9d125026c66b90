// Package localclient is a Go client for the agent's local API: the Open
// Inference Protocol (KServe v2 REST) that apps on the device call —
// health, server and model metadata, inference — and the agent's
// POST /v1/feedback for ground-truth labels. docs/API.md describes the
// API; the agent serves it from agent/internal/localapi.
//
// It uses the standard library alone, and the agent binary does not link
// it: it is for apps, tests and the tools that drive agents (the demo, the
// soak harness).
//
// Every call takes a context. An answer other than a success is an *Error
// with the HTTP status and the agent's message (StatusOf reads the
// status).
package localclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// Client talks to one agent's local API.
type Client struct {
	base string
	hc   *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc (its
// transport, connection limits and timeout) instead of
// http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// New returns a client for the agent's local API at baseURL
// (http://127.0.0.1:8081, the agent's --api-addr).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agent API URL %q: want http://host:port (the agent's --api-addr)", baseURL)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the agent API's URL.
func (c *Client) BaseURL() string { return c.base }

// Error is an answer from the agent other than a success.
type Error struct {
	Method, Path string
	// Status is the HTTP status: 400 for a request the model cannot take
	// (the message says which input is wrong), 404 for a model or version
	// that is not loaded, 503 when no model is loaded yet (or, for
	// feedback, when the agent takes none), 500 when the model failed.
	Status int
	// Message is the agent's {"error": ...}, or the body if it sent
	// something else.
	Message string
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "(no message)"
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), msg)
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// do sends a request; a 2xx answer is decoded into out (if not nil), any
// other is an *Error. ok lists statuses outside 2xx that are answers too
// (503 from the readiness endpoint): their body is decoded into out.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any, ok ...int) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent's local API at %s (is shoal-agent running with this --api-addr?): %w", c.base, err)
	}
	defer resp.Body.Close()
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && !contains(ok, resp.StatusCode) {
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if err != nil {
			return fmt.Errorf("%s %s: %s, and reading the answer failed: %w", method, path, resp.Status, err)
		}
		e := &Error{Method: method, Path: path, Status: resp.StatusCode}
		var msg struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &msg) == nil && msg.Error != "" {
			e.Message = msg.Error
		} else {
			e.Message = strings.TrimSpace(string(data))
		}
		return e
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer (%s): %w", method, path, resp.Status, err)
	}
	return nil
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Live returns nil if the agent's API answers that it is live
// (GET /v2/health/live).
func (c *Client) Live(ctx context.Context) error {
	var out struct {
		Live bool `json:"live"`
	}
	if err := c.do(ctx, http.MethodGet, "/v2/health/live", nil, &out); err != nil {
		return err
	}
	if !out.Live {
		return fmt.Errorf("GET /v2/health/live: the agent answered that it is not live")
	}
	return nil
}

// Ready reports whether the agent is ready to serve, that is, has a model
// loaded (GET /v2/health/ready). Not ready is an answer, not an error.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	var out struct {
		Ready bool `json:"ready"`
	}
	err := c.do(ctx, http.MethodGet, "/v2/health/ready", nil, &out, http.StatusServiceUnavailable)
	return out.Ready, err
}

// ServerMetadata is the agent's answer to GET /v2.
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// ServerMetadata returns the server's name ("shoal-agent") and version.
func (c *Client) ServerMetadata(ctx context.Context) (ServerMetadata, error) {
	var out ServerMetadata
	err := c.do(ctx, http.MethodGet, "/v2", nil, &out)
	return out, err
}

// TensorMetadata describes a model input or output; -1 in Shape is a
// dimension of any size.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is the agent's description of an active model.
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// ModelMetadata describes the active version of model, or version if not
// "" (a 404 *Error if another is active).
func (c *Client) ModelMetadata(ctx context.Context, model, version string) (ModelMetadata, error) {
	var out ModelMetadata
	err := c.do(ctx, http.MethodGet, modelPath(model, version), nil, &out)
	return out, err
}

// ModelStatus is the agent's answer to a model readiness request.
type ModelStatus struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Ready   bool   `json:"ready"`
}

// ModelReady asks whether model (version, if not "") is loaded and which
// version serves it. A model that is not loaded is a 404 *Error; none
// loaded at all, a 503.
func (c *Client) ModelReady(ctx context.Context, model, version string) (ModelStatus, error) {
	var out ModelStatus
	err := c.do(ctx, http.MethodGet, modelPath(model, version)+"/ready", nil, &out)
	return out, err
}

// Infer runs req on the agent (POST /v2/models/{model}/infer). Errors are
// *Error for the agent's refusals: 400 for inputs the model cannot take,
// 404 for a model or version not loaded, 503 before any model is active,
// 500 if the model failed to run.
func (c *Client) Infer(ctx context.Context, req InferRequest) (*InferResponse, error) {
	if req.Model == "" {
		return nil, errors.New("infer: the request names no model")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("infer %s: encode the request: %w", req.Model, err)
	}
	var out InferResponse
	if err := c.do(ctx, http.MethodPost, modelPath(req.Model, req.Version)+"/infer", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Feedback is a ground-truth label for a prediction the agent captured.
type Feedback struct {
	// ID is the prediction's: the "id" of its inference response (row i of
	// a batch is "{id}:{i}").
	ID    string `json:"id"`
	Label string `json:"label"`
	// Model, if set, names the prediction's model, for an ID the agent no
	// longer remembers.
	Model string `json:"model,omitempty"`
}

// Feedback sends labels (POST /v1/feedback) and returns how many the
// agent queued for its telemetry. A 404 *Error names an id the agent does
// not know; a 503, an agent that takes no feedback.
func (c *Client) Feedback(ctx context.Context, items ...Feedback) (int, error) {
	if len(items) == 0 {
		return 0, errors.New("feedback: no labels to send")
	}
	body, err := json.Marshal(items)
	if err != nil {
		return 0, fmt.Errorf("feedback: encode: %w", err)
	}
	var out struct {
		Accepted int `json:"accepted"`
	}
	err = c.do(ctx, http.MethodPost, "/v1/feedback", body, &out)
	return out.Accepted, err
}

func modelPath(model, version string) string {
	p := "/v2/models/" + url.PathEscape(model)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}
