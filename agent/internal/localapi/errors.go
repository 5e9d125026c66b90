package localapi

import (
	"fmt"
	"net/http"
	"strconv"
)

// requestError is an error with the HTTP status it maps to. Its message is
// for the app that sent the request: what was wrong, with which input.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) *requestError {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func statusError(status int, format string, args ...any) *requestError {
	return &requestError{status, fmt.Sprintf(format, args...)}
}

// writeError writes the Open Inference Protocol error body {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	b := append(appendJSONString([]byte(`{"error":`), msg), "}\n"...)
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}
