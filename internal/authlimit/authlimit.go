// Package authlimit limits failed authentications per client address, at
// every door that takes a secret: the admin API's bearer tokens (and the
// handlers guarded with them) and the Dovecot policy server's API key.
// The counters are in Redis, shared by every aupd and by every door, so
// that guesses spread over doors and processes add up.
package authlimit

import (
	"context"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/clientaddr"
)

// Limit counts a client's failed authentications in a fixed window: past
// Max of them within Window, the client is blocked, even with a right
// secret, until the window has passed. A blocked client learns nothing
// from a guess, so that guessing costs a window per Max guesses.
type Limit struct {
	Redis  redis.Scripter
	Prefix string // the store's key prefix
	Max    int
	Window time.Duration
	// Client finds the client's address (http.trusted_proxies); nil: the
	// peer's.
	Client *clientaddr.Resolver
}

// failScript counts one failure in a fixed window; peekScript reads the
// count. KEYS[1] counter; ARGV[1] window ms. Both return {count, ttl ms}.
var (
	failScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
`)
	peekScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
return {n, redis.call('PTTL', KEYS[1])}
`)
)

// timeout bounds each look at a counter: a Redis that hangs delays a
// request by that much at most, and then limits nothing.
const timeout = 250 * time.Millisecond

func (l *Limit) key(r *http.Request) string {
	return l.Prefix + ":auth:failures:" + l.Client.Addr(r)
}

// Blocked reports whether r's client is over the limit, and when it may
// try again. A Redis error or timeout blocks nothing: the limit must not
// take a door down with it.
func (l *Limit) Blocked(ctx context.Context, r *http.Request) (retry time.Duration, blocked bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := peekScript.Run(ctx, l.Redis, []string{l.key(r)}).Int64Slice()
	if err != nil || len(res) != 2 || res[0] < int64(l.Max) {
		return 0, false
	}
	return max(time.Duration(res[1])*time.Millisecond, time.Second), true
}

// Fail counts a failed authentication of r's client.
func (l *Limit) Fail(ctx context.Context, r *http.Request) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_ = failScript.Run(ctx, l.Redis, []string{l.key(r)}, l.Window.Milliseconds()).Err()
}
