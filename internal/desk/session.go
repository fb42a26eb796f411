package desk

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api"
)

// Redis is what the desk needs from a client for its sessions, sign-in
// limits and link marks: redis.Client, the failover client and
// redis.ClusterClient all satisfy it. Every key is a single-key
// operation, so Cluster needs no hash tags beyond the account's.
type Redis interface {
	redis.Scripter
	HSet(ctx context.Context, key string, values ...any) *redis.IntCmd
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	PExpire(ctx context.Context, key string, expiration time.Duration) *redis.BoolCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
	Get(ctx context.Context, key string) *redis.StringCmd
}

// Cookie names. Both are HttpOnly, SameSite=Strict, Path=/desk/, and
// Secure when the desk is reached over TLS.
const (
	sessionCookie = "aupd_desk"
	preCookie     = "aupd_desk_signin" // the sign-in form's CSRF token
)

// session is a signed-in desk user: the token's name, role and company,
// and the fingerprint of the token's secret (api.TokenConfig.Fingerprint),
// so that a new secret for the token, or its removal, ends the session at
// the next reload.
type session struct {
	id      string
	name    string
	role    api.Role
	company string
	csrf    string
	created time.Time
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sessionKey stores a session under the hash of its id, so that the
// cookie's value is not in Redis.
func (d *Desk) sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return d.prefix + ":desk:session:" + hex.EncodeToString(sum[:])
}

func (d *Desk) newSession(ctx context.Context, t api.TokenConfig, now time.Time) (*session, error) {
	s := &session{id: randomToken(), name: t.Name, role: t.Role, company: t.Company, csrf: randomToken(), created: now}
	key := d.sessionKey(s.id)
	if err := d.rdb.HSet(ctx, key, "name", s.name, "role", string(s.role), "company", s.company, "token", t.Fingerprint(), "csrf", s.csrf, "created", now.UnixMilli()).Err(); err != nil {
		return nil, fmt.Errorf("create desk session: %w", err)
	}
	if err := d.rdb.PExpire(ctx, key, d.cfg.SessionTTL).Err(); err != nil {
		d.rdb.Del(ctx, key)
		return nil, fmt.Errorf("create desk session: %w", err)
	}
	return s, nil
}

// session returns the request's session, nil when there is none (no
// cookie, expired, signed out).
func (d *Desk) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil, nil
	}
	h, err := d.rdb.HGetAll(r.Context(), d.sessionKey(c.Value)).Result()
	if err != nil {
		return nil, fmt.Errorf("read desk session: %w", err)
	}
	role := api.Role(h["role"])
	if h["name"] == "" || !role.Valid() || h["csrf"] == "" {
		return nil, nil
	}
	// A token taken out of the config, given another secret, role or
	// company, or no longer allowed to read, ends its sessions (at the
	// reload that changes it). A session from before fingerprints has
	// none and ends too.
	t, ok := d.tokens.Named(h["name"])
	if !ok || t.Role != role || t.Company != h["company"] || !equal(h["token"], t.Fingerprint()) || !t.Allowed(api.PermRead) {
		return nil, nil
	}
	return &session{id: c.Value, name: h["name"], role: role, company: h["company"], csrf: h["csrf"]}, nil
}

func (d *Desk) endSession(ctx context.Context, s *session) error {
	if err := d.rdb.Del(ctx, d.sessionKey(s.id)).Err(); err != nil {
		return fmt.Errorf("end desk session: %w", err)
	}
	return nil
}

func (d *Desk) cookie(r *http.Request, name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name: name, Value: value, Path: "/desk/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		// Behind TLS: here, or at a proxy in front (public_url https, or the
		// proxy's X-Forwarded-Proto; a forged one only restricts the cookie).
		Secure: r.TLS != nil || d.cfg.secure() || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
	}
	if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
	} else {
		c.MaxAge = -1
	}
	return c
}

// limitScript counts one attempt in a fixed window.
// KEYS[1] counter; ARGV[1] window ms. Returns {count, ttl ms}.
var limitScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
`)

// errLimited is a sign-in over the limit; retry says when to try again.
type errLimited struct{ retry time.Duration }

func (e *errLimited) Error() string { return "too many sign-in attempts" }

// allowSignIn counts a sign-in attempt of the client's address.
func (d *Desk) allowSignIn(ctx context.Context, r *http.Request) error {
	host := d.opts.Clients.Addr(r)
	res, err := limitScript.Run(ctx, d.rdb, []string{d.prefix + ":desk:signin:" + host}, d.cfg.SignInWindow.Milliseconds()).Int64Slice()
	if err != nil {
		return fmt.Errorf("count sign-in attempt: %w", err)
	}
	if len(res) == 2 && res[0] > int64(d.cfg.SignInAttempts) {
		return &errLimited{retry: time.Duration(res[1]) * time.Millisecond}
	}
	return nil
}

func equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

var errNoCSRF = errors.New("the form is out of date or was not sent from this desk")
