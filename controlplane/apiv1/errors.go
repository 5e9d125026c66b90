package apiv1

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong. Code is one of the Code constants;
// Message is for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RequestID names the request in the control plane's log; set on
	// server errors (5xx), whose message is generic and whose cause only
	// the log holds.
	RequestID string `json:"request_id,omitempty"`
}

// The error codes and their HTTP statuses.
const (
	CodeInvalid      = "invalid"      // 400, and 405 for a method a route does not take
	CodeNotFound     = "not_found"    // 404
	CodeConflict     = "conflict"     // 409
	CodeUnauthorized = "unauthorized" // 401
	CodeForbidden    = "forbidden"    // 403
	CodeTooLarge     = "too_large"    // 413
	CodeUnavailable  = "unavailable"  // 503
	CodeInternal     = "internal"     // 500
)

// RequestIDHeader carries a request's id: the control plane answers every
// request with it, taking the client's if it sends a usable one.
const RequestIDHeader = "X-Request-Id"
