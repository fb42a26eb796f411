package api

// Verify finds the token among the configured ones, as a bearer token of
// the API is found (constant time over every hash), for doors that take
// a pasted token instead of a header (the abuse desk's sign-in). ok is
// false for an unknown token.
func Verify(c AuthConfig, token string) (t TokenConfig, ok bool, err error) {
	a, err := newAuthenticator(c)
	if err != nil {
		return TokenConfig{}, false, err
	}
	p, found := a.find(token)
	if !found {
		return TokenConfig{}, false, nil
	}
	return TokenConfig{Name: p.name, Role: p.role, Company: p.company}, true, nil
}

// Can reports whether role r may do what role min may.
func (r Role) Can(min Role) bool { return r.rank() >= min.rank() && min.rank() > 0 }
