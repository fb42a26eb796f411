package store

import (
	"context"
	_ "embed"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/rules"
)

// The ingest script as it was before inline windows (wi): it knows only
// the set, and takes each account's state and window as declared keys.
//
//go:embed testdata/ingest-before-wi.lua
var ingestBeforeInline string

// TestInlineWindowBesideAnEarlierVersion: during a rolling upgrade, a
// process of the version before inline windows counts beside this one,
// on the same accounts. It knows no wi, so it counts its events in a set
// (and writes wb); this version reads the two as one window, and writes
// them back as one. Every event is counted once: by this version's count
// and by the readers', whichever version counted it, member by member.
func TestInlineWindowBesideAnEarlierVersion(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rdb := s.rdb.(*redis.Client)
	prev := newLibrary("aupd_ingest_prev", crossingLua, ingestBeforeInline)
	const acct = "alice@example.com"
	batch := func(ids ...string) Batch {
		b := Batch{Account: acct, Company: "acme", Threshold: 100, Cap: 101, Action: rules.ActionSuspend}
		for _, id := range ids {
			b.Items = append(b.Items, spam(id, t0))
		}
		return b
	}
	// this version
	now := func(ids ...string) Result {
		t.Helper()
		res, err := s.Ingest(ctx, []Batch{batch(ids...)}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		return res[0]
	}
	// the version before, with its key layout
	before := func(ids ...string) Result {
		t.Helper()
		b := batch(ids...)
		args := []any{ms(t0), day.Milliseconds(), (5 * time.Minute).Milliseconds(), rebaseAfter(day, 5*time.Minute), 1,
			packBatch(nil, &b, newIDSource(t0), func() string { return NewID(t0) })}
		cmds, err := s.evalAll(ctx, prev, [][]string{{s.key(acct, sufState), s.key(acct, sufWindow)}}, [][]any{args}, nil)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := cmds[0].Slice()
		if err != nil {
			t.Fatal(err)
		}
		r := parseIngest(vals[0], b.Items, ms(t0)-day.Milliseconds())
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r
	}
	read := func(want int, what string) {
		t.Helper()
		m, err := WindowMembers(ctx, rdb, s.prefix, acct)
		c, err2 := s.Counts(ctx, acct, CountQuery{Window: day, Now: t0})
		if err != nil || err2 != nil || len(m) != want || c.Counting.Total != want {
			t.Fatalf("%s: the readers see %d members and a count of %d (%v %v), want %d", what, len(m), c.Counting.Total, err, err2, want)
		}
	}
	inline := func() bool { return rdb.HExists(ctx, s.key(acct, sufState), fieldInline).Val() }

	if r := now("a", "b"); r.Count != 2 || !inline() {
		t.Fatalf("this version: count %d, inline %v", r.Count, inline())
	}
	// The version before does not see a and b: it counts a again, in a
	// set, with c.
	if r := before("a", "c"); r.Count != 2 {
		t.Fatalf("the version before: count %d, want 2 (it sees its own events only)", r.Count)
	}
	read(3, "wi {a b} beside the set {a c}")
	if r := now("d", "c"); r.Count != 4 || outcomes(r) != "cd" {
		t.Fatalf("this version after the one before: count %d outcomes %q, want 4 cd", r.Count, outcomes(r))
	}
	if !inline() || rdb.Exists(ctx, s.key(acct, sufWindow)).Val() != 0 || rdb.HExists(ctx, s.key(acct, sufState), "wb").Val() {
		t.Fatal("the window and the set were not written back as one inline window")
	}
	read(4, "wi {a b c d}")

	// Past the inline window: a set, which the version before counts in
	// as this one does.
	if r := now("e", "f", "g"); r.Count != 7 || inline() {
		t.Fatalf("count %d inline %v, want 7 in a set", r.Count, inline())
	}
	if r := before("h", "a"); r.Count != 8 || outcomes(r) != "cd" {
		t.Fatalf("the version before, on the set: count %d outcomes %q, want 8 cd", r.Count, outcomes(r))
	}
	if r := now("i", "h"); r.Count != 9 || outcomes(r) != "cd" {
		t.Fatalf("this version: count %d outcomes %q, want 9 cd", r.Count, outcomes(r))
	}
	read(9, "the set")
	var want []string
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
		want = append(want, string(appendMember(nil, id)))
	}
	got, _ := WindowMembers(ctx, rdb, s.prefix, acct)
	if fmt.Sprint(sortedCopy(got)) != fmt.Sprint(sortedCopy(want)) {
		t.Fatalf("members %x, want %x", got, want)
	}
}
