package sessionlock

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/aupd/aupd/internal/events"
)

// The routes of the session lock API, as Go 1.22 ServeMux patterns.
const (
	RouteList    = "GET /api/v1/accounts/{account}/session-locks"
	RouteAcquire = "POST /api/v1/accounts/{account}/session-locks"
	RouteRenew   = "POST /api/v1/accounts/{account}/session-locks/{id}/renew"
	RouteRelease = "DELETE /api/v1/accounts/{account}/session-locks/{id}"
)

// maxBody bounds a request body.
const maxBody = 16 << 10

// Handler serves the session lock API. Authentication is the job of
// whoever mounts it.
//
//	POST   .../accounts/{account}/session-locks           acquire
//	       {"protocol":"pop3|imap|webmail","lease_seconds":120,"holder":"..."}
//	       201 Lock; 409 {"error":"[IN-USE] Mailbox locked","code":"in_use"}
//	POST   .../accounts/{account}/session-locks/{id}/renew {"lease_seconds":120}
//	       200 Lock; 404 {"code":"not_held"}: acquire again
//	DELETE .../accounts/{account}/session-locks/{id}      204, held or not
//	GET    .../accounts/{account}/session-locks           200 {"locks":[Lock...]}
type Handler struct {
	locks *Locks
	log   *slog.Logger
	mux   *http.ServeMux
}

// NewHandler returns the API handler for locks.
func NewHandler(locks *Locks, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{locks: locks, log: logger.With("component", "sessionlock.http"), mux: http.NewServeMux()}
	h.Register(h.mux)
	return h
}

// Register adds the API's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc(RouteList, h.list)
	mux.HandleFunc(RouteAcquire, h.acquire)
	mux.HandleFunc(RouteRenew, h.renew)
	mux.HandleFunc(RouteRelease, h.release)
}

// ServeHTTP serves the API's routes; anything else is 404 or 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// acquireRequest is the body of an acquire.
type acquireRequest struct {
	Protocol     Protocol `json:"protocol"`
	LeaseSeconds int64    `json:"lease_seconds"`
	Holder       string   `json:"holder"`
}

// renewRequest is the body of a renew; it may be empty.
type renewRequest struct {
	LeaseSeconds int64 `json:"lease_seconds"`
}

// lockJSON is a Lock on the wire.
type lockJSON struct {
	Lock
	LeaseSeconds int64 `json:"lease_seconds"`
}

// Error codes of the API.
const (
	CodeInUse      = "in_use"
	CodeNotHeld    = "not_held"
	CodeTooMany    = "too_many_holders"
	CodeBadRequest = "bad_request"
	CodeBadLease   = "bad_lease"
	CodeInternal   = "internal"
)

func (h *Handler) acquire(w http.ResponseWriter, r *http.Request) {
	acct, ok := pathAccount(w, r)
	if !ok {
		return
	}
	var req acquireRequest
	if err := decodeBody(r.Body, &req, false); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if !req.Protocol.Valid() {
		writeError(w, http.StatusBadRequest, CodeBadRequest, `protocol must be "pop3", "imap" or "webmail"`)
		return
	}
	lease, ok := leaseOf(w, req.LeaseSeconds)
	if !ok {
		return
	}
	lk, err := h.locks.Acquire(r.Context(), acct, req.Protocol, lease, req.Holder)
	if err != nil {
		h.fail(w, "acquire", acct, err)
		return
	}
	h.writeLock(w, http.StatusCreated, lk)
}

func (h *Handler) renew(w http.ResponseWriter, r *http.Request) {
	acct, ok := pathAccount(w, r)
	if !ok {
		return
	}
	var req renewRequest
	if err := decodeBody(r.Body, &req, true); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	lease, ok := leaseOf(w, req.LeaseSeconds)
	if !ok {
		return
	}
	lk, err := h.locks.Renew(r.Context(), acct, r.PathValue("id"), lease)
	if err != nil {
		h.fail(w, "renew", acct, err)
		return
	}
	h.writeLock(w, http.StatusOK, lk)
}

func (h *Handler) release(w http.ResponseWriter, r *http.Request) {
	acct, ok := pathAccount(w, r)
	if !ok {
		return
	}
	if _, err := h.locks.Release(r.Context(), acct, r.PathValue("id")); err != nil {
		h.fail(w, "release", acct, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	acct, ok := pathAccount(w, r)
	if !ok {
		return
	}
	locks, err := h.locks.List(r.Context(), acct)
	if err != nil {
		h.fail(w, "list", acct, err)
		return
	}
	now := h.locks.now()
	out := make([]lockJSON, len(locks))
	for i, lk := range locks {
		out[i] = lockJSON{Lock: lk, LeaseSeconds: leaseLeft(lk, now)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"locks": out})
}

func (h *Handler) writeLock(w http.ResponseWriter, code int, lk Lock) {
	writeJSON(w, code, lockJSON{Lock: lk, LeaseSeconds: leaseLeft(lk, h.locks.now())})
}

// leaseLeft is the lease remaining, in whole seconds rounded up.
func leaseLeft(lk Lock, now time.Time) int64 {
	d := lk.ExpiresAt.Sub(now)
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// fail answers an error of the lock store.
func (h *Handler) fail(w http.ResponseWriter, op, acct string, err error) {
	switch {
	case errors.Is(err, ErrInUse):
		writeError(w, http.StatusConflict, CodeInUse, InUseMessage)
	case errors.Is(err, ErrNotHeld):
		writeError(w, http.StatusNotFound, CodeNotHeld, err.Error())
	case errors.Is(err, ErrTooManyHolders):
		writeError(w, http.StatusConflict, CodeTooMany, err.Error())
	case errors.Is(err, ErrLease):
		writeError(w, http.StatusBadRequest, CodeBadLease, "lease_seconds: "+err.Error())
	default:
		h.log.Error("session lock "+op, "account", acct, "err", err)
		writeError(w, http.StatusServiceUnavailable, CodeInternal, "session lock store unavailable")
	}
}

func pathAccount(w http.ResponseWriter, r *http.Request) (string, bool) {
	acct, err := events.NormalizeAccount(r.PathValue("account"))
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "account: "+err.Error())
		return "", false
	}
	return acct, true
}

func leaseOf(w http.ResponseWriter, secs int64) (time.Duration, bool) {
	if secs < 0 || secs > int64(24*time.Hour/time.Second) {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "lease_seconds must be 0 (the default) to 86400")
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}

// decodeBody decodes a JSON object, refusing unknown fields. An empty body
// is accepted when emptyOK.
func decodeBody(body io.Reader, v any, emptyOK bool) error {
	dec := json.NewDecoder(io.LimitReader(body, maxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && emptyOK {
			return nil
		}
		return errors.New("body must be one JSON object: " + err.Error())
	}
	if dec.More() {
		return errors.New("body must be one JSON object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]string{"error": msg, "code": errCode})
}
