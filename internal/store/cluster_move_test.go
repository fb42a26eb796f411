package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/rules"
)

// TestIngestByNodeWhileSlotsMove runs calls of many slots (one per
// master) while slots move between masters behind the client's back: one
// slot has moved for good (the client's slot map still names its old
// master), one is half migrated (its account's state key has left, its
// window has not). The moved account is counted on its new master; the
// half-migrated one writes nothing and fails with a transient error, and
// is counted once when its batch comes again after the migration ends;
// every other account of the same calls is counted as usual. Windows are
// compared member by member. Before, it checks that calls are made per
// master.
func TestIngestByNodeWhileSlotsMove(t *testing.T) {
	ctx, c, rdb := startRedisCluster(t)
	s := New(rdb, "aup")

	// 120 accounts; moved and half are two of those the first master
	// serves, and stay is a third.
	names := make([]string, 120)
	masterOf := map[string]*cluster.RedisNode{}
	for a := range names {
		names[a] = fmt.Sprintf("mover%d@example.com", a)
		m, err := c.MasterOf(ctx, cluster.SlotOf(s.key(names[a], sufState)))
		if err != nil {
			t.Fatal(err)
		}
		masterOf[names[a]] = m
	}
	var onA []string
	a0 := masterOf[names[0]]
	for _, n := range names {
		if masterOf[n] == a0 {
			onA = append(onA, n)
		}
	}
	if len(onA) < 3 {
		t.Fatalf("only %d accounts on %s", len(onA), a0.Name)
	}
	var b0 *cluster.RedisNode
	for _, n := range names {
		if masterOf[n] != a0 {
			b0 = masterOf[n]
			break
		}
	}

	moved, half := onA[0], onA[1]
	ids := map[string][]string{}
	round := func(r int, only ...string) []Result {
		t.Helper()
		var todo []Batch
		for _, n := range names {
			if len(only) > 0 && !slices.Contains(only, n) {
				continue
			}
			b := Batch{Account: n, Company: "acme", Threshold: 100, Cap: 200, Action: rules.ActionSuspend}
			if n == half {
				b.Threshold = 2 // its second round crosses
			}
			for i := range 2 {
				b.Items = append(b.Items, spam(fmt.Sprintf("%s-%d-%d", n, r, i), time.Now()))
			}
			todo = append(todo, b)
		}
		res, err := s.Ingest(ctx, todo, IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range todo {
			if res[i].Err == nil {
				for _, it := range b.Items {
					ids[b.Account] = append(ids[b.Account], it.ID)
				}
			}
		}
		return res
	}
	checkGroupsByMaster(ctx, t, c, s)
	for i, r := range round(0) {
		if r.Err != nil {
			t.Fatalf("%s: %v", names[i], r.Err)
		}
	}

	// moved: its slot goes to b0 for good; half: its slot is left
	// migrating with its state key on b0 and its window on a0.
	idOf := func(n *cluster.RedisNode) string {
		v, err := n.Do(ctx, "CLUSTER", "MYID")
		if err != nil {
			t.Fatal(err)
		}
		return v.(string)
	}
	aID, bID := idOf(a0), idOf(b0)
	migrate := func(acct string, keys ...string) {
		t.Helper()
		slot := cluster.SlotOf(s.key(acct, sufState))
		for _, step := range []struct {
			n    *cluster.RedisNode
			args []any
		}{
			{b0, []any{"CLUSTER", "SETSLOT", slot, "IMPORTING", aID}},
			{a0, []any{"CLUSTER", "SETSLOT", slot, "MIGRATING", bID}},
		} {
			if _, err := step.n.Do(ctx, step.args...); err != nil {
				t.Fatal(err)
			}
		}
		args := []any{"MIGRATE", "127.0.0.1", strconv.Itoa(b0.Port), "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, s.key(acct, k))
		}
		if _, err := a0.Do(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	finish := func(acct string) {
		t.Helper()
		slot := cluster.SlotOf(s.key(acct, sufState))
		for _, n := range c.Redis {
			if !n.Running() {
				continue
			}
			if role, _, _ := n.Role(ctx); role != "master" {
				continue
			}
			if _, err := n.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", bID); err != nil {
				t.Fatal(err)
			}
		}
	}
	migrate(moved, sufState, sufWindow)
	finish(moved)
	// half's history list leaves first: a crossing's last write
	if err := rdb.LPush(ctx, s.key(half, sufHistory), "{}").Err(); err != nil {
		t.Fatal(err)
	}
	migrate(half, sufHistory)
	windowBefore := windowOf(t, rdb, s, half)
	if len(windowBefore) != 2 {
		t.Fatalf("half's window before: %d members", len(windowBefore))
	}

	// Statistics and sender tallies go by master too: moved's slot has
	// moved, half's is moving (its keys for them are not here: they are
	// refused on a0 and run again where go-redis is redirected to).
	st, se := s.NewStats(0), s.NewSenders(0)
	for _, n := range names {
		st.put(statKey{n, rules.Kind(1), time.Now().UnixMilli() / hourMS}, 3)
		se.Add(n, "192.0.2.7", "", time.Now())
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatalf("statistics: %v", err)
	}
	if err := se.Flush(ctx, 24*time.Hour, time.Time{}); err != nil {
		t.Fatalf("sender tallies: %v", err)
	}
	for _, n := range names {
		if n == half {
			continue // (its slot is mid-migration: redirected with ASK, checked below)
		}
		if v := rdb.HVals(ctx, s.key(n, sufStats)).Val(); len(v) != 1 || v[0] != "3" {
			t.Fatalf("%s: statistics %v, want one bucket of 3", n, v)
		}
		if v := rdb.HLen(ctx, s.key(n, sufSenders)).Val(); v != 1 {
			t.Fatalf("%s: %d sender tallies, want 1", n, v)
		}
	}

	res := round(1)
	for i, r := range res {
		switch n := names[i]; {
		case n == half:
			if r.Err == nil || IsPermanent(r.Err) {
				t.Fatalf("half-migrated account: want a transient error, got %v", r.Err)
			}
		case r.Err != nil:
			t.Fatalf("%s: %v", n, r.Err)
		}
	}
	if got := windowOf(t, rdb, s, half); !slices.Equal(got, windowBefore) {
		t.Fatalf("the half-migrated account wrote its window: %d members, was %d", len(got), len(windowBefore))
	}

	// The migration ends; half's batch comes again, and once more (a
	// redelivery of a batch already counted).
	args := []any{"MIGRATE", "127.0.0.1", strconv.Itoa(b0.Port), "", 0, 5000, "KEYS", s.key(half, sufState), s.key(half, sufWindow)}
	if _, err := a0.Do(ctx, args...); err != nil {
		t.Fatal(err)
	}
	finish(half)
	crossed := false
	for range 2 {
		r := round(1, half)
		if r[0].Err != nil {
			t.Fatalf("half, after the migration: %v", r[0].Err)
		}
		crossed = crossed || r[0].Crossing != ""
	}
	if !crossed {
		t.Fatal("half's batch did not cross its threshold after the migration")
	}
	ids[half] = slices.Compact(sortedCopy(ids[half]))

	for _, n := range names {
		want := make([]string, 0, len(ids[n]))
		for _, id := range ids[n] {
			want = append(want, string(appendMember(nil, id)))
		}
		slices.Sort(want)
		got := windowOf(t, rdb, s, n)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: window holds %d members, want its %d ids", n, len(got), len(want))
		}
	}
	for _, n := range []string{moved, half} {
		m, err := c.MasterOf(ctx, cluster.SlotOf(s.key(n, sufState)))
		if err != nil || m != b0 {
			t.Fatalf("%s: slot served by %v (%v), want %s", n, m, err, b0.Name)
		}
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// checkGroupsByMaster: a batch of many accounts makes about one call per
// master, not one per slot, and a call holds the accounts of one master.
func checkGroupsByMaster(ctx context.Context, t *testing.T, c *cluster.Cluster, s *Store) {
	t.Helper()
	batches := make([]Batch, 465)
	for i := range batches {
		batches[i].Account = fmt.Sprintf("g%d@example.com", i)
	}
	groups, byNode := s.groupCalls(ctx, batches)
	if !byNode {
		t.Fatal("a Cluster client groups by slot")
	}
	// 465 accounts over 3 masters, 64 a call: at most 3 partial calls.
	if max := 465/maxAccountsPerCall + 3; len(groups) > max {
		t.Fatalf("%d calls for 465 accounts, want at most %d", len(groups), max)
	}
	seen := map[int]bool{}
	for _, g := range groups {
		m0, err := c.MasterOf(ctx, cluster.SlotOf(s.key(batches[g[0]].Account, sufState)))
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range g {
			if seen[i] {
				t.Fatalf("account %d in two calls", i)
			}
			seen[i] = true
			m, err := c.MasterOf(ctx, cluster.SlotOf(s.key(batches[i].Account, sufState)))
			if err != nil {
				t.Fatal(err)
			}
			if m != m0 {
				t.Fatalf("one call holds accounts of %s and %s", m0.Name, m.Name)
			}
		}
	}
	if len(seen) != len(batches) {
		t.Fatalf("%d of %d accounts in a call", len(seen), len(batches))
	}
}

// windowOf reads the members of an account's window.
func windowOf(t *testing.T, rdb redis.Cmdable, s *Store, account string) []string {
	t.Helper()
	m, err := WindowMembers(context.Background(), rdb, s.prefix, account)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
