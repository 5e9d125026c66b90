// Package client is a Go client for the Shoal control plane's HTTP API
// (docs/API.md). The admin CLI, the demo and end-to-end tests use it. The
// bodies it sends and returns are the API's own types, package apiv1.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
)

// Client talks to one control plane.
type Client struct {
	base string
	http *http.Client
}

// New returns a client for the control plane at baseURL
// (e.g. http://127.0.0.1:8080).
func New(baseURL string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host:port", baseURL)
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// BaseURL returns the server URL.
func (c *Client) BaseURL() string { return c.base }

// Error is an error answer from the API.
type Error struct {
	Status  int
	Code    string
	Message string
	// RequestID names the request in the control plane's log (the
	// X-Request-Id it answered with), for a server error's cause.
	RequestID string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server answered %d", e.Status)
	}
	return e.Message
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the control plane at %s (is `shoal serve` running? set --server or SHOAL_SERVER): %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e apiv1.ErrorBody
		apiErr := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get(apiv1.RequestIDHeader)}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			apiErr.Code, apiErr.Message = e.Error.Code, e.Error.Message
		} else {
			apiErr.Message = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
		}
		return apiErr
	}
	switch o := out.(type) {
	case nil:
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	case *[]byte:
		*o, err = io.ReadAll(resp.Body)
		return err
	case io.Writer:
		_, err = io.Copy(o, resp.Body)
		return err
	default:
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
		return nil
	}
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, "", out)
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	return c.sendJSON(ctx, http.MethodPost, path, in, out)
}

func (c *Client) sendJSON(ctx context.Context, method, path string, in, out any) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, bytes.NewReader(data), "application/json", out)
}

// PushModel uploads an ONNX model as name/version. created is false when
// the identical bytes were already stored under that version.
func (c *Client) PushModel(ctx context.Context, name, version string, body io.Reader) (mv apiv1.ModelVersion, err error) {
	path := "/api/v1/models/" + url.PathEscape(name) + "/versions/" + url.PathEscape(version)
	err = c.do(ctx, http.MethodPut, path, body, "application/octet-stream", &mv)
	return mv, err
}

// Models lists models.
func (c *Client) Models(ctx context.Context) ([]apiv1.ModelSummary, error) {
	var out apiv1.ModelList
	err := c.getJSON(ctx, "/api/v1/models", &out)
	return out.Models, err
}

// Model returns every version of a model.
func (c *Client) Model(ctx context.Context, name string) ([]apiv1.ModelVersion, error) {
	var out apiv1.ModelVersions
	err := c.getJSON(ctx, "/api/v1/models/"+url.PathEscape(name), &out)
	return out.Versions, err
}

// ModelVersion returns one version.
func (c *Client) ModelVersion(ctx context.Context, name, version string) (mv apiv1.ModelVersion, err error) {
	err = c.getJSON(ctx, "/api/v1/models/"+url.PathEscape(name)+"/versions/"+url.PathEscape(version), &mv)
	return mv, err
}

// Signature returns a version's cosign signature (base64 text).
func (c *Client) Signature(ctx context.Context, name, version string) (string, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, "/api/v1/models/"+url.PathEscape(name)+"/versions/"+url.PathEscape(version)+"/signature", nil, "", &b)
	return strings.TrimSpace(string(b)), err
}

// PublicKey returns the control plane's signing public key (PEM).
func (c *Client) PublicKey(ctx context.Context) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, "/api/v1/trust/public-key", nil, "", &b)
	return b, err
}

// Deploy sets model/version as the desired model of devices (all when empty).
func (c *Client) Deploy(ctx context.Context, model, version string, devices []string) (apiv1.Deployment, error) {
	return c.DeployWith(ctx, model, version, devices, DeployOptions{})
}

// DeployOptions are a deployment's optional settings.
type DeployOptions struct {
	// CaptureShare is the share (0 to 1) of predictions the agents
	// capture for retraining; 0 captures none.
	CaptureShare float64
}

// DeployWith is Deploy with options.
func (c *Client) DeployWith(ctx context.Context, model, version string, devices []string, opts DeployOptions) (r apiv1.Deployment, err error) {
	req := apiv1.DeployRequest{Model: model, Version: version, Devices: devices, CaptureShare: opts.CaptureShare}
	err = c.postJSON(ctx, "/api/v1/deployments", req, &r)
	return r, err
}

// CreateToken makes a one-time enrollment token valid for ttl (0 = server default).
func (c *Client) CreateToken(ctx context.Context, ttl time.Duration) (t apiv1.Token, err error) {
	var req apiv1.TokenRequest
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	err = c.postJSON(ctx, "/api/v1/tokens", req, &t)
	return t, err
}

// Devices lists enrolled devices.
func (c *Client) Devices(ctx context.Context) ([]apiv1.Device, error) {
	return c.DevicesMatching(ctx, DeviceFilter{})
}

// DeviceFilter picks devices: those with every one of Labels (exact
// values) and, if Group is not empty, in Group. The zero filter picks
// every device.
type DeviceFilter struct {
	Labels map[string]string
	Group  string
}

// Selector returns the filter's labels as the API's selector, "k=v,k2=v2"
// in key order ("" for none).
func (f DeviceFilter) Selector() string {
	parts := make([]string, 0, len(f.Labels))
	for _, k := range slices.Sorted(maps.Keys(f.Labels)) {
		parts = append(parts, k+"="+f.Labels[k])
	}
	return strings.Join(parts, ",")
}

// DevicesMatching lists the enrolled devices f picks.
func (c *Client) DevicesMatching(ctx context.Context, f DeviceFilter) ([]apiv1.Device, error) {
	q := url.Values{}
	if sel := f.Selector(); sel != "" {
		q.Set("selector", sel)
	}
	if f.Group != "" {
		q.Set("group", f.Group)
	}
	path := "/api/v1/devices"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out apiv1.DeviceList
	err := c.getJSON(ctx, path, &out)
	return out.Devices, err
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (d apiv1.Device, err error) {
	err = c.getJSON(ctx, "/api/v1/devices/"+url.PathEscape(id), &d)
	return d, err
}

// UpdateDevice changes a device's labels and group and returns the device
// as changed: each label in labels is set, or removed if its value is nil;
// labels not named are kept. group nil keeps the group, "" takes the
// device out of it.
func (c *Client) UpdateDevice(ctx context.Context, id string, labels map[string]*string, group *string) (d apiv1.Device, err error) {
	body := apiv1.DevicePatch{Labels: labels, Group: group}
	err = c.sendJSON(ctx, http.MethodPatch, "/api/v1/devices/"+url.PathEscape(id), body, &d)
	return d, err
}

// Telemetry returns telemetry counts for one device, or all when id is "".
func (c *Client) Telemetry(ctx context.Context, deviceID string) (s apiv1.TelemetrySummary, err error) {
	path := "/api/v1/telemetry"
	if deviceID != "" {
		path += "?device=" + url.QueryEscape(deviceID)
	}
	err = c.getJSON(ctx, path, &s)
	return s, err
}
