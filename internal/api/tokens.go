package api

// Tokens is the set of API tokens (auth.Tokens) with the limit of failed
// authentications, shared by the admin API, the handlers served beside it
// (GuardTokens) and the abuse desk. Set replaces the tokens at once, so
// that a reload (SIGHUP, POST /-/reload) takes new and revoked tokens into
// account without a restart.
type Tokens struct{ a *authenticator }

// NewTokens checks c and returns its token set.
func NewTokens(c AuthConfig) (*Tokens, error) {
	a, err := newAuthenticator(c)
	if err != nil {
		return nil, err
	}
	return &Tokens{a: a}, nil
}

// Set replaces the tokens. An invalid config changes nothing.
func (t *Tokens) Set(c AuthConfig) error { return t.a.tokens.Set(c) }

// Verify finds the token a user presented, among the current tokens.
func (t *Tokens) Verify(token string) (TokenConfig, bool) { return t.a.tokens.Verify(token) }

// Named returns the current token of that name, if any (auth.Tokens.Named).
func (t *Tokens) Named(name string) (TokenConfig, bool) { return t.a.tokens.Named(name) }
