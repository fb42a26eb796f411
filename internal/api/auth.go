package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/aupd/aupd/internal/auth"
)

// Role is what a token may do. Each role can do everything the roles
// before it can.
type Role string

// The roles.
const (
	// RoleViewer reads accounts, history, evidence, licences, companies and
	// asks for decisions (the role of a webmail front end).
	RoleViewer Role = "viewer"
	// RoleAbuse also suspends and reinstates services, locks and unlocks
	// accounts and ends lockouts (an abuse desk).
	RoleAbuse Role = "abuse"
	// RoleAdmin also sets maintenance, closes, reactivates, deletes and
	// sets up accounts, and manages companies when it has no company scope.
	RoleAdmin Role = "admin"
	// RolePublisher only publishes verdicts (the /api/v1/ingest/
	// endpoints); it reads nothing, and no other role may publish.
	RolePublisher Role = "publisher"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleAbuse:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 || r == RolePublisher }

// AuthConfig is the admin API's authentication config (YAML `auth:`).
type AuthConfig struct {
	Tokens []TokenConfig `yaml:"tokens" json:"tokens"`
}

// TokenConfig is one bearer token. The token itself never appears in the
// config, only its hash: "sha256:" and 64 hex digits (see HashToken and
// `aupctl hash-token`).
type TokenConfig struct {
	// Name identifies the token in history entries and account events
	// (the actor of every change made with it).
	Name string `yaml:"name" json:"name"`
	Hash string `yaml:"hash" json:"hash"`
	Role Role   `yaml:"role" json:"role"`
	// Company limits the token to the accounts of one company's domains
	// (a company's abuse contact). Empty: every account.
	Company string `yaml:"company" json:"company,omitempty"`
}

var (
	hashPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)
)

// Validate checks the tokens: unique names and hashes, known roles.
func (c AuthConfig) Validate() error {
	names, hashes := map[string]bool{}, map[string]bool{}
	for i, t := range c.Tokens {
		if !namePattern.MatchString(t.Name) {
			return fmt.Errorf("auth.tokens[%d]: name %q: use 1 to 64 of A-Z a-z 0-9 . _ @ -", i, t.Name)
		}
		if names[t.Name] {
			return fmt.Errorf("auth.tokens[%d]: name %q is used twice", i, t.Name)
		}
		names[t.Name] = true
		h := strings.ToLower(t.Hash)
		if !hashPattern.MatchString(h) {
			return fmt.Errorf("auth.tokens[%d] (%s): hash must be sha256: and 64 hex digits (aupctl hash-token makes one)", i, t.Name)
		}
		if hashes[h] {
			return fmt.Errorf("auth.tokens[%d] (%s): the same token hash is used twice", i, t.Name)
		}
		hashes[h] = true
		if !t.Role.Valid() {
			return fmt.Errorf("auth.tokens[%d] (%s): role %q: use viewer, abuse, admin or publisher", i, t.Name, t.Role)
		}
	}
	return nil
}

// HashToken returns the config form of a token's hash: "sha256:<hex>".
func HashToken(token string) string { return auth.HashToken(token) }

// NewToken returns a new random token (256 bits, URL-safe base64).
func NewToken() string { return auth.NewToken() }

// principal is an authenticated token.
type principal struct {
	name    string
	role    Role
	company string
}

// authenticator holds the decoded token hashes; set replaces them at
// once (a reload), requests in flight keep the set they started with.
type authenticator struct {
	tokens atomic.Pointer[[]authToken]
	limit  atomic.Pointer[FailureLimit]
}

type authToken struct {
	sum  [sha256.Size]byte
	hash string // the configured hash, lower case
	p    principal
}

func newAuthenticator(c AuthConfig) (*authenticator, error) {
	a := &authenticator{}
	if err := a.set(c); err != nil {
		return nil, err
	}
	return a, nil
}

// set replaces the tokens; on an invalid config it keeps the old ones.
func (a *authenticator) set(c AuthConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	tokens := make([]authToken, 0, len(c.Tokens))
	for _, t := range c.Tokens {
		b, _ := hex.DecodeString(strings.TrimPrefix(strings.ToLower(t.Hash), "sha256:"))
		var at authToken
		copy(at.sum[:], b)
		at.hash = "sha256:" + hex.EncodeToString(b)
		at.p = principal{name: t.Name, role: t.Role, company: t.Company}
		tokens = append(tokens, at)
	}
	a.tokens.Store(&tokens)
	return nil
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
// time and does not stop at a match.
func (a *authenticator) find(tok string) (*principal, bool) {
	at, ok := a.findToken(tok)
	if !ok {
		return nil, false
	}
	return &at.p, true
}

func (a *authenticator) findToken(tok string) (*authToken, bool) {
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found *authToken
	tokens := *a.tokens.Load()
	for i := range tokens {
		if subtle.ConstantTimeCompare(sum[:], tokens[i].sum[:]) == 1 {
			found = &tokens[i]
		}
	}
	return found, found != nil
}

// Fingerprint identifies the secret of the token t was made from (its
// configured hash), for a session to remember which secret opened it: a
// new secret for the same name (a rotation), or a token removed and added
// back with a new secret, has another fingerprint. It is a hash of the
// configured hash, so it tells no more about the token than the config.
func (t TokenConfig) Fingerprint() string {
	sum := sha256.Sum256([]byte("aupd session fingerprint\x00" + strings.ToLower(t.Hash)))
	return hex.EncodeToString(sum[:16])
}
