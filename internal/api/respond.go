package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/store"
)

// apiError is an error answer: {"error":{"code":...,"message":...}}.
type apiError struct {
	status  int
	retry   time.Duration // Retry-After of a 429
	Code    string        `json:"code"`
	Message string        `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// errNoAccount is the answer for an account that does not exist and for
// one outside the token's company: the two must look the same.
func errNoAccount() *apiError {
	return errf(http.StatusNotFound, "not_found", "no such account")
}

func errNoCompany() *apiError {
	return errf(http.StatusNotFound, "not_found", "no such company")
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.status >= 500 {
		s.log.Error("admin api request", "method", r.Method, "path", r.URL.Path, "err", e.Message)
		e = errf(e.status, e.Code, "internal error; see the aupd log")
	}
	setRetryAfter(w, e)
	writeJSON(w, e.status, map[string]*apiError{"error": e})
}

// storeError maps an error of the store or the directory to an answer.
func (s *server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	var e *apiError
	switch {
	case errors.As(err, &e):
	case errors.Is(err, store.ErrProviderSuspension):
		e = errf(http.StatusForbidden, "provider_suspension", "%s", err.Error())
	case errors.Is(err, store.ErrSuspended):
		e = errf(http.StatusConflict, "suspended", "%s", err.Error())
	case errors.Is(err, store.ErrForwardAccess):
		e = errf(http.StatusConflict, "forward_account", "%s", err.Error())
	case errors.Is(err, store.ErrConflict):
		e = errf(http.StatusConflict, "conflict", "%s", err.Error())
	case errors.Is(err, store.ErrNotFound):
		e = errNoAccount()
	case errors.Is(err, store.ErrInvalid):
		e = errf(http.StatusBadRequest, "invalid", "%s", err.Error())
	case errors.Is(err, companies.ErrNotFound):
		e = errNoCompany()
	case errors.Is(err, companies.ErrStatic):
		e = errf(http.StatusConflict, "static_company", "%s", err.Error())
	case errors.Is(err, companies.ErrConflict):
		e = errf(http.StatusConflict, "conflict", "%s", err.Error())
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		e = errf(499, "canceled", "request canceled")
	default:
		e = errf(http.StatusInternalServerError, "internal", "%s", err.Error())
	}
	s.fail(w, r, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON request body into v strictly: one object, no unknown
// fields, no trailing data, at most MaxBodyBytes. An empty body decodes
// as {} when allowEmpty.
func decode(r *http.Request, v any, allowEmpty bool) *apiError {
	if r.Body == nil || r.Body == http.NoBody {
		if allowEmpty {
			return nil
		}
		return errf(http.StatusBadRequest, "bad_json", "a JSON object is required")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errf(http.StatusUnsupportedMediaType, "bad_content_type", "send Content-Type: application/json")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, allowEmpty)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err, false)
		}
		return errf(http.StatusBadRequest, "bad_json", "unexpected data after the JSON object")
	}
	return nil
}

func jsonError(err error, allowEmpty bool) *apiError {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return errf(http.StatusRequestEntityTooLarge, "too_large", "the request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		if allowEmpty {
			return nil
		}
		return errf(http.StatusBadRequest, "bad_json", "a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errf(http.StatusBadRequest, "bad_json", "the JSON body ends too soon")
	case errors.As(err, &se):
		return errf(http.StatusBadRequest, "bad_json", "bad JSON at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return errf(http.StatusBadRequest, "bad_json", "the body must be a JSON object")
		}
		return errf(http.StatusBadRequest, "bad_json", "field %s must be %s, not %s", field, te.Type.String(), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errf(http.StatusBadRequest, "unknown_field", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return errf(http.StatusBadRequest, "bad_json", "bad JSON: %s", err.Error())
}
