// Package lockout counts failed logins per account in Redis and sets the
// lockout status when an account has too many within a window
// (domain.md, "Account status": lockout). Repeats of the same wrong
// password count once, so that a phone retrying an old password does not
// lock its owner out; a successful login resets the count. The lockout
// itself is an account status, set through Locker, with an end time, so it
// ends by itself (rules.AccountView.EffectiveStatus).
//
// Keys, all hash-tagged by account so that they share a Redis Cluster slot:
//
//	<prefix>:{<account>}:lf  sorted set of failures: member = password hash
//	                         (or a unique token when there is none), score =
//	                         time of its latest failure in ms; expires after
//	                         the window
//	<prefix>:{<account>}:lt  marker while a lockout is being set, so that
//	                         concurrent failures set it once
package lockout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Config is the provider's lockout policy: the default of every company.
type Config struct {
	// Threshold is the number of failed logins (distinct passwords) within
	// Window that locks an account out. Default 5.
	Threshold int `yaml:"threshold"`
	// Window is the time within which Threshold failures lock out.
	// Default 15m.
	Window time.Duration `yaml:"window"`
	// Duration is how long a lockout lasts before it ends by itself.
	// Default 30m.
	Duration time.Duration `yaml:"duration"`
	// KeyPrefix starts every Redis key. Default "aup".
	KeyPrefix string `yaml:"-"` // set from redis.prefix
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{Threshold: 5, Window: 15 * time.Minute, Duration: 30 * time.Minute, KeyPrefix: "aup"}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Threshold == 0 {
		c.Threshold = d.Threshold
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = d.KeyPrefix
	}
	return c
}

// Validate reports the first invalid setting, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	return Policy{Threshold: c.Threshold, Window: c.Window, Duration: c.Duration}.validate()
}

// Policy is the lockout policy that applies to one account. Zero fields
// take the provider's value from Config.
type Policy struct {
	Threshold int
	Window    time.Duration
	Duration  time.Duration
}

func (p Policy) validate() error {
	switch {
	case p.Threshold < 1 || p.Threshold > 1000:
		return fmt.Errorf("lockout: threshold must be 1 to 1000, got %d", p.Threshold)
	case p.Window < time.Second:
		return fmt.Errorf("lockout: window must be at least 1s, got %s", p.Window)
	case p.Duration < time.Second:
		return fmt.Errorf("lockout: duration must be at least 1s, got %s", p.Duration)
	}
	return nil
}

// Policies returns the lockout policy of an account's company: the
// per-company overrides of the provider's defaults. Zero fields mean "the
// provider's default". It is implemented by the account store.
type Policies interface {
	LockoutPolicy(ctx context.Context, account string) (Policy, error)
}

// PoliciesFunc adapts a function to Policies.
type PoliciesFunc func(ctx context.Context, account string) (Policy, error)

// LockoutPolicy calls f.
func (f PoliciesFunc) LockoutPolicy(ctx context.Context, account string) (Policy, error) {
	return f(ctx, account)
}

// Locker sets an account's status to lockout until the given time. note
// says why, for the account's history. It is implemented by the account
// store, which records the reason rules.ReasonLockout and publishes the
// change.
type Locker interface {
	Lockout(ctx context.Context, account string, until time.Time, note string) error
}

// Redis is what the counter needs from a client; redis.Client,
// redis.ClusterClient, redis.Ring and redis.UniversalClient all fit.
type Redis interface {
	redis.Scripter
	Del(ctx context.Context, keys ...string) *redis.IntCmd
}

// Options are a Counter's optional collaborators.
type Options struct {
	Policies   Policies              // nil: the provider's defaults for everyone
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
}

// Counter counts failed logins and locks accounts out. It is safe for
// concurrent use.
type Counter struct {
	rdb      Redis
	cfg      Config
	locker   Locker
	policies Policies
	log      *slog.Logger
	now      func() time.Time
	lockouts prometheus.Counter
	failures prometheus.Counter
}

// New returns a Counter. cfg is completed with Defaults and validated.
func New(rdb Redis, cfg Config, locker Locker, opts Options) (*Counter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rdb == nil || locker == nil {
		return nil, errors.New("lockout: nil Redis or Locker")
	}
	c := &Counter{
		rdb:      rdb,
		cfg:      cfg,
		locker:   locker,
		policies: opts.Policies,
		log:      opts.Logger,
		now:      opts.Now,
		lockouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_lockouts_total",
			Help: "Accounts locked out after too many failed logins.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_login_failures_total",
			Help: "Failed logins counted toward a lockout.",
		}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "lockout")
	if c.now == nil {
		c.now = time.Now
	}
	if reg := opts.Registerer; reg != nil {
		if err := reg.Register(c.lockouts); err != nil {
			return nil, fmt.Errorf("lockout: register metrics: %w", err)
		}
		if err := reg.Register(c.failures); err != nil {
			return nil, fmt.Errorf("lockout: register metrics: %w", err)
		}
	}
	return c, nil
}

// Outcome is what one failed login led to.
type Outcome struct {
	// Count is the number of distinct failures within the window,
	// including this one.
	Count int
	// Threshold is the number that locks out, for this account.
	Threshold int
	// LockedOut is set when this failure locked the account out, until
	// Until.
	LockedOut bool
	Until     time.Time
}

// maxHashLen bounds the password hash kept as a set member.
const maxHashLen = 128

// tripTTL bounds how long the "being locked out" marker outlives a crash
// between counting and setting the status.
const tripTTL = time.Minute

// Failure records a failed login of account (normalized). pwhash
// identifies the password tried (Dovecot's truncated, salted hash; never
// the password): failures with the same hash within the window count once.
// An empty pwhash counts every time. detail is added to the lockout note,
// for example "imap from 192.0.2.1".
func (c *Counter) Failure(ctx context.Context, account, pwhash, detail string) (Outcome, error) {
	pol, err := c.policy(ctx, account)
	if err != nil {
		return Outcome{}, err
	}
	member := "h:" + pwhash
	if pwhash == "" {
		member = "u:" + randomHex(8)
	} else if len(member) > maxHashLen {
		member = member[:maxHashLen]
	}
	now := c.now()
	res, err := failureScript.Run(ctx, c.rdb, []string{c.key(account, "lf"), c.key(account, "lt")},
		now.UnixMilli(), pol.Window.Milliseconds(), pol.Threshold, member, tripTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return Outcome{}, fmt.Errorf("lockout: count failure of %s: %w", account, err)
	}
	if len(res) != 2 {
		return Outcome{}, fmt.Errorf("lockout: count failure of %s: script returned %d values", account, len(res))
	}
	c.failures.Inc()
	out := Outcome{Count: int(res[0]), Threshold: pol.Threshold}
	if res[1] != 1 {
		return out, nil
	}
	until := now.Add(pol.Duration)
	note := fmt.Sprintf("%d failed logins within %s", out.Count, pol.Window)
	if detail != "" {
		note += " (last: " + detail + ")"
	}
	// Setting the status must not be abandoned halfway because the client
	// that reported the failure went away.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.locker.Lockout(lctx, account, until, note); err != nil {
		// Let the next failure try again.
		if derr := c.rdb.Del(lctx, c.key(account, "lt")).Err(); derr != nil {
			c.log.Error("clear lockout marker", "account", account, "err", derr)
		}
		return out, fmt.Errorf("lockout: set lockout of %s: %w", account, err)
	}
	c.lockouts.Inc()
	c.log.Info("account locked out", "account", account, "until", until, "failures", out.Count)
	// The count starts afresh when the lockout ends.
	if err := c.rdb.Del(lctx, c.key(account, "lf"), c.key(account, "lt")).Err(); err != nil {
		return out, fmt.Errorf("lockout: reset count of %s: %w", account, err)
	}
	out.LockedOut, out.Until = true, until
	return out, nil
}

// Success records a successful login: the count starts afresh.
func (c *Counter) Success(ctx context.Context, account string) error {
	if err := c.rdb.Del(ctx, c.key(account, "lf")).Err(); err != nil {
		return fmt.Errorf("lockout: reset count of %s: %w", account, err)
	}
	return nil
}

// Count returns the number of distinct failures of account within its
// window, for the admin API and tests.
func (c *Counter) Count(ctx context.Context, account string) (int, error) {
	pol, err := c.policy(ctx, account)
	if err != nil {
		return 0, err
	}
	n, err := countScript.Run(ctx, c.rdb, []string{c.key(account, "lf")},
		c.now().UnixMilli(), pol.Window.Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("lockout: count of %s: %w", account, err)
	}
	return n, nil
}

// policy returns the account's policy: its company's overrides over the
// provider's defaults. An invalid override is ignored (and logged), so that
// one company's bad setting does not stop counting.
func (c *Counter) policy(ctx context.Context, account string) (Policy, error) {
	def := Policy{Threshold: c.cfg.Threshold, Window: c.cfg.Window, Duration: c.cfg.Duration}
	if c.policies == nil {
		return def, nil
	}
	p, err := c.policies.LockoutPolicy(ctx, account)
	if err != nil {
		return Policy{}, fmt.Errorf("lockout: policy of %s: %w", account, err)
	}
	if p.Threshold == 0 {
		p.Threshold = def.Threshold
	}
	if p.Window == 0 {
		p.Window = def.Window
	}
	if p.Duration == 0 {
		p.Duration = def.Duration
	}
	if err := p.validate(); err != nil {
		c.log.Warn("invalid lockout policy; using the provider's", "account", account, "err", err)
		return def, nil
	}
	return p, nil
}

func (c *Counter) key(account, suffix string) string {
	return c.cfg.KeyPrefix + ":{" + account + "}:" + suffix
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// failureScript records one failure and reports whether it reached the
// threshold first.
//
//	KEYS[1] failures (zset)  KEYS[2] lockout marker
//	ARGV: now ms, window ms, threshold, member, marker ttl ms
//	returns {count, tripped}
var failureScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
local count = redis.call('ZCARD', KEYS[1])
local tripped = 0
if count >= tonumber(ARGV[3]) then
  if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[5]) then
    tripped = 1
  end
end
return {count, tripped}
`)

// countScript counts the failures within the window.
//
//	KEYS[1] failures (zset); ARGV: now ms, window ms
var countScript = redis.NewScript(`
return redis.call('ZCOUNT', KEYS[1], '(' .. (tonumber(ARGV[1]) - tonumber(ARGV[2])), '+inf')
`)
