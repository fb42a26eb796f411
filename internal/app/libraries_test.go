package app

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// TestStartDeletesOtherVersionsLibraries: a Redis that an earlier aupd
// version gave its function libraries (named after their code's hash)
// holds none of them once aupd has started, and aupd counts as usual. A
// Redis of its own: other packages' processes prune the shared one too.
func TestStartDeletesOtherVersionsLibraries(t *testing.T) {
	ctx := context.Background()
	rdb := testutil.PrivateRedis(t)
	const old = "aupd_ingest_0123456789abcdef"
	if err := rdb.FunctionLoad(ctx, "#!lua name="+old+"\nredis.register_function('"+old+"', function() return 1 end)").Err(); err != nil {
		t.Fatal(err)
	}
	ns := testutil.NATSServer(t, "")
	cfg := testConfig(t, ns.ClientURL(), "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = []string{rdb.Options().Addr}
	h := start(t, cfg)
	libs, err := rdb.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: old}).Result()
	if err != nil || len(libs) != 0 {
		t.Fatalf("after the start: %d libraries named %s (%v), want none", len(libs), old, err)
	}
	h.publish("aup.verdict.outbound", verdict("after-prune", "outbound", "erin@example.com", "spam", time.Now()), "")
	h.drained()
	if n, _ := store.WindowLen(ctx, rdb, cfg.Redis.Prefix, "erin@example.com"); n != 1 {
		t.Fatalf("count %d after the start, want 1", n)
	}
}
