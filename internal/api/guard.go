package api

import "net/http"

// Guard protects a handler served beside the admin API (the mailbox
// session locks) with the API's tokens: a request needs a bearer token of
// at least role min and without a company scope, as the mail front ends'
// service tokens have. Failures answer 401 or 403 like the API.
func Guard(c AuthConfig, min Role, next http.Handler) (http.Handler, error) {
	t, err := NewTokens(c)
	if err != nil {
		return nil, err
	}
	return GuardTokens(t, min, next), nil
}

// GuardTokens is Guard with a reloadable token set shared with the API.
func GuardTokens(t *Tokens, min Role, next http.Handler) http.Handler {
	a := t.a
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, e := a.authenticate(r)
		if e == nil && (!p.can(min) || p.company != "") {
			e = errf(http.StatusForbidden, "forbidden", "this endpoint needs a %s token without a company scope", min)
		}
		if e != nil {
			writeJSON(w, e.status, map[string]*apiError{"error": e})
			return
		}
		next.ServeHTTP(w, r)
	})
}
