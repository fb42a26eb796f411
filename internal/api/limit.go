package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/aupd/aupd/internal/authlimit"
)

// FailureLimit limits failed authentications (a wrong bearer token) per
// client address, on the admin API and every handler guarded with its
// tokens: past Max failures within Window, the client gets 429 with
// Retry-After, even with a right token, until the window has passed. The
// counters are shared with the other doors (authlimit).
type FailureLimit = authlimit.Limit

// SetFailureLimit limits failed authentications; nil: no limit.
func (t *Tokens) SetFailureLimit(l *FailureLimit) { t.a.limit.Store(l) }

// FailureLimit returns the limit SetFailureLimit set, for the other doors
// to count with; nil: none.
func (t *Tokens) FailureLimit() *FailureLimit { return t.a.limit.Load() }

// blocked answers 429 when the client is over the limit.
func blocked(ctx context.Context, l *FailureLimit, r *http.Request) *apiError {
	retry, ok := l.Blocked(ctx, r)
	if !ok {
		return nil
	}
	e := errf(http.StatusTooManyRequests, "too_many_failures", "too many failed authentications from this address; try again later")
	e.retry = retry
	return e
}

// setRetryAfter sets Retry-After for a 429.
func setRetryAfter(w http.ResponseWriter, e *apiError) {
	if e.retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(e.retry.Seconds()+0.999)))
	}
}
