// Package sessionlock keeps mailbox session locks in Redis (domain.md, "Two
// different locks"): a POP3 session holds a mailbox exclusively, IMAP and
// webmail sessions share it. Every lock is a lease that its holder renews;
// a lease that is not renewed expires by itself, so a crashed front end
// never leaves a mailbox locked. A refused acquire is ErrInUse, whose text
// is the reply front ends give their users: "[IN-USE] Mailbox locked".
//
// This lock is about concurrent access only; it has nothing to do with the
// account's security lock (status locked / lockout).
//
// Keys, hash-tagged by account so that they share a Redis Cluster slot:
//
//	<prefix>:{<account>}:sl   sorted set: member = lock id, score = lease
//	                          end in ms
//	<prefix>:{<account>}:sli  hash: lock id -> protocol and holder
//
// Both expire with the last lease. The lock id starts with "x" for an
// exclusive lock and "s" for a shared one.
package sessionlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// InUseMessage is the reply a front end gives a refused session.
const InUseMessage = "[IN-USE] Mailbox locked"

// Errors of lock operations.
var (
	// ErrInUse: the mailbox is held in a conflicting mode. Temporary.
	ErrInUse = errors.New(InUseMessage)
	// ErrNotHeld: the lock was released or its lease expired; the session
	// must acquire again.
	ErrNotHeld = errors.New("session lock not held")
	// ErrTooManyHolders: the mailbox has MaxHolders shared sessions.
	ErrTooManyHolders = errors.New("too many sessions hold the mailbox")
	// ErrLease: the lease asked for is outside [MinLease, MaxLease].
	ErrLease = errors.New("lease out of range")
)

// Protocol is the kind of session that takes a lock.
type Protocol string

// The protocols. POP3 locks exclusively, IMAP and webmail share.
const (
	POP3    Protocol = "pop3"
	IMAP    Protocol = "imap"
	Webmail Protocol = "webmail"
)

// Mode is how a lock holds the mailbox.
type Mode string

// The modes.
const (
	Exclusive Mode = "exclusive"
	Shared    Mode = "shared"
)

// Mode returns the protocol's lock mode.
func (p Protocol) Mode() Mode {
	if p == POP3 {
		return Exclusive
	}
	return Shared
}

// Valid reports whether p is a known protocol.
func (p Protocol) Valid() bool { return p == POP3 || p == IMAP || p == Webmail }

// Config configures session locks.
type Config struct {
	// KeyPrefix starts every Redis key. Default "aup".
	KeyPrefix string `yaml:"-"` // set from redis.prefix
	// DefaultLease is the lease of a lock whose request names none.
	// Default 2m.
	DefaultLease time.Duration `yaml:"default_lease"`
	// MinLease and MaxLease bound the lease a client may ask for.
	// Defaults 5s and 30m.
	MinLease time.Duration `yaml:"min_lease"`
	MaxLease time.Duration `yaml:"max_lease"`
	// MaxHolders bounds the shared sessions of one mailbox. Default 100.
	MaxHolders int `yaml:"max_holders"`
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{KeyPrefix: "aup", DefaultLease: 2 * time.Minute, MinLease: 5 * time.Second,
		MaxLease: 30 * time.Minute, MaxHolders: 100}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.KeyPrefix == "" {
		c.KeyPrefix = d.KeyPrefix
	}
	if c.DefaultLease == 0 {
		c.DefaultLease = d.DefaultLease
	}
	if c.MinLease == 0 {
		c.MinLease = d.MinLease
	}
	if c.MaxLease == 0 {
		c.MaxLease = d.MaxLease
	}
	if c.MaxHolders == 0 {
		c.MaxHolders = d.MaxHolders
	}
	return c
}

// Validate reports the first invalid setting, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MinLease < time.Second:
		return fmt.Errorf("session locks: min_lease must be at least 1s, got %s", c.MinLease)
	case c.MaxLease < c.MinLease:
		return fmt.Errorf("session locks: max_lease %s is below min_lease %s", c.MaxLease, c.MinLease)
	case c.DefaultLease < c.MinLease || c.DefaultLease > c.MaxLease:
		return fmt.Errorf("session locks: default_lease %s is outside [%s, %s]", c.DefaultLease, c.MinLease, c.MaxLease)
	case c.MaxHolders < 1:
		return fmt.Errorf("session locks: max_holders must be positive, got %d", c.MaxHolders)
	}
	return nil
}

// Redis is what the locks need from a client; redis.Client,
// redis.ClusterClient, redis.Ring and redis.UniversalClient all fit.
type Redis interface {
	redis.Scripter
}

// Options are the optional collaborators of Locks.
type Options struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
}

// Locks manages mailbox session locks. It is safe for concurrent use.
type Locks struct {
	rdb Redis
	cfg Config
	log *slog.Logger
	now func() time.Time
	ops *prometheus.CounterVec
}

// New returns Locks. cfg is completed with Defaults and validated.
func New(rdb Redis, cfg Config, opts Options) (*Locks, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, errors.New("session locks: nil Redis")
	}
	l := &Locks{rdb: rdb, cfg: cfg, log: opts.Logger, now: opts.Now,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_session_lock_operations_total",
			Help: "Mailbox session lock operations, by operation and result.",
		}, []string{"op", "result"}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("component", "sessionlock")
	if l.now == nil {
		l.now = time.Now
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(l.ops); err != nil {
			return nil, fmt.Errorf("session locks: register metrics: %w", err)
		}
	}
	return l, nil
}

// Lock is one held lock.
type Lock struct {
	ID        string    `json:"id"`
	Account   string    `json:"account"`
	Protocol  Protocol  `json:"protocol"`
	Mode      Mode      `json:"mode"`
	Holder    string    `json:"holder,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// maxHolderLen bounds the free-text holder description.
const maxHolderLen = 200

// Lease returns the lease to use for a request of d: DefaultLease for
// zero, d itself within [MinLease, MaxLease], and an error wrapping
// ErrLease, which says the limits, outside them.
func (l *Locks) Lease(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return l.cfg.DefaultLease, nil
	case d < l.cfg.MinLease || d > l.cfg.MaxLease:
		return 0, fmt.Errorf("%w: %s is not within %s to %s (or 0 for the default, %s)",
			ErrLease, d, l.cfg.MinLease, l.cfg.MaxLease, l.cfg.DefaultLease)
	}
	return d, nil
}

// Limits returns the lease limits: the least, the default and the most.
func (l *Locks) Limits() (min, def, max time.Duration) {
	return l.cfg.MinLease, l.cfg.DefaultLease, l.cfg.MaxLease
}

// Acquire takes a lock on account's mailbox for a session of protocol,
// for lease (see Lease). holder describes the session (front end host,
// session id) for operators. A conflicting lock is ErrInUse.
func (l *Locks) Acquire(ctx context.Context, account string, protocol Protocol, lease time.Duration, holder string) (Lock, error) {
	if !protocol.Valid() {
		return Lock{}, fmt.Errorf("session locks: unknown protocol %q", protocol)
	}
	if len(holder) > maxHolderLen {
		holder = holder[:maxHolderLen]
	}
	d, err := l.Lease(lease)
	if err != nil {
		l.ops.WithLabelValues("acquire", "bad_lease").Inc()
		return Lock{}, err
	}
	mode := protocol.Mode()
	id := "s" + randomHex(12)
	if mode == Exclusive {
		id = "x" + id[1:]
	}
	now := l.now()
	exp := now.Add(d)
	keys := l.keys(account)
	res, err := acquireScript.Run(ctx, l.rdb, keys, now.UnixMilli(), exp.UnixMilli(), id,
		string(protocol)+"|"+holder, l.cfg.MaxHolders).Int()
	if err != nil {
		l.ops.WithLabelValues("acquire", "error").Inc()
		return Lock{}, fmt.Errorf("session locks: acquire %s for %s: %w", account, protocol, err)
	}
	switch res {
	case 0:
		l.ops.WithLabelValues("acquire", "in_use").Inc()
		return Lock{}, ErrInUse
	case -1:
		l.ops.WithLabelValues("acquire", "too_many").Inc()
		return Lock{}, ErrTooManyHolders
	}
	l.ops.WithLabelValues("acquire", "ok").Inc()
	return Lock{ID: id, Account: account, Protocol: protocol, Mode: mode, Holder: holder, ExpiresAt: exp}, nil
}

// Renew extends the lease of a held lock to now+lease. A lock that was
// released or has expired is ErrNotHeld.
func (l *Locks) Renew(ctx context.Context, account, id string, lease time.Duration) (Lock, error) {
	if !validID(id) {
		l.ops.WithLabelValues("renew", "not_held").Inc()
		return Lock{}, ErrNotHeld
	}
	d, err := l.Lease(lease)
	if err != nil {
		l.ops.WithLabelValues("renew", "bad_lease").Inc()
		return Lock{}, err
	}
	now := l.now()
	exp := now.Add(d)
	res, err := renewScript.Run(ctx, l.rdb, l.keys(account), now.UnixMilli(), exp.UnixMilli(), id).Text()
	if errors.Is(err, redis.Nil) {
		l.ops.WithLabelValues("renew", "not_held").Inc()
		return Lock{}, ErrNotHeld
	}
	if err != nil {
		l.ops.WithLabelValues("renew", "error").Inc()
		return Lock{}, fmt.Errorf("session locks: renew %s of %s: %w", id, account, err)
	}
	l.ops.WithLabelValues("renew", "ok").Inc()
	return lockOf(account, id, res, exp), nil
}

// Release gives a lock up. It reports whether the lock was still held;
// releasing a lock that is gone is not an error.
func (l *Locks) Release(ctx context.Context, account, id string) (bool, error) {
	if !validID(id) {
		return false, nil
	}
	n, err := releaseScript.Run(ctx, l.rdb, l.keys(account), id).Int()
	if err != nil {
		l.ops.WithLabelValues("release", "error").Inc()
		return false, fmt.Errorf("session locks: release %s of %s: %w", id, account, err)
	}
	l.ops.WithLabelValues("release", "ok").Inc()
	return n > 0, nil
}

// List returns the locks held on account's mailbox now, soonest expiry
// first.
func (l *Locks) List(ctx context.Context, account string) ([]Lock, error) {
	res, err := listScript.Run(ctx, l.rdb, l.keys(account), l.now().UnixMilli()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("session locks: list %s: %w", account, err)
	}
	locks := make([]Lock, 0, len(res)/3)
	for i := 0; i+2 < len(res); i += 3 {
		ms, err := strconv.ParseInt(res[i+1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("session locks: list %s: bad lease end %q", account, res[i+1])
		}
		locks = append(locks, lockOf(account, res[i], res[i+2], time.UnixMilli(ms)))
	}
	return locks, nil
}

func lockOf(account, id, meta string, exp time.Time) Lock {
	proto, holder, _ := strings.Cut(meta, "|")
	lk := Lock{ID: id, Account: account, Protocol: Protocol(proto), Holder: holder, ExpiresAt: exp, Mode: Shared}
	if strings.HasPrefix(id, "x") {
		lk.Mode = Exclusive
	}
	return lk
}

// validID reports whether id has the form Acquire gives ids.
func validID(id string) bool {
	return len(id) == 25 && (id[0] == 'x' || id[0] == 's') && isHex(id[1:])
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (l *Locks) keys(account string) []string {
	base := l.cfg.KeyPrefix + ":{" + account + "}:"
	return []string{base + "sl", base + "sli"}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// prune (inlined in every script) drops expired leases.
const prune = `
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(expired))
end
`

// extend makes both keys live as long as the longest lease.
const extend = `
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 2 then
  redis.call('PEXPIREAT', KEYS[1], last[2])
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
`

// acquireScript: ARGV now ms, lease end ms, id, meta, max holders.
// Returns 1 acquired, 0 in use, -1 too many holders.
var acquireScript = redis.NewScript(prune + `
local holders = redis.call('ZRANGE', KEYS[1], 0, -1)
if #holders > 0 then
  if string.sub(ARGV[3], 1, 1) == 'x' then return 0 end
  for _, h in ipairs(holders) do
    if string.sub(h, 1, 1) == 'x' then return 0 end
  end
  if #holders >= tonumber(ARGV[5]) then return -1 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
` + extend + `
return 1
`)

// renewScript: ARGV now ms, lease end ms, id. Returns the lock's meta, or
// nil when it is not held.
var renewScript = redis.NewScript(prune + `
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
` + extend + `
return redis.call('HGET', KEYS[2], ARGV[3]) or ''
`)

// releaseScript: ARGV id. Returns the number of locks removed.
var releaseScript = redis.NewScript(`
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
`)

// listScript: ARGV now ms. Returns id, lease end ms, meta for each live
// lock.
var listScript = redis.NewScript(prune + `
local out = {}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  out[#out+1] = all[i]
  out[#out+1] = tostring(math.floor(tonumber(all[i+1])))
  out[#out+1] = redis.call('HGET', KEYS[2], all[i]) or ''
end
return out
`)
