package store

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// A Redis that lost aupd's functions and scripts (FUNCTION FLUSH and
// SCRIPT FLUSH by an operator; a Cluster node added empty, to which
// resharding moves keys but not functions) is given them again by the
// first call that misses them, and counting goes on exactly: a verdict
// counted before is still a duplicate, the volume record still knows its
// messages, and a throttle still holds. It runs on a Redis of its own:
// flushing the shared one would pull the functions from under other
// packages' tests.
func TestScriptsLostByRedisAreLoadedAgain(t *testing.T) {
	ctx := context.Background()
	rdb := testutil.PrivateRedis(t)
	clk := testutil.NewClock(t0)
	s := New(rdb, "aupt"+testutil.RandomHex(4), WithClock(clk.Now))
	lim := enforced(burst)
	flush := func() {
		t.Helper()
		if err := rdb.FunctionFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if libs, err := rdb.FunctionList(ctx, redis.FunctionListQuery{}).Result(); err != nil || len(libs) != 0 {
			t.Fatalf("after the flush: %d libraries, %v", len(libs), err)
		}
	}

	if r := ingest(t, s, t0, 10, spam("a", t0), spam("b", t0)); outcomes(r) != "cc" {
		t.Fatalf("before: outcomes %q", outcomes(r))
	}
	for id := uint32(1); id <= 3; id++ {
		if r := send(t, s, lim, id, 1, "192.0.2.1"); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("message %d before: %+v", id, r)
		}
	}

	flush()
	if r := ingest(t, s, t0.Add(time.Minute), 10, spam("a", t0), spam("c", t0)); outcomes(r) != "dc" || r.Count != 3 {
		t.Fatalf("after the flush: outcomes %q count %d; want dc and 3", outcomes(r), r.Count)
	}
	if r := send(t, s, lim, 3, 1, "192.0.2.1"); r.Outcome != VolumeDuplicate {
		t.Fatalf("message 3 asked again after the flush: %+v", r)
	}
	// The fourth message crosses 3 in 10 minutes and starts a throttle.
	if r := send(t, s, lim, 4, 1, "192.0.2.1"); r.Outcome != VolumeCounted || len(r.Crossings) != 1 || r.Crossings[0].Action != string(rules.VolumeThrottle) {
		t.Fatalf("message 4: %+v; want a throttle's crossing", r)
	}

	flush()
	th, err := s.Throttle(ctx, sender)
	if err != nil || th == nil || th.Limit != "burst" {
		t.Fatalf("the throttle after the flush: %+v, %v", th, err)
	}
	if r := send(t, s, lim, 5, 1, "192.0.2.1"); r.Outcome != VolumeThrottled {
		t.Fatalf("message 5: %+v; want throttled", r)
	}
	// Each library comes back with its first call: volume's now, ingest's
	// with the next batch.
	libraries := func(want int) {
		t.Helper()
		if libs, err := rdb.FunctionList(ctx, redis.FunctionListQuery{}).Result(); err != nil || len(libs) != want {
			t.Fatalf("%d libraries, %v; want %d", len(libs), err, want)
		}
	}
	libraries(1)
	if r := ingest(t, s, t0.Add(2*time.Minute), 10, spam("b", t0), spam("d", t0)); outcomes(r) != "dc" || r.Count != 4 {
		t.Fatalf("after the second flush: outcomes %q count %d; want dc and 4", outcomes(r), r.Count)
	}
	libraries(2)
}

// An upgrade leaves the old version's libraries (each is named after its
// code's hash): PruneLibraries deletes them, on a standalone Redis and on
// every master of a Cluster, keeps the current ones and anything not
// aupd's, and a process still running the old version gets its library
// back by its next call.
func TestPruneLibrariesOfOtherVersions(t *testing.T) {
	old := library{name: "aupd_volume_0000000000000000",
		code: "#!lua name=aupd_volume_0000000000000000\nredis.register_function('aupd_volume_0000000000000000', function() return 1 end)"}
	other := "#!lua name=aupd_volume\nredis.register_function('not_aupds', function() return 1 end)" // a kind's name, no hash
	check := func(t *testing.T, s *Store, masters func(func(redis.Cmdable))) {
		t.Helper()
		ctx := context.Background()
		masters(func(c redis.Cmdable) {
			for _, code := range []string{old.code, other, volumeScript.code} {
				if err := c.FunctionLoad(ctx, code).Err(); err != nil {
					t.Fatal(err)
				}
			}
		})
		n, err := s.PruneLibraries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		masters(func(c redis.Cmdable) {
			total++
			libs, err := c.FunctionList(ctx, redis.FunctionListQuery{}).Result()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, l := range libs {
				names = append(names, l.Name)
			}
			slices.Sort(names)
			if want := []string{"aupd_volume", volumeScript.name}; !slices.Equal(names, want) {
				t.Errorf("libraries after pruning: %v, want %v", names, want)
			}
		})
		if n != total {
			t.Errorf("pruned %d, want one on each of %d masters", n, total)
		}
		// The old version calls its function again: loaded where it is
		// missing.
		if v, err := s.call(ctx, old, []string{s.key(sender, sufState)}).Int(); err != nil || v != 1 {
			t.Errorf("the old version's call after pruning: %d, %v", v, err)
		}
	}
	t.Run("standalone", func(t *testing.T) {
		rdb := testutil.PrivateRedis(t)
		check(t, New(rdb, "aup"), func(f func(redis.Cmdable)) { f(rdb) })
	})
	t.Run("cluster", func(t *testing.T) {
		ctx, _, rdb := startRedisCluster(t)
		var mu sync.Mutex
		var masters []*redis.Client
		if err := rdb.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			masters = append(masters, m)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		check(t, New(rdb, "aup"), func(f func(redis.Cmdable)) {
			for _, m := range masters { // one at a time: f is not safe for concurrent use
				f(m)
			}
		})
	})
}
