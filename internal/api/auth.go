package api

import (
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/aupd/aupd/internal/auth"
)

// principal is an authenticated token.
type principal struct {
	name    string
	role    Role
	company string
}

// authenticator checks the bearer token of a request against the token
// set, within the failure limit, if any.
type authenticator struct {
	tokens *auth.Tokens
	limit  atomic.Pointer[FailureLimit]
}

func newAuthenticator(c AuthConfig) (*authenticator, error) {
	t, err := auth.NewTokens(c)
	if err != nil {
		return nil, err
	}
	return &authenticator{tokens: t}, nil
}

// authenticate finds the bearer token of r. It compares the token's hash
// with every configured hash in constant time and does not stop at a
// match, so that timing tells nothing about which hashes exist.
func (a *authenticator) authenticate(r *http.Request) (*principal, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errf(http.StatusUnauthorized, "unauthenticated", "missing bearer token: send Authorization: Bearer <token>")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return nil, errf(http.StatusUnauthorized, "unauthenticated", "the Authorization header must be: Bearer <token>")
	}
	lim := a.limit.Load()
	if lim != nil {
		if e := blocked(r.Context(), lim, r); e != nil {
			return nil, e
		}
	}
	found, ok := a.find(tok)
	if !ok {
		if lim != nil {
			lim.Fail(r.Context(), r)
		}
		return nil, errf(http.StatusUnauthorized, "invalid_token", "the bearer token is not valid")
	}
	return found, nil
}

// find compares the token's hash with every configured hash in constant
// time and does not stop at a match (auth.Tokens.Verify).
func (a *authenticator) find(tok string) (*principal, bool) {
	t, ok := a.tokens.Verify(tok)
	if !ok {
		return nil, false
	}
	return &principal{name: t.Name, role: t.Role, company: t.Company}, true
}
