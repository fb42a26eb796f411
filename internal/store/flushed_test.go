package store

import (
	"context"
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
