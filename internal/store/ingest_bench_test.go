package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// benchBatch shapes one worker batch: n events of a skewed mix over m
// accounts (a tenth of the events on 0.5% of the accounts), grouped by
// account, with the default policy (threshold 50, cap 500). Ids are
// unique per (tag, i).
func benchBatch(r *rand.Rand, tag string, n, m int, now time.Time) []Batch {
	heavy := max(1, m/200)
	idx := map[string]int{}
	var bs []Batch
	for i := range n {
		a := heavy + r.IntN(m-heavy)
		if r.IntN(10) == 0 {
			a = r.IntN(heavy)
		}
		acct := fmt.Sprintf("user%06d@example.com", a)
		j, ok := idx[acct]
		if !ok {
			j = len(bs)
			idx[acct] = j
			bs = append(bs, Batch{Account: acct, Company: "acme", Threshold: 50, Cap: 500, Action: rules.ActionSuspend})
		}
		dir := []rules.Direction{rules.Outbound, rules.Outbound, rules.Outbound, rules.Inbound, rules.Complaint}[r.IntN(5)]
		v := rules.Spam
		if r.IntN(3) == 0 {
			v = rules.Ham
		}
		it := Item{ID: fmt.Sprintf("%s-%d", tag, i), Time: now.Add(-time.Duration(r.Int64N(int64(2 * time.Hour)))), Kind: rules.KindOf(dir, v), Counting: v != rules.Ham}
		if it.Counting {
			it.Seq, it.Fingerprint = uint64(i+1), uint32(r.IntN(4))+1
		}
		bs[j].Items = append(bs[j].Items, it)
	}
	return bs
}

// BenchmarkIngest applies batches of 500 events over 10,000 accounts the
// way the worker does: one pipelined round trip per batch, one script call
// per account. "callers" is the number of batches in flight at once
// (nats.consumer.workers).
func BenchmarkIngest(b *testing.B) {
	for _, callers := range []int{1, 4} {
		b.Run(fmt.Sprintf("batch=500/callers=%d", callers), func(b *testing.B) {
			rdb, prefix := testutil.Redis(b)
			s := New(rdb, prefix)
			const batch, accounts = 500, 10000
			var seq atomic.Int64
			now := time.Now()
			next := func(r *rand.Rand) []Batch {
				return benchBatch(r, fmt.Sprint("b", seq.Add(1)), batch, accounts, now)
			}
			var calls atomic.Int64
			ingest := func(bs []Batch) {
				res, err := s.Ingest(context.Background(), bs, IngestParams{Window: day, Skew: 5 * time.Minute, Now: now, NewID: func() string { return NewID(now) }})
				if err != nil {
					b.Error(err)
					return
				}
				for _, x := range res {
					if x.Err != nil {
						b.Error(x.Err)
						return
					}
				}
				calls.Add(int64(len(bs)))
			}
			start := time.Now()
			if callers == 1 {
				r := rand.New(rand.NewPCG(1, 2))
				for b.Loop() {
					b.StopTimer()
					bs := next(r)
					b.StartTimer()
					ingest(bs)
				}
			} else {
				b.SetParallelism((callers + 1) / 2)
				b.RunParallel(func(pb *testing.PB) {
					r := rand.New(rand.NewPCG(uint64(seq.Add(1)), 2))
					for pb.Next() {
						ingest(next(r)) // batch shaping is counted too; it is small
					}
				})
			}
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N*batch)/el, "events/s")
			b.ReportMetric(float64(calls.Load())/float64(b.N), "scripts/batch")
		})
	}
}

// accountMemory sums MEMORY USAGE (SAMPLES 0: every element) over the
// keys of each account.
func accountMemory(ctx context.Context, rdb *redis.Client, prefix string, accounts []string) (int64, error) {
	pipe := rdb.Pipeline()
	var cmds []*redis.IntCmd
	for _, a := range accounts {
		for _, suf := range []string{sufState, sufWindow, sufStats, sufOutbox, sufHistory} {
			cmds = append(cmds, pipe.MemoryUsage(ctx, AccountKey(prefix, a, suf), 0))
		}
	}
	_, _ = pipe.Exec(ctx)
	var total int64
	for _, c := range cmds {
		v, err := c.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// fillAccounts gives each of k accounts n counted events (outbound spam,
// with evidence samples offered as the worker does, company set, under the
// threshold) and returns the mean bytes per account.
func fillAccounts(tb testing.TB, k, n int) float64 {
	tb.Helper()
	rdb, prefix, accounts := fillOn(tb, testutil.PrivateRedis(tb), "aup", k, n)
	total, err := accountMemory(context.Background(), rdb, prefix, accounts)
	if err != nil {
		tb.Fatal(err)
	}
	return float64(total) / float64(k)
}

func fill(tb testing.TB, k, n int) (*redis.Client, string, []string) {
	tb.Helper()
	rdb, prefix := testutil.Redis(tb)
	return fillOn(tb, rdb, prefix, k, n)
}

// fillOn is fill on a given server and prefix: the memory budget is
// measured on a server of its own with the production prefix "aup", since
// key names count too.
func fillOn(tb testing.TB, rdb *redis.Client, prefix string, k, n int) (*redis.Client, string, []string) {
	tb.Helper()
	s := New(rdb, prefix)
	ctx := context.Background()
	now := time.Now()
	accounts := make([]string, k)
	var bs []Batch
	for a := range accounts {
		accounts[a] = fmt.Sprintf("user%06d@example.com", a)
		th := max(50, n)
		b := Batch{Account: accounts[a], Company: "acme", Threshold: th, Cap: th + 1, Action: rules.ActionSuspend}
		for i := range n {
			b.Items = append(b.Items, Item{
				ID: fmt.Sprintf("%s-%d", accounts[a], i), Time: now.Add(-time.Duration(i) * time.Minute),
				Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true,
				Fingerprint: uint32(i%5) + 1, Seq: uint64(1_000_000 + i),
			})
		}
		bs = append(bs, b)
	}
	res, err := s.Ingest(ctx, bs, IngestParams{Window: day, Skew: 5 * time.Minute, Now: now, NewID: func() string { return NewID(now) }})
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil || r.Count != n || r.Crossing != "" {
			tb.Fatalf("ingest: count %d crossing %q err %v", r.Count, r.Crossing, r.Err)
		}
	}
	return rdb, prefix, accounts
}

// BenchmarkIngestMemory reports the Redis memory of an account (MEMORY
// USAGE summed over its keys) holding 3 and 50 counted events. The accounts
// are filled once; the loop times the measurement, and the figure does not
// depend on b.N.
func BenchmarkIngestMemory(b *testing.B) {
	for _, n := range []int{3, 50} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			const k = 100
			rdb, prefix, accounts := fill(b, k, n)
			var total int64
			for b.Loop() {
				var err error
				if total, err = accountMemory(context.Background(), rdb, prefix, accounts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total)/k, "bytes/account")
		})
	}
}

// The budget: at most 1 KiB of Redis memory for an account holding 50
// counted events in its window. MEMORY USAGE is deterministic for a Redis
// version and encoding settings, so this is not a timing assertion.
func TestIngestMemoryBudget(t *testing.T) {
	const budget = 1024
	per := fillAccounts(t, 50, 50)
	t.Logf("an account holding 50 counted events takes %.0f bytes (budget %d)", per, budget)
	if per > budget {
		t.Fatalf("an account holding 50 counted events takes %.0f bytes of Redis memory, over the %d-byte budget", per, budget)
	}
	few := fillAccounts(t, 50, 3)
	t.Logf("an account holding 3 counted events takes %.0f bytes", few)
	if few >= per {
		t.Fatalf("3 events take %.0f bytes, not less than 50 events (%.0f)", few, per)
	}
}

// TestHotAccountBounded: an account with 300 counted events (threshold 50)
// keeps at most threshold + 1 of them, in the compact encoding.
func TestHotAccountBounded(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	s := New(rdb, prefix)
	ctx := context.Background()
	now := time.Now()
	acct := "hot@example.com"
	for round := range 6 {
		b := Batch{Account: acct, Company: "acme", Threshold: 50, Cap: 51, Action: rules.ActionSuspend}
		for i := range 50 {
			n := round*50 + i
			b.Items = append(b.Items, Item{ID: fmt.Sprint("hot-", n), Time: now.Add(-time.Duration(n) * time.Second),
				Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true, Fingerprint: uint32(n%7) + 1, Seq: uint64(n + 1)})
		}
		res, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, NewID: func() string { return NewID(now) }})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
	}
	key := AccountKey(prefix, acct, sufWindow)
	if n := rdb.ZCard(ctx, key).Val(); n != 51 {
		t.Fatalf("hot account keeps %d events, want threshold+1 = 51", n)
	}
	if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		t.Fatalf("window encoding %s, want listpack", enc)
	}
	// Its state holds the suspension's records besides; the whole account
	// stays within a few KiB however many events arrive.
	mem, _ := accountMemory(ctx, rdb, prefix, []string{acct})
	t.Logf("a suspended account with 300 counted events takes %d bytes", mem)
	if mem > 4096 {
		t.Fatalf("a hot account takes %d bytes", mem)
	}
}
