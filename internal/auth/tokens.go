package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"sync/atomic"
)

// Tokens is the set of API tokens, shared by the admin API, the handlers
// served beside it and the abuse desk. Set replaces it at once, so that a
// reload (SIGHUP, POST /-/reload) takes new and revoked tokens into
// account without a restart; a lookup in flight keeps the set it started
// with.
type Tokens struct {
	tokens atomic.Pointer[[]token]
}

// token is one configured token, its hash decoded.
type token struct {
	sum [sha256.Size]byte
	cfg TokenConfig // Hash in lower case
}

// NewTokens checks c and returns its token set.
func NewTokens(c Config) (*Tokens, error) {
	t := &Tokens{}
	if err := t.Set(c); err != nil {
		return nil, err
	}
	return t, nil
}

// Set replaces the tokens. An invalid config changes nothing.
func (t *Tokens) Set(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	tokens := make([]token, 0, len(c.Tokens))
	for _, tc := range c.Tokens {
		b, _ := hex.DecodeString(strings.TrimPrefix(strings.ToLower(tc.Hash), "sha256:"))
		var at token
		copy(at.sum[:], b)
		at.cfg = TokenConfig{Name: tc.Name, Hash: "sha256:" + hex.EncodeToString(b), Role: tc.Role, Company: tc.Company}
		tokens = append(tokens, at)
	}
	t.tokens.Store(&tokens)
	return nil
}

// Verify finds the token a user presented, among the current tokens. It
// compares the token's hash with every configured hash in constant time
// and does not stop at a match, so that timing tells nothing about which
// hashes exist.
func (t *Tokens) Verify(tok string) (TokenConfig, bool) {
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found *token
	tokens := *t.tokens.Load()
	for i := range tokens {
		if subtle.ConstantTimeCompare(sum[:], tokens[i].sum[:]) == 1 {
			found = &tokens[i]
		}
	}
	if found == nil {
		return TokenConfig{}, false
	}
	return found.cfg, true
}

// Named returns the current token of that name, if any: a session made
// with a token ends when the token is removed, gets another secret
// (TokenConfig.Fingerprint), or its role or company changes.
func (t *Tokens) Named(name string) (TokenConfig, bool) {
	for _, at := range *t.tokens.Load() {
		if at.cfg.Name == name {
			return at.cfg, true
		}
	}
	return TokenConfig{}, false
}
