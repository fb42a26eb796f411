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

// Verify finds the token a user presented, among the current tokens.
func (t *Tokens) Verify(token string) (TokenConfig, bool) {
	at, ok := t.a.findToken(token)
	if !ok {
		return TokenConfig{}, false
	}
	return at.config(), true
}

// Named returns the current token of that name, if any: a session made
// with a token ends when the token is removed, gets another secret
// (TokenConfig.Fingerprint), or its role or company changes.
func (t *Tokens) Named(name string) (TokenConfig, bool) {
	for _, at := range *t.a.tokens.Load() {
		if at.p.name == name {
			return at.config(), true
		}
	}
	return TokenConfig{}, false
}

func (at *authToken) config() TokenConfig {
	return TokenConfig{Name: at.p.name, Hash: at.hash, Role: at.p.role, Company: at.p.company}
}
