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
