package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/replsync"
	"github.com/aupd/aupd/rules"
)

// TestIngestOnRedisClusterThroughFailover runs batches of many accounts,
// spread over every master of a real Redis Cluster (3 masters, a replica
// each), and fails one master over in the middle (its replica takes over
// with an empty script cache; the old master comes back as a replica).
// Batches that fail are retried as redeliveries would be. At the end every
// account holds exactly its distinct ids and exactly one suspension, on
// the failed-over master's accounts too: with the replication wait,
// nothing acknowledged was lost with the old master.
func TestIngestOnRedisClusterThroughFailover(t *testing.T) {
	ctx, c, rdb := startRedisCluster(t)
	s := New(rdb, "aup", WithBarrier(replsync.New(rdb, "aup", 1, time.Second)))

	const accounts, rounds, perRound, threshold = 200, 6, 2, 8 // 12 ids each: every account crosses once
	name := func(a int) string { return fmt.Sprintf("user%d@example.com", a) }
	victim := cluster.SlotOf(s.key(name(0), sufState))
	failed := make(chan error, 1)
	var fo cluster.Failover
	retries := 0
	for r := range rounds {
		if r == 2 {
			go func() {
				var err error
				fo, err = c.FailoverMaster(ctx, victim, 2*time.Second)
				failed <- err
			}()
		}
		var todo []Batch
		for a := range accounts {
			b := Batch{Account: name(a), Company: "acme", Threshold: threshold, Cap: 100, Action: rules.ActionSuspend}
			for i := range perRound {
				b.Items = append(b.Items, spam(fmt.Sprintf("%s-%d", name(a), r*perRound+i), time.Now()))
			}
			if r > 0 { // and a duplicate of the round before
				b.Items = append(b.Items, spam(fmt.Sprintf("%s-%d", name(a), r*perRound-1), time.Now()))
			}
			todo = append(todo, b)
		}
		deadline := time.Now().Add(90 * time.Second)
		for len(todo) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d accounts still failing", r, len(todo))
			}
			res, err := s.Ingest(ctx, todo, IngestParams{Window: day, Skew: 5 * time.Minute, NewID: func() string { return NewID(time.Now()) }})
			var again []Batch
			for i := range todo {
				if err != nil || res[i].Err != nil {
					if err == nil && IsPermanent(res[i].Err) {
						t.Fatalf("%s: a failover error was taken as permanent: %v", todo[i].Account, res[i].Err)
					}
					again = append(again, todo[i])
				}
			}
			if len(again) > 0 {
				retries++
				time.Sleep(200 * time.Millisecond)
			}
			todo = again
		}
		if r == 2 {
			time.Sleep(500 * time.Millisecond) // let the failover land mid-run
		}
	}
	if err := <-failed; err != nil {
		t.Fatal(err)
	}
	t.Logf("failover of %s: promoted after %s, rejoined after %s; %d retried round trips", fo.Old.Name, fo.Promoted, fo.Rejoined, retries)
	if retries == 0 {
		t.Fatal("no batch failed during the failover: the test did not exercise it")
	}

	onVictim := 0
	for a := range accounts {
		key := s.key(name(a), sufState)
		if cluster.SlotOf(key) == victim {
			onVictim++
		}
		m, err := WindowMembers(ctx, rdb, s.prefix, name(a))
		if err != nil || len(m) != rounds*perRound {
			t.Errorf("%s: window holds %d ids (%v), want %d", name(a), len(m), err, rounds*perRound)
		}
		aup, err := rdb.HGet(ctx, key, "aup").Result()
		if err != nil || aup == "" {
			t.Errorf("%s: not suspended (%v)", name(a), err)
		}
		if n, _ := rdb.LLen(ctx, s.key(name(a), sufOutbox)).Result(); n != 1 {
			t.Errorf("%s: %d account events queued, want exactly 1", name(a), n)
		}
	}
	if onVictim == 0 {
		t.Fatal("no account on the failed-over slot")
	}
	// Every master holds the ingest function (the promoted replica had
	// it from its old master).
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		libs, err := m.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: ingestScript.name}).Result()
		if err == nil && len(libs) != 1 {
			return fmt.Errorf("%s lacks the ingest function", m.Options().Addr)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startRedisCluster brings up a Redis Cluster of 3 masters with a replica
// each (no aupd), or skips the test under -short. It stops at the test's
// end; ctx bounds the test, waiting its turn on the cluster lock included.
func startRedisCluster(t *testing.T) (context.Context, *cluster.Cluster, *redis.ClusterClient) {
	t.Helper()
	if testing.Short() {
		t.Skip("brings up a Redis Cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	c, err := cluster.Start(ctx, cluster.Options{Dir: t.TempDir(), AupdProcesses: 1, NoAupdStart: true, AupdBinary: "/bin/false"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	rdb := c.NewRedisClient()
	t.Cleanup(func() { _ = rdb.Close() })
	return ctx, c, rdb
}
