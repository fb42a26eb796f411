package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// commandCalls sums the calls of every command in INFO commandstats except
// the ones the test itself sends (INFO, EVALSHA, SCRIPT, ...): what the
// scripts ran inside Redis.
func commandCalls(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		switch name {
		case "info", "evalsha", "eval", "script", "script|load", "ping", "hello", "client", "config":
			continue
		}
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		out[name] = n
	}
	return out
}

func diff(after, before map[string]int) (map[string]int, int) {
	d := map[string]int{}
	total := 0
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
			total += v - before[k]
		}
	}
	return d, total
}

// TestIngestCostDoesNotGrowPerEvent: a batch of 2, of 50 and of 500
// events cost an account the same Redis commands, on a new account and on
// one that already has a window; a batch of one event costs no more (a
// single id needs no ZMSCORE: ZADD NX tells whether it is new). A private
// Redis server keeps other tests' commands out of the figures.
func TestIngestCostDoesNotGrowPerEvent(t *testing.T) {
	rdb := testutil.PrivateRedis(t)
	s := New(rdb, "cost")
	ctx := context.Background()
	batch := func(account string, n, from int) Batch {
		b := Batch{Account: account, Company: "acme", Threshold: 2000, Cap: 2001, Action: rules.ActionSuspend}
		for i := range n {
			it := spam(fmt.Sprintf("%s-%d", account, from+i), t0.Add(-time.Duration(from+i)*time.Second))
			b.Items = append(b.Items, it)
		}
		return b
	}
	if err := ingestScript.load(ctx, rdb); err != nil { // loaded once, by the first call
		t.Fatal(err)
	}
	cost := func(b Batch) (map[string]int, int) {
		before := commandCalls(t, rdb)
		res, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		return diff(commandCalls(t, rdb), before)
	}
	// A window of a few events is inline, in the state (one, two: 1 and 2
	// events, then 2 and 4); fifty and many have a set.
	for _, phase := range []struct {
		name string
		from int
	}{{"new account", 0}, {"existing window", 1000}} {
		one, n1 := cost(batch("one@example.com", 1, phase.from))
		two, n2 := cost(batch("two@example.com", 2, phase.from))
		fifty, n50 := cost(batch("fifty@example.com", 50, phase.from))
		many, n500 := cost(batch("many@example.com", 500, phase.from))
		t.Logf("%s: 1 event: %d commands %v; 2: %d %v; 50: %d %v; 500: %d %v", phase.name, n1, one, n2, two, n50, fifty, n500, many)
		if n2 == 0 || n50 == 0 || n50 != n500 {
			t.Fatalf("%s: batches of 50 and 500 events cost %d and %d commands: %v %v", phase.name, n50, n500, fifty, many)
		}
		if n1 == 0 || n1 > n2 || n2 > n50 {
			t.Fatalf("%s: batches of 1 and 2 events cost %d %v and %d %v commands, of 50 %d", phase.name, n1, one, n2, two, n50)
		}
		if n500 > 10 {
			t.Fatalf("%s: %d commands for one account's batch, want a small fixed handful: %v", phase.name, n500, many)
		}
		// An inline window costs its account no key of its own: the state's
		// read and one write (and, new, whether it is a record's, and the
		// state's expiry).
		if two["zadd"]+two["zcard"]+two["zremrangebyscore"] != 0 || two["hset"] != 1 || n2 > 5 || (phase.from > 0 && n2 > 3) {
			t.Fatalf("%s: an inline window of 2 events cost %v", phase.name, two)
		}
	}
	// The window outgrows the state: moved to a set, once.
	moved, n := cost(batch("two@example.com", 4, 2000))
	if moved["zadd"] != 1 || moved["hdel"] != 1 || n > 10 {
		t.Fatalf("an inline window moved to its set with %d commands: %v", n, moved)
	}
}

// TestIngestWindowsExpire: an address seen only in verdicts has no record;
// its keys expire once past the window plus the skew (rounded up to the
// hour); a suspension makes its state durable.
func TestIngestWindowsExpire(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rdb := s.rdb.(*redis.Client)
	acct := "alice@example.com"
	ham := Item{ID: "h1", Time: t0, Kind: rules.KindOf(rules.Outbound, rules.Ham)}
	// windows within the hour they are rounded to; hourly statistics
	// buckets an hour later still
	limits := map[string]time.Duration{sufState: day + 5*time.Minute + time.Hour, sufWindow: day + 5*time.Minute + time.Hour, sufStats: day + 5*time.Minute + 2*time.Hour}
	expires := func(acct string, sufs ...string) {
		t.Helper()
		for _, suf := range sufs {
			ttl := rdb.PTTL(ctx, s.key(acct, suf)).Val()
			if ttl <= 0 || ttl > limits[suf] {
				t.Fatalf("%s's key %s: TTL %s, want within (0, %s]", acct, suf, ttl, limits[suf])
			}
		}
	}
	// one event: its window is inline, in the state
	ingest(t, s, t0, 3, spam("1", t0.Add(-time.Hour)), ham)
	expires(acct, sufState, sufStats)
	if rdb.Exists(ctx, s.key(acct, sufWindow)).Val() != 0 || rdb.HExists(ctx, s.key(acct, sufState), fieldInline).Val() != true {
		t.Fatal("a window of one event is not inline")
	}
	// more: a set of its own
	var seven []Item
	for i := range 7 {
		seven = append(seven, spam(fmt.Sprint("b", i), t0))
	}
	b := Batch{Account: "bob@example.com", Threshold: 50, Cap: 100, Action: rules.ActionSuspend, Items: seven}
	if res, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return "x" }}); err != nil || res[0].Count != 7 {
		t.Fatal(err, res)
	}
	expires("bob@example.com", sufState, sufWindow)
	if a, _ := s.Account(ctx, acct); a.Exists {
		t.Fatal("verdicts alone made an account record")
	}
	if n := rdb.Exists(ctx, s.idxAll(), s.idxCompany("acme")).Val(); n != 0 {
		t.Fatalf("verdicts alone wrote %d index sets", n)
	}
	r := ingest(t, s, t0, 3, spam("2", t0), spam("3", t0), spam("4", t0))
	if r.Crossing != rules.ActionSuspend {
		t.Fatalf("no crossing: %+v", r)
	}
	if ttl := rdb.PTTL(ctx, s.key(acct, sufState)).Val(); ttl != -1 {
		t.Fatalf("a suspended account's state has TTL %s, want none", ttl)
	}
	if n := rdb.Exists(ctx, s.key(acct, sufWindow)).Val(); n != 0 {
		t.Fatal("a window of 4 events is not inline")
	}
	a, _ := s.Account(ctx, acct)
	if !a.Exists || a.Company != "acme" || a.Created.IsZero() {
		t.Fatalf("the suspension made no record with its company: %+v", a)
	}
}

// TestIngestErrorLeavesNothingHalfWritten: a key of the wrong type fails
// the account's batch as permanent, before any write.
func TestIngestErrorLeavesNothingHalfWritten(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rdb := s.rdb.(*redis.Client)
	acct := "alice@example.com"
	ingest(t, s, t0, 2, spam("1", t0), spam("2", t0))
	if err := rdb.Set(ctx, s.key(acct, sufOutbox), "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	stateBefore := rdb.HGetAll(ctx, s.key(acct, sufState)).Val()
	winBefore := rdb.ZRangeWithScores(ctx, s.key(acct, sufWindow), 0, -1).Val()
	b := Batch{Account: acct, Company: "acme", Threshold: 2, Cap: 3, Action: rules.ActionSuspend, Items: []Item{spam("3", t0)}}
	res, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err == nil || !IsPermanent(res[0].Err) {
		t.Fatalf("error %v, want a permanent one", res[0].Err)
	}
	if got := rdb.HGetAll(ctx, s.key(acct, sufState)).Val(); fmt.Sprint(got) != fmt.Sprint(stateBefore) {
		t.Fatalf("state changed by a failed batch:\n%v\n%v", stateBefore, got)
	}
	if got := rdb.ZRangeWithScores(ctx, s.key(acct, sufWindow), 0, -1).Val(); fmt.Sprint(got) != fmt.Sprint(winBefore) {
		t.Fatalf("window changed by a failed batch")
	}
	// A state hash of the wrong type is permanent too; a Redis that is
	// not there is not.
	if err := rdb.Set(ctx, s.key("bob@example.com", sufState), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	b.Account = "bob@example.com"
	res, _ = s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }})
	if !IsPermanent(res[0].Err) {
		t.Fatalf("wrong-type state: %v", res[0].Err)
	}
	down := New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), "down")
	_, err = down.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }})
	res2, _ := down.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }})
	if err == nil && (len(res2) == 0 || res2[0].Err == nil || IsPermanent(res2[0].Err)) {
		t.Fatalf("unreachable Redis: %v %+v", err, res2)
	}
}

// TestIngestCarriesOverV1Windows: a window written by aupd v1 (8-byte
// members, absolute scores, samples in smp:1..3, statistics in x) is
// rewritten on its next batch, keeping every count and dedup.
func TestIngestCarriesOverV1Windows(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rdb := s.rdb.(*redis.Client)
	acct := "alice@example.com"
	v1 := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], binary.BigEndian.Uint64(sum[:8]))
		return string(b[:])
	}
	kind := int64(rules.KindOf(rules.Outbound, rules.Spam))
	for i, id := range []string{"old1", "old2", "old3"} {
		at := t0.Add(-time.Duration(i+1) * time.Hour).UnixMilli()
		rdb.ZAdd(ctx, s.key(acct, sufWindow), redis.Z{Score: float64(at*16 + kind), Member: v1(id)})
	}
	rdb.ZAdd(ctx, s.key(acct, sufLegacy), redis.Z{Score: 1, Member: "ham"})
	rdb.HSet(ctx, s.key(acct, sufState), "created", t0.UnixMilli(), "company", "acme",
		"smp:1", fmt.Sprintf("%d|aaaa|17", t0.Add(-time.Hour).UnixMilli()))
	r := ingest(t, s, t0, 10, spam("old2", t0.Add(-2*time.Hour)), spam("new", t0))
	if outcomes(r) != "dc" || r.Count != 4 {
		t.Fatalf("outcomes %q count %d, want dc 4", outcomes(r), r.Count)
	}
	h := rdb.HGetAll(ctx, s.key(acct, sufState)).Val()
	if h["smp:1"] != "" || !strings.Contains(h["smp"], "aaaa") || rdb.Exists(ctx, s.key(acct, sufLegacy)).Val() != 0 {
		t.Fatalf("v1 state not carried over: %v", h)
	}
	// (4 events: the window is now inline, and the v1 set is gone)
	if m, _ := WindowMembers(ctx, rdb, s.prefix, acct); len(m) != 4 || len(m[0]) != 6 || rdb.Exists(ctx, s.key(acct, sufWindow)).Val() != 0 {
		t.Fatalf("members %q, want 4 of 6 bytes, inline", m)
	}
}

// TestIngestRebasesScores: as time passes the window's scores are rebased
// so that they stay compact, and nothing is lost or counted twice: an
// inline window (its base in its first 4 bytes) and a set (base wb).
func TestIngestRebasesScores(t *testing.T) {
	for _, extra := range []int{0, 6} {
		s := newStore(t)
		ctx := context.Background()
		rdb := s.rdb.(*redis.Client)
		acct := "alice@example.com"
		baseOf := func() string {
			h := rdb.HMGet(ctx, s.key(acct, sufState), "wb", fieldInline).Val()
			if wb, _ := h[0].(string); wb != "" {
				return "set " + wb
			}
			wi, _ := h[1].(string)
			return fmt.Sprintf("inline %x", wi[:min(4, len(wi))])
		}
		items := []Item{spam("1", t0), spam("2", t0.Add(-20*time.Hour))}
		for i := range extra {
			items = append(items, spam(fmt.Sprint("x", i), t0))
		}
		ingest(t, s, t0, 100, items...)
		base1 := baseOf()
		later := t0.Add(14 * time.Hour)
		r := ingest(t, s, later, 100, spam("1", t0), spam("3", later))
		base2 := baseOf()
		if base1 == base2 {
			t.Fatalf("%d events: base %s not rebased after 14h", len(items), base1)
		}
		// t0-20h is 34h old at t0+14h: out; t0 and t0+14h count.
		if outcomes(r) != "dc" || r.Count != 2+extra {
			t.Fatalf("%d events, after rebase (%s to %s): outcomes %q count %d", len(items), base1, base2, outcomes(r), r.Count)
		}
		c, err := s.Counts(ctx, acct, CountQuery{Window: day, Now: later})
		if err != nil || c.Counting.Total != 2+extra {
			t.Fatalf("%d events: counts after rebase: %+v %v", len(items), c, err)
		}
	}
}

// TestStatisticsBuckets: statistics-only events are hourly counters per
// kind, approximate, never per event.
func TestStatisticsBuckets(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	ham := func(id string, at time.Time) Item {
		return Item{ID: id, Time: at, Kind: rules.KindOf(rules.Inbound, rules.Ham)}
	}
	ingest(t, s, t0, 10, ham("1", t0), ham("2", t0), ham("3", t0.Add(-2*time.Hour)), ham("old", t0.Add(-30*time.Hour)))
	ingest(t, s, t0, 10, ham("4", t0))
	c, err := s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if c.Other.Total != 4 || c.Other.ByVerdict[rules.Inbound][rules.Ham] != 4 || c.Counting.Total != 0 {
		t.Fatalf("other %+v counting %+v", c.Other, c.Counting)
	}
	rdb := s.rdb.(*redis.Client)
	key := s.key("alice@example.com", sufStats)
	if n := rdb.HLen(ctx, key).Val(); n != 2 {
		t.Fatalf("%d statistics fields, want 2 hours", n)
	}
	// A field of an earlier build ("<kind>.<hour mod 24>" = "<hour>:<n>")
	// still counts while its hour is in the window; it and the fields of
	// hours more than a day old go when a new hour's field is written.
	kind := int(rules.KindOf(rules.Inbound, rules.Ham))
	h0 := t0.UnixMilli() / hourMS
	rdb.HSet(ctx, key, fmt.Sprintf("%d.%d", kind, (h0-1)%24), fmt.Sprintf("%d:5", h0-1), fmt.Sprintf("%d.%d", kind, h0-30), 7, "_e", h0+26)
	if c, _ := s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Now: t0}); c.Other.Total != 9 {
		t.Fatalf("with an old-format field: other %d, want 4 + 5", c.Other.Total)
	}
	later := t0.Add(27 * time.Hour)
	// A late event's new field (an hour before the current one) sets the
	// expiry but leaves the pruning to the current hour's first event.
	ingest(t, s, later, 10, ham("late", later.Add(-time.Hour)))
	if n := rdb.HLen(ctx, key).Val(); n != 6 {
		t.Fatalf("%d fields after a late event, want 6 (nothing pruned)", n)
	}
	rdb.HDel(ctx, key, fmt.Sprintf("%d.%d", kind, later.Add(-time.Hour).UnixMilli()/hourMS))
	ingest(t, s, later, 10, ham("5", later))
	fields := rdb.HKeys(ctx, key).Val()
	if want := fmt.Sprintf("%d.%d", kind, h0+27); len(fields) != 1 || fields[0] != want {
		t.Fatalf("fields %v after 27 hours, want only %s", fields, want)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 25*time.Hour || ttl > 26*time.Hour {
		t.Fatalf("statistics TTL %s, want within (25h, 26h]", ttl)
	}
}

// TestNearThresholdAndHourlyCounts: the hints written along with a batch,
// and the window by hour.
func TestNearThresholdAndHourlyCounts(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	b := Batch{Account: "alice@example.com", Threshold: 10, Cap: 11, Action: rules.ActionSuspend,
		Items: []Item{spam("1", t0.Add(-90*time.Minute)), spam("2", t0.Add(-30*time.Minute)), spam("3", t0.Add(-20*time.Minute)), spam("4", t0.Add(-23*time.Hour-30*time.Minute))}}
	near := map[string]int64{"bob@example.com": t0.UnixMilli() - 1000, "carol@example.com": t0.UnixMilli(), "stale@example.com": t0.Add(-2 * day).UnixMilli()}
	if _, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }, Near: near}); err != nil {
		t.Fatal(err)
	}
	got, err := s.NearThreshold(ctx, 10)
	if err != nil || fmt.Sprint(got) != "[carol@example.com bob@example.com]" {
		t.Fatalf("near %v %v", got, err)
	}
	hours, err := s.HourlyCounts(ctx, "alice@example.com", day, t0)
	if err != nil || len(hours) != 24 {
		t.Fatal(hours, err)
	}
	if hours[23] != 2 || hours[22] != 1 || hours[0] != 1 {
		t.Fatalf("hourly %v", hours)
	}
}

// TestOneAccountFailsAlone: accounts share script calls, but a broken
// account fails on its own; the others of the same call are counted.
func TestOneAccountFailsAlone(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rdb := s.rdb.(*redis.Client)
	ingest(t, s, t0, 5, spam("0", t0)) // alice: a window already
	b0 := Batch{Account: "broken@example.com", Threshold: 5, Cap: 6, Action: rules.ActionSuspend, Items: []Item{spam("0", t0)}}
	if _, err := s.Ingest(ctx, []Batch{b0}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, s.key("broken@example.com", sufState), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var bs []Batch
	for _, a := range []string{"a@example.com", "broken@example.com", "b@example.com"} {
		bs = append(bs, Batch{Account: a, Threshold: 5, Cap: 6, Action: rules.ActionSuspend, Items: []Item{spam("1", t0)}})
	}
	res, err := s.Ingest(ctx, bs, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[2].Err != nil || res[0].Count != 1 || res[2].Count != 1 {
		t.Fatalf("healthy accounts: %+v %+v", res[0], res[2])
	}
	if !IsPermanent(res[1].Err) || !strings.Contains(res[1].Err.Error(), "WRONGTYPE") {
		t.Fatalf("broken account: %v", res[1].Err)
	}
}

func TestHashSlot(t *testing.T) {
	// the Redis Cluster specification's example: CRC16("123456789") = 0x31C3
	if got := hashSlot("123456789"); got != 0x31C3 {
		t.Fatalf("slot %d, want %d", got, 0x31C3)
	}
}

// TestReadOnlyReplicaIsTransient: a Redis that refuses writes for now (a
// replica, say during a failover) is a transient failure, not a broken
// account.
func TestReadOnlyReplicaIsTransient(t *testing.T) {
	addr := testutil.PrivateRedisServer(t, "--replicaof", "127.0.0.1", "1")
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	s := New(rdb, "aup")
	b := Batch{Account: "a@example.com", Threshold: 5, Cap: 6, Action: rules.ActionSuspend, Items: []Item{spam("1", t0)}}
	res, err := s.Ingest(context.Background(), []Batch{b}, IngestParams{Window: day, Skew: time.Minute, Now: t0, NewID: func() string { return "x" }})
	if err != nil || res[0].Err == nil || IsPermanent(res[0].Err) || !strings.Contains(res[0].Err.Error(), "READONLY") {
		t.Fatalf("%v %+v", err, res)
	}
}

// recordingPublisher records the account events it is given and fails
// those of one account.
type recordingPublisher struct {
	failFor string
	got     []string
}

func (p *recordingPublisher) PublishAccountEvent(_ context.Context, ev *events.AccountEvent, _ []byte) error {
	if ev.Account == p.failFor {
		return fmt.Errorf("publish refused for %s", ev.Account)
	}
	p.got = append(p.got, ev.Account+" "+ev.Type)
	return nil
}

// TestSweepReadsTheOutboxIndex: the sweep finds what crashes left behind
// through the outbox index (never a keyspace scan), publishes it, carries
// on past an account that fails, and leaves only that one indexed.
func TestSweepReadsTheOutboxIndex(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	// a crossing whose batch died before publishing
	r := ingest(t, s, t0, 1, spam("1", t0), spam("2", t0))
	if r.Crossing == "" || len(r.Pending) != 1 {
		t.Fatalf("no pending crossing: %+v", r)
	}
	if err := s.MarkOutbox(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	// API changes whose process died before publishing
	for _, a := range []string{"bob@example.com", "carol@example.com"} {
		if _, err := s.Suspend(ctx, a, []rules.Service{rules.ServiceIMAP}, Actor{Name: "ops", Reason: "admin"}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.OutboxPending(ctx); n != 3 {
		t.Fatalf("%d accounts indexed, want 3", n)
	}
	pub := &recordingPublisher{failFor: "bob@example.com"}
	n, err := s.SweepOutboxes(ctx, pub)
	if err == nil || n != 2 {
		t.Fatalf("sweep published %d (%v), want 2 and bob's error", n, err)
	}
	if fmt.Sprint(sorted(pub.got)) != "[alice@example.com suspended carol@example.com suspended]" {
		t.Fatalf("published %v", pub.got)
	}
	if n, _ := s.OutboxPending(ctx); n != 1 {
		t.Fatalf("%d accounts still indexed, want bob only", n)
	}
	// the next batch of alice finds her outbox empty
	if r := ingest(t, s, t0, 1, spam("3", t0)); len(r.Pending) != 0 {
		t.Fatalf("settled outbox still pending: %+v", r)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}
