package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/clientaddr"
)

// FailureLimit limits failed authentications (a wrong bearer token) per
// client address, on the admin API and every handler guarded with its
// tokens: past Max failures within Window, the client gets 429 with
// Retry-After, even with a right token, until the window has passed. The
// counters are in Redis, shared by every aupd.
type FailureLimit struct {
	Redis  redis.Scripter
	Prefix string // the store's key prefix
	Max    int
	Window time.Duration
	// Client finds the client's address (http.trusted_proxies); nil: the
	// peer's.
	Client *clientaddr.Resolver
}

// SetFailureLimit limits failed authentications; nil: no limit.
func (t *Tokens) SetFailureLimit(l *FailureLimit) { t.a.limit.Store(l) }

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

func (l *FailureLimit) key(r *http.Request) string {
	return l.Prefix + ":auth:failures:" + l.Client.Addr(r)
}

// limitTimeout bounds each look at a counter: a Redis that hangs delays
// a request by that much at most, and then limits nothing.
const limitTimeout = 250 * time.Millisecond

// blocked answers 429 when the client is over the limit. A Redis error
// or timeout blocks nothing: the limit must not take the API down with it.
func (l *FailureLimit) blocked(ctx context.Context, r *http.Request) *apiError {
	ctx, cancel := context.WithTimeout(ctx, limitTimeout)
	defer cancel()
	res, err := peekScript.Run(ctx, l.Redis, []string{l.key(r)}).Int64Slice()
	if err != nil || len(res) != 2 || res[0] < int64(l.Max) {
		return nil
	}
	e := errf(http.StatusTooManyRequests, "too_many_failures", "too many failed authentications from this address; try again later")
	e.retry = max(time.Duration(res[1])*time.Millisecond, time.Second)
	return e
}

func (l *FailureLimit) fail(ctx context.Context, r *http.Request) {
	ctx, cancel := context.WithTimeout(ctx, limitTimeout)
	defer cancel()
	_ = failScript.Run(ctx, l.Redis, []string{l.key(r)}, l.Window.Milliseconds()).Err()
}

// setRetryAfter sets Retry-After for a 429.
func setRetryAfter(w http.ResponseWriter, e *apiError) {
	if e.retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(e.retry.Seconds()+0.999)))
	}
}
