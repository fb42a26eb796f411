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
package replsync

import (
	"cmp"
	"context"
	"fmt"
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
}

// New returns a Barrier over rdb (a *redis.Client, including a Sentinel
// failover client, or a *redis.ClusterClient) that waits for replicas
// replicas, at most timeout per wait. It returns nil when replicas is 0.
func New(rdb redis.UniversalClient, prefix string, replicas int, timeout time.Duration) *Barrier {
	if replicas <= 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	return &Barrier{rdb: rdb, prefix: prefix, replicas: replicas, timeout: timeout}
}

// Replicas is how many replicas the barrier waits for.
func (b *Barrier) Replicas() int {
	if b == nil {
		return 0
	}
	return b.replicas
}

// ShortError reports a WAIT that returned with fewer replicas than asked
// for: the writes may not survive a failover yet, and whatever they decided
// must not be acknowledged. A retry (a redelivery) waits again.
type ShortError struct {
	Addr     string
	Got      int64
	Replicas int
}

func (e *ShortError) Error() string {
	return fmt.Sprintf("redis %s: %d of %d replicas acknowledged the writes in time (WAIT)", e.Addr, e.Got, e.Replicas)
}

// Wait returns once every master that owns one of tags (hash tags: aupd
// keys are <prefix>:{<account>}:...) has had each write it made so far
// acknowledged by the configured number of replicas. On a standalone
// server or under Sentinel there is one master, and tags only need to be
// non-empty.
func (b *Barrier) Wait(ctx context.Context, tags ...string) error {
	if b == nil || len(tags) == 0 {
		return nil
	}
	cc, ok := b.rdb.(*redis.ClusterClient)
	if !ok {
		c, ok := b.rdb.(*redis.Client)
		if !ok {
			return fmt.Errorf("replsync: unsupported Redis client %T", b.rdb)
		}
		return b.waitOn(ctx, c, b.prefix+":sync")
	}
	// One marker per master: the first tag each master owns.
	masters := map[string]*redis.Client{}
	markers := map[string]string{}
	for _, tag := range tags {
		key := b.prefix + ":{" + tag + "}:sync"
		c, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return fmt.Errorf("replsync: master of %q: %w", tag, err)
		}
		addr := c.Options().Addr
		if _, seen := masters[addr]; !seen {
			masters[addr], markers[addr] = c, key
		}
	}
	if len(masters) == 1 {
		for addr, c := range masters {
			err := b.waitOn(ctx, c, markers[addr])
			if err != nil {
				cc.ReloadState(ctx)
			}
			return err
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for addr, c := range masters {
		wg.Go(func() {
			if err := b.waitOn(ctx, c, markers[addr]); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		// A failover may have moved a slot: the next wait asks anew.
		cc.ReloadState(ctx)
	}
	return first
}

// waitOn writes the marker and sends WAIT on one connection to c.
func (b *Barrier) waitOn(ctx context.Context, c *redis.Client, marker string) error {
	conn := c.Conn()
	defer conn.Close()
	if err := conn.Set(ctx, marker, "1", markerTTL).Err(); err != nil {
		return fmt.Errorf("replsync: redis %s: %w", c.Options().Addr, err)
	}
	wait := conn.Wait(ctx, b.replicas, b.timeout)
	if err := wait.Err(); err != nil {
		return fmt.Errorf("replsync: redis %s: %w", c.Options().Addr, err)
	}
	if got := wait.Val(); got < int64(b.replicas) {
		return &ShortError{Addr: c.Options().Addr, Got: got, Replicas: b.replicas}
	}
	return nil
}
