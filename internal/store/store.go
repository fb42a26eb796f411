// Package store keeps aupd's state in Redis: per-account rolling windows,
// account state (status, suspensions, history) and the outbox of account
// events not yet published.
//
// Every key of one account carries the account as a hash tag,
// <prefix>:{<account>}:<suffix>, so all of an account's keys live on one
// Redis Cluster slot and every change to an account is one atomic script.
// See docs/redis.md for the layout.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/replsync"
)

// Redis is what the store needs from a client: redis.Client, the failover
// (Sentinel) client and redis.ClusterClient all satisfy it.
type Redis interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	LRange(ctx context.Context, key string, start, stop int64) *redis.StringSliceCmd
	LRem(ctx context.Context, key string, count int64, value any) *redis.IntCmd
	ZRangeWithScores(ctx context.Context, key string, start, stop int64) *redis.ZSliceCmd
	SAdd(ctx context.Context, key string, members ...any) *redis.IntCmd
	SRem(ctx context.Context, key string, members ...any) *redis.IntCmd
	SScan(ctx context.Context, key string, cursor uint64, match string, count int64) *redis.ScanCmd
	Get(ctx context.Context, key string) *redis.StringCmd
	HMGet(ctx context.Context, key string, fields ...string) *redis.SliceCmd
	ZRevRangeByScore(ctx context.Context, key string, opt *redis.ZRangeBy) *redis.StringSliceCmd
	SCard(ctx context.Context, key string) *redis.IntCmd
	Ping(ctx context.Context) *redis.StatusCmd
}

// Store is the Redis state of aupd. It is safe for concurrent use.
type Store struct {
	rdb    Redis
	prefix string
	now    func() time.Time
	pinned bool // now also decides inside the scripts (tests); else Redis's TIME does
	// barrier, when set, waits for replicas before anything a write
	// decided is acknowledged or published.
	barrier *replsync.Barrier
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock used for history and event times, and pins the
// scripts' clock to it (tests). Without it the scripts read Redis's clock
// (TIME), so that every process decides windows and reinstatement floors
// by one clock.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now, s.pinned = now, true }
}

// WithBarrier makes the store wait, with b, until replicas hold its
// writes: Ingest before it returns a result, FlushOutbox before it
// publishes (redis.wait_replicas).
func WithBarrier(b *replsync.Barrier) Option {
	return func(s *Store) { s.barrier = b }
}

// New returns a store whose keys all start with prefix (for example "aup").
func New(rdb Redis, prefix string, opts ...Option) *Store {
	s := &Store{rdb: rdb, prefix: prefix, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.prefix }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Key suffixes of an account's keys.
const (
	sufState   = "s"  // HASH: status, type, company, suspensions, AUP state
	sufWindow  = "w"  // ZSET: counting events of the rolling window
	sufStats   = "t"  // HASH: statistics-only events, hourly buckets (approximate)
	sufHistory = "h"  // LIST: history entries, newest first
	sufOutbox  = "o"  // LIST: account events not yet published
	sufLegacy  = "x"  // ZSET of aupd v1 (statistics per event): removed on migration
	sufSenders = "f"  // HASH: senders of counted messages, "<ip>\t<login>" = "<count>:<first>:<last>" (senders.go)
	sufLogins  = "li" // LIST: recent logins from Dovecot's reports (logins.go)
	sufHam     = "r"  // ZSET: outbound ham of the spam-rate rule (ingest.lua)
)

// scriptNow is the clock argument of a script: the pinned clock, or 0 for
// Redis's TIME.
func (s *Store) scriptNow() int64 {
	if s.pinned {
		return ms(s.now())
	}
	return 0
}

// AccountKey returns the key of one of an account's structures; other
// packages use it for their own per-account keys (notices, lockout
// counters, session locks) so that they share the account's slot.
func AccountKey(prefix, account, suffix string) string {
	return prefix + ":{" + account + "}:" + suffix
}

func (s *Store) key(account, suffix string) string { return AccountKey(s.prefix, account, suffix) }

// ErrConflict is returned when an account changed under an update more
// times than the update retries.
var ErrConflict = errors.New("account changed concurrently; try again")

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}
