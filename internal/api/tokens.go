package api

// Tokens is the set of API tokens, shared by the admin API and the
// handlers served beside it (GuardTokens). Set replaces it at once, so
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
func (t *Tokens) Set(c AuthConfig) error { return t.a.set(c) }
