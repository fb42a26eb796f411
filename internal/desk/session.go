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
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/auth"
)

// Redis is what the desk needs from a client for its sessions, sign-in
// limits and link marks: redis.Client, the failover client and
// redis.ClusterClient all satisfy it. Every command names one key, and
// the one script's two keys share the hash tag {desk}, so Cluster needs
// no hash tags beyond those and the account's.
type Redis interface {
	redis.Scripter
	HSet(ctx context.Context, key string, values ...any) *redis.IntCmd
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	HMGet(ctx context.Context, key string, fields ...string) *redis.SliceCmd
	PExpire(ctx context.Context, key string, expiration time.Duration) *redis.BoolCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
	Get(ctx context.Context, key string) *redis.StringCmd
	ZAdd(ctx context.Context, key string, members ...redis.Z) *redis.IntCmd
	ZRem(ctx context.Context, key string, members ...any) *redis.IntCmd
	ZRangeByScore(ctx context.Context, key string, opt *redis.ZRangeBy) *redis.StringSliceCmd
	ZRemRangeByScore(ctx context.Context, key, min, max string) *redis.IntCmd
}

// Cookie names. Both are HttpOnly, SameSite=Strict, Path=/desk/, and
// Secure when the desk is reached over TLS.
const (
	sessionCookie = "aupd_desk"
	preCookie     = "aupd_desk_signin" // the sign-in form's CSRF token
)

// The kinds of session: made with an API token, or by a person with a
// sign-in link sent to their address.
const (
	kindToken  = "token"
	kindPerson = "person"
)

// session is a signed-in desk user: a token's name, or a person's
// address; the role and company; and what it is bound to (the token's
// fingerprint, auth.TokenConfig.Fingerprint, or the link key's), so that a
// new secret ends it.
type session struct {
	id      string
	kind    string
	name    string
	role    auth.Role
	company string
	csrf    string
	client  string
	created time.Time
	expires time.Time
}

// grant is what a sign-in grants: the session to make.
type grant struct {
	kind    string
	name    string
	role    auth.Role
	company string
	binding string // the token's fingerprint, or the link key's
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sessionHash names a session in Redis: the hash of its id, so that the
// cookie's value is not in Redis.
func sessionHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func (d *Desk) sessionKey(id string) string { return d.sessionKeyOf(sessionHash(id)) }

func (d *Desk) sessionKeyOf(hash string) string { return d.prefix + ":desk:session:" + hash }

// indexKey is the sorted set of a company's sessions (the provider's,
// without a company: "-"), by expiry, for the sessions page and "sign out
// everywhere".
func (d *Desk) indexKey(company string) string { return d.prefix + ":desk:sessions:" + orDash(company) }

// revokedKey holds the marks that end sessions made before them:
// token:<name> (a token removed or changed, RecordTokens), company:<id>
// and all ("sign out everywhere"); the value is the time in ms.
func (d *Desk) revokedKey() string { return revokedKey(d.prefix) }

func revokedKey(prefix string) string { return prefix + ":{desk}:revoked" }
func tokensKey(prefix string) string  { return prefix + ":{desk}:tokens" }

func orDash(company string) string {
	if company == "" {
		return "-"
	}
	return company
}

func (d *Desk) newSession(ctx context.Context, g grant, client string, now time.Time) (*session, error) {
	s := &session{id: randomToken(), kind: g.kind, name: g.name, role: g.role, company: g.company, csrf: randomToken(),
		client: client, created: now, expires: now.Add(d.cfg.SessionTTL)}
	key := d.sessionKey(s.id)
	if err := d.rdb.HSet(ctx, key, "kind", s.kind, "name", s.name, "role", string(s.role), "company", s.company,
		"binding", g.binding, "csrf", s.csrf, "client", client, "created", now.UnixMilli(), "expires", s.expires.UnixMilli()).Err(); err != nil {
		return nil, fmt.Errorf("create desk session: %w", err)
	}
	err := d.rdb.PExpire(ctx, key, d.cfg.SessionTTL).Err()
	if err == nil {
		idx := d.indexKey(s.company)
		if err = d.rdb.ZAdd(ctx, idx, redis.Z{Score: float64(s.expires.UnixMilli()), Member: sessionHash(s.id)}).Err(); err == nil {
			err = d.rdb.PExpire(ctx, idx, d.cfg.SessionTTL+time.Minute).Err()
		}
	}
	if err != nil {
		d.rdb.Del(context.WithoutCancel(ctx), key)
		return nil, fmt.Errorf("create desk session: %w", err)
	}
	return s, nil
}

// session returns the request's session, nil when there is none (no
// cookie, expired, signed out, or ended by a check).
func (d *Desk) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil, nil
	}
	s, err := d.loadSession(r.Context(), sessionHash(c.Value))
	if s != nil {
		s.id = c.Value
	}
	return s, err
}

// loadSession reads a session by its hash and checks it; a session that
// fails a check is deleted, so that it stays ended whatever changes
// later (nil, nil).
func (d *Desk) loadSession(ctx context.Context, hash string) (*session, error) {
	key := d.sessionKeyOf(hash)
	h, err := d.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read desk session: %w", err)
	}
	if len(h) == 0 {
		return nil, nil
	}
	s := &session{kind: h["kind"], name: h["name"], role: auth.Role(h["role"]), company: h["company"], csrf: h["csrf"], client: h["client"]}
	if s.kind == "" {
		s.kind = kindToken // a session from before kinds
	}
	if ms, err := strconv.ParseInt(h["created"], 10, 64); err == nil {
		s.created = time.UnixMilli(ms).UTC()
	}
	if ms, err := strconv.ParseInt(h["expires"], 10, 64); err == nil {
		s.expires = time.UnixMilli(ms).UTC()
	}
	binding := h["binding"]
	if binding == "" {
		binding = h["token"] // a session from before kinds
	}
	ok, err := d.valid(ctx, s, binding)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := d.dropSession(ctx, hash, s.company); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return s, nil
}

// valid checks a session against what is in force now.
//
// A token session: a token taken out of the config, given another
// secret, role or company, or no longer allowed to read, ends its
// sessions (at the reload that changes it). A session from before
// fingerprints has none and ends too.
//
// A person's session: it ends when the link key changes, or when the
// address is no longer the company's abuse contact or one of its
// desk_contacts.
//
// Either ends when a mark of its token, its company or all sessions is
// at or after its sign-in (RecordTokens, "sign out everywhere").
func (d *Desk) valid(ctx context.Context, s *session, binding string) (bool, error) {
	if s.name == "" || !s.role.Valid() || s.csrf == "" || !auth.Allowed(s.role, s.company, auth.PermRead) {
		return false, nil
	}
	switch s.kind {
	case kindToken:
		t, ok := d.tokens.Named(s.name)
		if !ok || t.Role != s.role || t.Company != s.company || !equal(binding, t.Fingerprint()) {
			return false, nil
		}
	case kindPerson:
		if d.links == nil || !equal(binding, d.links.fingerprint()) || s.role != personRole || s.company == "" {
			return false, nil
		}
		if c, ok := d.dir.ByID(s.company); !ok || !c.MaySignIn(s.name) {
			return false, nil
		}
	default:
		return false, nil
	}
	marks := []string{"all", "company:" + orDash(s.company)}
	if s.kind == kindToken {
		marks = append(marks, "token:"+s.name)
	}
	ended, err := d.revoked(ctx, s.created, marks...)
	return !ended && err == nil, err
}

// revoked reports whether any of the marks is at or after t.
func (d *Desk) revoked(ctx context.Context, t time.Time, marks ...string) (bool, error) {
	vals, err := d.rdb.HMGet(ctx, d.revokedKey(), marks...).Result()
	if err != nil {
		return false, fmt.Errorf("read desk session marks: %w", err)
	}
	for _, m := range vals {
		v, _ := m.(string)
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && t.UnixMilli() <= ms {
			return true, nil
		}
	}
	return false, nil
}

// personRole is the role of a person's session: a company's abuse
// contact does on the desk what the company's abuse token does.
const personRole = auth.RoleAbuse

func (d *Desk) endSession(ctx context.Context, s *session) error {
	return d.dropSession(ctx, sessionHash(s.id), s.company)
}

func (d *Desk) dropSession(ctx context.Context, hash, company string) error {
	if err := d.rdb.Del(ctx, d.sessionKeyOf(hash)).Err(); err != nil {
		return fmt.Errorf("end desk session: %w", err)
	}
	if err := d.rdb.ZRem(ctx, d.indexKey(company), hash).Err(); err != nil {
		return fmt.Errorf("end desk session: %w", err)
	}
	return nil
}

// sessionsOf returns the sessions of a company's index ("" for the
// provider's) that are in force, at most max, soonest to expire first; it
// drops the expired entries and the sessions that fail their checks.
func (d *Desk) sessionsOf(ctx context.Context, company string, max int) ([]*session, []string, error) {
	idx := d.indexKey(company)
	now := d.now().UnixMilli()
	if err := d.rdb.ZRemRangeByScore(ctx, idx, "-inf", strconv.FormatInt(now, 10)).Err(); err != nil {
		return nil, nil, fmt.Errorf("list desk sessions: %w", err)
	}
	hashes, err := d.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now, 10), Max: "+inf", Count: int64(max)}).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("list desk sessions: %w", err)
	}
	var out []*session
	var ids []string
	for _, h := range hashes {
		s, err := d.loadSession(ctx, h)
		if err != nil {
			return nil, nil, err
		}
		if s == nil {
			d.rdb.ZRem(ctx, idx, h)
			continue
		}
		out = append(out, s)
		ids = append(ids, h)
	}
	return out, ids, nil
}

// indexes are the session indexes there may be: the provider's and one
// per company.
func (d *Desk) indexes() []string {
	out := []string{""}
	for _, c := range d.dir.All() {
		out = append(out, c.ID)
	}
	return out
}

// Sweep checks every indexed session and ends those that no longer pass
// (a contact removed, a token revoked), so that they stay ended even if
// the contact or token comes back; it drops expired index entries too.
// The desk runs it at start, every minute, and aupd on each reload.
func (d *Desk) Sweep(ctx context.Context) error {
	var errs []error
	for _, c := range d.indexes() {
		if _, _, err := d.sessionsOf(ctx, c, 10000); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// signOutEverywhere ends the sessions of a company ("-": the provider's,
// without a company; "*": every session): it marks them ended as of now,
// which also ends sessions the index does not hold, and deletes the
// indexed ones. It returns how many indexed sessions it ended.
func (d *Desk) signOutEverywhere(ctx context.Context, scope string) (int, error) {
	now := d.now().UnixMilli()
	field, idx := "company:"+scope, []string{scope}
	if scope == "*" {
		field, idx = "all", d.indexes()
	}
	if err := d.rdb.HSet(ctx, d.revokedKey(), field, now).Err(); err != nil {
		return 0, fmt.Errorf("sign out everywhere: %w", err)
	}
	n := 0
	for _, c := range idx {
		if c == "-" {
			c = ""
		}
		key := d.indexKey(c)
		hashes, err := d.rdb.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: "+inf"}).Result()
		if err != nil {
			return n, fmt.Errorf("sign out everywhere: %w", err)
		}
		for _, h := range hashes {
			if err := d.rdb.Del(ctx, d.sessionKeyOf(h)).Err(); err != nil {
				return n, fmt.Errorf("sign out everywhere: %w", err)
			}
			n++
		}
		if err := d.rdb.Del(ctx, key).Err(); err != nil {
			return n, fmt.Errorf("sign out everywhere: %w", err)
		}
	}
	return n, nil
}

// recordScript keeps the record of the token set (name -> fingerprint,
// role and company) and marks the tokens that were removed or changed
// since the last record, so that their sessions end for good: a token
// removed and later added back with the same secret does not revive
// them. It also drops marks older than any session can be.
// KEYS[1] record, KEYS[2] marks; ARGV[1] now ms, ARGV[2] oldest mark
// kept (ms), then name, value pairs. Returns how many tokens it marked.
var recordScript = redis.NewScript(`
local old = redis.call('HGETALL', KEYS[1])
local marks = redis.call('HGETALL', KEYS[2])
local new = {}
for i = 3, #ARGV, 2 do new[ARGV[i]] = ARGV[i + 1] end
local stale = {}
for i = 1, #marks, 2 do
  if tonumber(marks[i + 1]) == nil or tonumber(marks[i + 1]) < tonumber(ARGV[2]) then table.insert(stale, marks[i]) end
end
local set = {}
for i = 1, #old, 2 do
  if new[old[i]] ~= old[i + 1] then
    table.insert(set, 'token:' .. old[i])
    table.insert(set, ARGV[1])
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
if #set > 0 then redis.call('HSET', KEYS[2], unpack(set)) end
redis.call('DEL', KEYS[1])
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
return #set / 2
`)

// RecordTokens compares the token set now in force (at start-up, and at
// each reload before it takes effect) with the one recorded in Redis by
// the last load of any aupd on the same Redis, and ends for good the
// desk sessions of every token removed or changed since (its secret,
// role or company): a session made before the change is refused even if
// the token comes back later with the same secret. It returns how many
// tokens it marked.
func RecordTokens(ctx context.Context, rdb redis.Scripter, prefix string, ac auth.Config, now time.Time) (int, error) {
	args := []any{now.UnixMilli(), now.Add(-maxSessionAge).UnixMilli()}
	for _, t := range ac.Tokens {
		args = append(args, t.Name, t.Fingerprint()+"|"+string(t.Role)+"|"+t.Company)
	}
	n, err := recordScript.Run(ctx, rdb, []string{tokensKey(prefix), revokedKey(prefix)}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("record desk tokens: %w", err)
	}
	return n, nil
}

// maxSessionAge is longer than any session lasts (session_ttl is at most
// 7 days): marks older than that end nothing and are dropped.
const maxSessionAge = 7*24*time.Hour + time.Hour

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

// allowSignIn counts a sign-in attempt of the client's address (a token
// tried, or a sign-in link asked for).
func (d *Desk) allowSignIn(ctx context.Context, r *http.Request) error {
	return d.limit(ctx, d.prefix+":desk:signin:"+d.opts.Clients.Addr(r), d.cfg.SignInAttempts, d.cfg.SignInWindow)
}

// limit counts one attempt under key; past max within window it answers
// *errLimited.
func (d *Desk) limit(ctx context.Context, key string, max int, window time.Duration) error {
	res, err := limitScript.Run(ctx, d.rdb, []string{key}, window.Milliseconds()).Int64Slice()
	if err != nil {
		return fmt.Errorf("count sign-in attempt: %w", err)
	}
	if len(res) == 2 && res[0] > int64(max) {
		return &errLimited{retry: time.Duration(res[1]) * time.Millisecond}
	}
	return nil
}

func equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

var errNoCSRF = errors.New("the form is out of date or was not sent from this desk")
