// Package replsync waits until Redis replicas hold aupd's writes, so that
// a failover cannot take back what aupd has already acknowledged.
//
// Redis replicates asynchronously: a master that fails before its replica
// received the last writes loses them, and the promoted replica carries on
// without them. aupd acks a verdict once its count is written, so a lost
// write would be a lost event (and a suspension decided again, with a
// second account event and notice). With a Barrier, aupd acks only after
// WAIT reports the configured number of replicas.
//
// WAIT covers the writes made on the connection that sends it, up to its
// last write. A Barrier therefore writes a short-lived marker key and sends
// WAIT on one dedicated connection: the marker is the newest write of the
// master's replication stream, so its acknowledgement covers every write
// the master made before it, whichever connection or process made it. That
// covers a redelivered event too, whose first run wrote its count on
// another connection (or in a process that died) and whose second run
// writes nothing.
//
// A wait fails per master: on a Redis Cluster the tags of the masters that
// confirmed are covered even when another master's wait fails (WaitError).
// A master whose waits come back short (a promoted replica with no replica
// of its own yet) is held (Hold) or, after a bound, acknowledged without
// its replicas (Accept); see Loss.
package replsync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// markerTTL bounds the life of a marker key.
const markerTTL = 10 * time.Second

// Barrier waits for replicas. The nil Barrier, and one with Replicas 0,
// waits for nothing.
type Barrier struct {
	rdb      redis.UniversalClient
	prefix   string
	replicas int
	timeout  time.Duration
	master   string // the name of a standalone or Sentinel master; "": its address
	losses   *losses
}

// Option configures a Barrier.
type Option func(*Barrier)

// WithLoss sets what a master's short waits lead to (default Hold).
func WithLoss(loss Loss, after time.Duration) Option {
	return func(b *Barrier) { b.losses.loss, b.losses.after = loss, after }
}

// WithLogger sets where the start and the end of a master's short waits
// are logged (default: nowhere).
func WithLogger(log *slog.Logger) Option {
	return func(b *Barrier) { b.losses.log = log }
}

// WithMetrics sets the metrics the barrier updates (default: none).
func WithMetrics(m *Metrics) Option {
	return func(b *Barrier) { b.losses.m = m }
}

// WithMasterName names the master of a standalone or Sentinel client in
// logs and metrics (Sentinel: its master_name); default its address.
func WithMasterName(name string) Option {
	return func(b *Barrier) { b.master = name }
}

// WithClock sets the clock that times a master's short waits (tests).
func WithClock(now func() time.Time) Option {
	return func(b *Barrier) { b.losses.now = now }
}

// New returns a Barrier over rdb (a *redis.Client, including a Sentinel
// failover client, or a *redis.ClusterClient) that waits for replicas
// replicas, at most timeout per wait. It returns nil when replicas is 0.
func New(rdb redis.UniversalClient, prefix string, replicas int, timeout time.Duration, opts ...Option) *Barrier {
	if replicas <= 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	b := &Barrier{rdb: rdb, prefix: prefix, replicas: replicas, timeout: timeout,
		losses: newLosses(replicas)}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Replicas is how many replicas the barrier waits for.
func (b *Barrier) Replicas() int {
	if b == nil {
		return 0
	}
	return b.replicas
}

// ShortError reports a wait that ended with fewer replicas than asked
// for: the writes may not survive a failover yet, and whatever they decided
// must not be acknowledged. A retry (a redelivery) waits again.
type ShortError struct {
	Addr     string
	Got      int64
	Replicas int
	// Connected: the master had fewer replicas connected than asked for,
	// so it was not asked to WAIT (a master whose waits already fail).
	Connected bool
}

func (e *ShortError) Error() string {
	if e.Connected {
		return fmt.Sprintf("redis %s: %d of %d replicas connected", e.Addr, e.Got, e.Replicas)
	}
	return fmt.Sprintf("redis %s: %d of %d replicas acknowledged the writes in time (WAIT)", e.Addr, e.Got, e.Replicas)
}

// WaitError is a wait that failed on some masters. The tags of the other
// masters are covered: For tells them apart.
type WaitError struct {
	at   []int   // the target of each tag; nil: every tag is on target 0
	errs []error // by target; nil: confirmed
}

// For is the error of the i-th tag of the Wait call: nil when its master
// confirmed.
func (e *WaitError) For(i int) error {
	if e.at == nil {
		return e.errs[0]
	}
	return e.errs[e.at[i]]
}

func (e *WaitError) Error() string {
	failed, first := 0, error(nil)
	for _, err := range e.errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if len(e.errs) == 1 {
		return first.Error()
	}
	return fmt.Sprintf("%v (%d of %d masters failed their wait)", first, failed, len(e.errs))
}

// Unwrap is the error of each master that failed.
func (e *WaitError) Unwrap() []error {
	var out []error
	for _, err := range e.errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// target is one master of a wait: where to write the marker and wait.
type target struct {
	c      *redis.Client // nil: the tag's master is unknown, err says why
	name   string
	marker string
	err    error
}

// Wait returns once every master that owns one of tags (hash tags: aupd
// keys are <prefix>:{<account>}:...) has had each write it made so far
// acknowledged by the configured number of replicas. On a standalone
// server or under Sentinel there is one master, and tags only need to be
// non-empty. When a master fails, the error is a *WaitError whose For
// names the tags it failed; the tags of the other masters are covered.
func (b *Barrier) Wait(ctx context.Context, tags ...string) error {
	if b == nil || len(tags) == 0 {
		return nil
	}
	defer b.losses.forgetStale()
	cc, ok := b.rdb.(*redis.ClusterClient)
	if !ok {
		c, ok := b.rdb.(*redis.Client)
		if !ok {
			return &WaitError{errs: []error{fmt.Errorf("replsync: unsupported Redis client %T", b.rdb)}}
		}
		name := b.master
		if name == "" {
			name = c.Options().Addr
		}
		if err := b.waitOn(ctx, &target{c: c, name: name, marker: b.prefix + ":sync"}); err != nil {
			return &WaitError{errs: []error{err}}
		}
		return nil
	}
	targets, at := b.route(ctx, cc, tags)
	if len(targets) == 1 && targets[0].c != nil {
		targets[0].err = b.waitOn(ctx, &targets[0])
	} else {
		var wg sync.WaitGroup
		for i := range targets {
			if targets[i].c != nil {
				wg.Go(func() { targets[i].err = b.waitOn(ctx, &targets[i]) })
			}
		}
		wg.Wait()
	}
	for _, t := range targets {
		if t.err != nil {
			// A failover may have moved a slot: the next wait asks anew.
			cc.ReloadState(ctx)
			we := &WaitError{at: at, errs: make([]error, len(targets))}
			for i, t := range targets {
				we.errs[i] = t.err
			}
			return we
		}
	}
	return nil
}

// route finds the master of each tag: one target per master, marked with
// the first tag it owns, and one for the tags whose master is unknown.
func (b *Barrier) route(ctx context.Context, cc *redis.ClusterClient, tags []string) ([]target, []int) {
	var targets []target
	byAddr := map[string]int{}
	at := make([]int, len(tags))
	unknown := -1
	for i, tag := range tags {
		key := b.prefix + ":{" + tag + "}:sync"
		c, err := cc.MasterForKey(ctx, key)
		if err != nil {
			if unknown < 0 {
				unknown = len(targets)
				targets = append(targets, target{err: fmt.Errorf("replsync: master of %q: %w", tag, err)})
			}
			at[i] = unknown
			continue
		}
		addr := c.Options().Addr
		t, seen := byAddr[addr]
		if !seen {
			t = len(targets)
			byAddr[addr] = t
			targets = append(targets, target{c: c, name: addr, marker: key})
		}
		at[i] = t
	}
	return targets, at
}

// waitOn writes the marker and sends WAIT on one connection to t's
// master. A master whose waits already come back short is asked first how
// many replicas it has online (ROLE), so that a master with none fails at
// once instead of after the full timeout on every batch. What a short
// wait returns is then the Loss's to decide.
func (b *Barrier) waitOn(ctx context.Context, t *target) error {
	err := b.wait(ctx, t)
	return b.losses.record(t.name, err)
}

func (b *Barrier) wait(ctx context.Context, t *target) error {
	conn := t.c.Conn()
	defer conn.Close()
	if err := conn.Set(ctx, t.marker, "1", markerTTL).Err(); err != nil {
		return fmt.Errorf("replsync: redis %s: %w", t.name, err)
	}
	if b.losses.short(t.name) {
		online, err := onlineReplicas(ctx, conn)
		if err != nil {
			return fmt.Errorf("replsync: redis %s: %w", t.name, err)
		}
		if online < b.replicas {
			return &ShortError{Addr: t.name, Got: int64(online), Replicas: b.replicas, Connected: true}
		}
	}
	wait := conn.Wait(ctx, b.replicas, b.timeout)
	if err := wait.Err(); err != nil {
		return fmt.Errorf("replsync: redis %s: %w", t.name, err)
	}
	if got := wait.Val(); got < int64(b.replicas) {
		return &ShortError{Addr: t.name, Got: got, Replicas: b.replicas}
	}
	return nil
}

// onlineReplicas is how many replicas a master lists as online (ROLE
// lists no replica still syncing).
func onlineReplicas(ctx context.Context, conn *redis.Conn) (int, error) {
	v, err := conn.Do(ctx, "ROLE").Slice()
	if err != nil {
		return 0, fmt.Errorf("role: %w", err)
	}
	if len(v) < 3 || v[0] != "master" {
		return 0, errors.New("role: not a master")
	}
	replicas, _ := v[2].([]any)
	return len(replicas), nil
}
