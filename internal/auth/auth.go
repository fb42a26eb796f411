package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
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

// Config is the admin API's authentication config (YAML `auth:`).
type Config struct {
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
func (c Config) Validate() error {
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

// Can reports whether role r may do what role min may. It orders the
// reading roles only; what a token may do is Allowed's to say.
func (r Role) Can(min Role) bool { return r.rank() >= min.rank() && min.rank() > 0 }

// Fingerprint identifies the secret of the token t was made from (its
// configured hash), for a session to remember which secret opened it: a
// new secret for the same name (a rotation), or a token removed and added
// back with a new secret, has another fingerprint. It is a hash of the
// configured hash, so it tells no more about the token than the config.
func (t TokenConfig) Fingerprint() string {
	sum := sha256.Sum256([]byte("aupd session fingerprint\x00" + strings.ToLower(t.Hash)))
	return hex.EncodeToString(sum[:16])
}
