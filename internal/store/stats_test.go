package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

func hamItem(id string, at time.Time) Item {
	return Item{ID: id, Time: at, Kind: rules.KindOf(rules.Inbound, rules.Ham)}
}

// TestStatsGatheredUntilFlush: with a Stats, Ingest sends no command for
// an account with statistics-only events; the buffer folds many batches
// into one increment per account, kind and hour, written by Flush.
func TestStatsGatheredUntilFlush(t *testing.T) {
	rdb := testutil.PrivateRedis(t)
	s := New(rdb, "stats")
	ctx := context.Background()
	st := s.NewStats(0)
	p := IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, Stats: st}
	before := commandCalls(t, rdb)
	for i := range 5 {
		b := Batch{Account: "alice@example.com", Company: "acme", Threshold: 10, Cap: 11, Action: rules.ActionSuspend,
			Items: []Item{hamItem(fmt.Sprint("h", i), t0), hamItem(fmt.Sprint("old", i), t0.Add(-30*time.Hour))}}
		res, err := s.Ingest(ctx, []Batch{b}, p)
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		if got := string(res[0].Outcomes); got != "sl" || res[0].Count != -1 {
			t.Fatalf("outcomes %q count %d, want sl and -1", got, res[0].Count)
		}
	}
	if d, n := diff(commandCalls(t, rdb), before); n != 0 {
		t.Fatalf("statistics-only batches sent %d commands: %v", n, d)
	}
	if n := st.Len(); n != 1 {
		t.Fatalf("%d buckets held, want 1 (one account, kind and hour)", n)
	}
	before = commandCalls(t, rdb)
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := diff(commandCalls(t, rdb), before); d["hincrby"] != 1 {
		t.Fatalf("flush ran %v, want one HINCRBY", d)
	}
	c, err := s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if c.Other.Total != 5 || c.Other.ByVerdict[rules.Inbound][rules.Ham] != 5 {
		t.Fatalf("other %+v, want the 5 recent ham events", c.Other)
	}
	if st.Len() != 0 {
		t.Fatal("buckets held after a flush")
	}
}

// TestStatsKeptWhenRedisFails: a flush that Redis does not take keeps
// its buckets for the next one; a full buffer drops new buckets and
// counts what it dropped; an account whose statistics key has the wrong
// type fails alone.
func TestStatsKeptWhenRedisFails(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	ctx := context.Background()
	down := New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), prefix)
	st := down.NewStats(2)
	lo := t0.Add(-day).UnixMilli()
	now := t0.UnixMilli()
	st.add([]Batch{
		{Account: "a@example.com", Items: []Item{hamItem("1", t0), hamItem("2", t0)}},
		{Account: "b@example.com", Items: []Item{hamItem("3", t0)}},
		{Account: "c@example.com", Items: []Item{hamItem("4", t0), hamItem("5", t0)}}, // over the bound
		{Account: "d@example.com", Items: []Item{hamItem("6", t0)}},                   // failed: not added
	}, []Result{{}, {}, {}, {Err: errors.New("failed")}}, lo, now)
	if n := st.Dropped(); n != 2 {
		t.Fatalf("dropped %d, want c's 2 events", n)
	}
	if err := st.Flush(ctx); err == nil {
		t.Fatal("flush to a Redis that is down succeeded")
	}
	if n := st.Len(); n != 2 {
		t.Fatalf("%d buckets after a failed flush, want 2 kept", n)
	}

	// The same buckets, now with a Redis that answers.
	s := New(rdb, prefix)
	up := s.NewStats(0)
	up.buckets, up.now = st.buckets, now
	rdb.Set(ctx, s.key("b@example.com", sufStats), "not a hash", 0)
	err := up.Flush(ctx)
	if err == nil || !IsPermanent(err) {
		t.Fatalf("flush with a wrong-type key: %v, want a permanent error", err)
	}
	if up.Len() != 0 {
		t.Fatal("a wrong-type account's buckets were kept for ever")
	}
	c, err := s.Counts(ctx, "a@example.com", CountQuery{Window: day, Now: t0})
	if err != nil || c.Other.Total != 2 {
		t.Fatalf("a's statistics %+v (%v), want 2 despite b's key", c, err)
	}
}

// TestStatsNewHashNotPruned: a flush that makes an account's statistics
// hash reads no field back (it holds only what the flush wrote), while a
// hash that holds other fields still drops those over a day old when the
// current hour's first field is written, and keeps the others.
func TestStatsNewHashNotPruned(t *testing.T) {
	rdb := testutil.PrivateRedis(t)
	s := New(rdb, "stats", WithClock(func() time.Time { return t0 }))
	ctx := context.Background()
	h0 := t0.UnixMilli() / hourMS
	in, out := rules.KindOf(rules.Inbound, rules.Ham), rules.KindOf(rules.Outbound, rules.Ham)
	flush := func(items ...Item) map[string]int {
		st := s.NewStats(0)
		st.add([]Batch{{Account: "alice@example.com", Items: items}}, []Result{{}}, t0.Add(-day).UnixMilli(), t0.UnixMilli())
		before := commandCalls(t, rdb)
		if err := st.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		d, _ := diff(commandCalls(t, rdb), before)
		return d
	}
	key := s.key("alice@example.com", sufStats)
	ham := func(id string, k rules.Kind, at time.Time) Item { return Item{ID: id, Time: at, Kind: k} }
	d := flush(ham("1", in, t0), ham("2", out, t0), ham("3", in, t0.Add(-time.Hour)))
	if d["hincrby"] != 3 || d["pexpire"] != 1 || d["hgetall"] != 0 {
		t.Fatalf("a new hash's flush ran %v, want 3 HINCRBY, 1 PEXPIRE, no HGETALL", d)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 25*time.Hour || ttl > 26*time.Hour {
		t.Fatalf("TTL %s, want within (25h, 26h]", ttl)
	}
	// Fields of hours over a day old (and an earlier build's) go with the
	// next current-hour field; the recent ones stay, counted as before.
	stale := []string{fmt.Sprintf("%d.%d", in, h0-26), fmt.Sprintf("%d.%d", out, h0-40), "_e", fmt.Sprintf("%d.%d", in, (h0-27)%24)}
	rdb.HSet(ctx, key, stale[0], 4, stale[1], 1, stale[2], h0, stale[3], fmt.Sprintf("%d:9", h0-27),
		fmt.Sprintf("%d.%d", in, (h0-2)%24), fmt.Sprintf("%d:5", h0-2), fmt.Sprintf("%d.%d", out, h0-25), 6)
	d = flush(ham("4", rules.KindOf(rules.Complaint, rules.Ham), t0))
	if d["hgetall"] != 1 || d["hdel"] != 1 {
		t.Fatalf("flush ran %v, want one HGETALL and one HDEL", d)
	}
	got := rdb.HGetAll(ctx, key).Val()
	for _, f := range stale {
		if _, ok := got[f]; ok {
			t.Fatalf("field %s over a day old kept: %v", f, got)
		}
	}
	want := map[string]string{
		fmt.Sprintf("%d.%d", in, h0): "1", fmt.Sprintf("%d.%d", out, h0): "1", fmt.Sprintf("%d.%d", in, h0-1): "1",
		fmt.Sprintf("%d.%d", rules.KindOf(rules.Complaint, rules.Ham), h0): "1",
		fmt.Sprintf("%d.%d", in, (h0-2)%24):                                fmt.Sprintf("%d:5", h0-2), fmt.Sprintf("%d.%d", out, h0-25): "6",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("fields %v, want %v", got, want)
	}
}
