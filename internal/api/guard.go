package api

import "net/http"

// Guard protects a handler served beside the admin API (the mailbox
// session locks, the control endpoints) with the API's tokens: a request
// needs a bearer token that Allowed lets do perm. Failures answer 401 or
// 403 like the API.
func Guard(c AuthConfig, perm Permission, next http.Handler) (http.Handler, error) {
	t, err := NewTokens(c)
	if err != nil {
		return nil, err
	}
	return GuardTokens(t, perm, next), nil
}

// GuardTokens is Guard with a reloadable token set shared with the API.
func GuardTokens(t *Tokens, perm Permission, next http.Handler) http.Handler {
	a := t.a
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, e := a.authenticate(r)
		if e == nil && !p.allowed(perm) {
			e = errf(http.StatusForbidden, "forbidden", "this endpoint needs %s", perm.Needs())
		}
		if e != nil {
			if e.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="aupd"`)
			}
			setRetryAfter(w, e)
			writeJSON(w, e.status, map[string]*apiError{"error": e})
			return
		}
		next.ServeHTTP(w, r)
	})
}
