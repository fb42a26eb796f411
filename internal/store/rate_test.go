package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// rate5 is the spam-rate rule of these tests: over 5%, with at least 10
// spam; the threshold, 100, is its backstop.
var rate5 = rules.SpamRate{PPM: rules.RatePPM(0.05), MinSpam: 10}

func ham(id string, at time.Time) Item {
	return Item{ID: id, Time: at, Kind: rules.KindOf(rules.Outbound, rules.Ham), Ham: true}
}

// ingestRated ingests items for alice under rate5 with threshold 100, in
// batches of 500, and returns the last result and the crossings seen.
func ingestRated(t *testing.T, s *Store, now time.Time, items []Item) (Result, []Result) {
	t.Helper()
	var last Result
	var crossings []Result
	for lo := 0; lo < len(items); lo += 500 {
		b := Batch{Account: "alice@example.com", Company: "acme", Threshold: 100, Cap: 101, Action: rules.ActionSuspend,
			SpamRate: rate5, HamCap: rate5.HamCap(100), OutboundOnly: true, Items: items[lo:min(lo+500, len(items))]}
		res, err := s.Ingest(context.Background(), []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: now, NewID: func() string { return NewID(now) }})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		last = res[0]
		if last.Crossing != "" {
			crossings = append(crossings, last)
		}
	}
	return last, crossings
}

// mix is n outbound messages of which spam are judged spam, in a random
// order, over the last hours.
func mix(tag string, n, spams int, now time.Time) []Item {
	r := rand.New(rand.NewPCG(uint64(n), uint64(spams)))
	items := make([]Item, n)
	for i := range items {
		at := now.Add(-time.Duration(r.Int64N(int64(20 * time.Hour))))
		id := fmt.Sprintf("%s-%d", tag, i)
		if i < spams {
			items[i] = spam(id, at)
		} else {
			items[i] = ham(id, at)
		}
	}
	r.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	return items
}

// A busy sender's false positives (0.5% of 10,000 messages) do not
// suspend it; a spammer's 40% does, by the rate rule, long before the
// count's backstop.
func TestSpamRateBusySenderAndSpammer(t *testing.T) {
	s := newStore(t)
	r, crossings := ingestRated(t, s, t0, mix("busy", 10000, 50, t0))
	if len(crossings) != 0 || r.Count != 50 {
		t.Fatalf("busy sender: count %d, crossings %+v", r.Count, crossings)
	}
	s2 := newStore(t)
	_, crossings = ingestRated(t, s2, t0, mix("spammer", 100, 40, t0))
	if len(crossings) != 1 || crossings[0].Crossing != rules.ActionSuspend || crossings[0].Rule != "spam_rate" {
		t.Fatalf("spammer: crossings %+v", crossings)
	}
	ev, _, err := DecodeOutbox(crossings[0].Pending[0])
	if err != nil {
		t.Fatal(err)
	}
	sus := ev.Suspension
	if sus.Rule != "spam_rate" || sus.Rate == nil || sus.Rate.Limit != 0.05 || sus.Rate.MinSpam != 10 ||
		sus.Rate.Spam < 10 || sus.Rate.Spam*100 <= 5*(sus.Rate.Spam+sus.Rate.Ham) || sus.Count != sus.Rate.Spam {
		t.Fatalf("suspension %+v rate %+v", sus, sus.Rate)
	}
	// Its history line names the rule and tells the rate, not a count
	// over the threshold it never reached.
	h, err := s2.History(context.Background(), "alice@example.com", 0, 1)
	want := fmt.Sprintf("spam_rate: %d spam of %d outbound messages exceed the rate of 5%% (at least 10 spam)", sus.Rate.Spam, sus.Rate.Spam+sus.Rate.Ham)
	if err != nil || len(h) != 1 || h[0].ID != sus.ID || h[0].Rule != "spam_rate" || h[0].Note != want {
		t.Fatalf("history %+v, %v; want the note %q", h, err, want)
	}
}

// Ham counts once by id, like spam: redelivered ham does not lower the
// rate. 10 spam in 200 messages is exactly 5% (no crossing); the same
// ham again changes nothing, and one more spam crosses.
func TestSpamRateHamCountsOnce(t *testing.T) {
	s := newStore(t)
	items := mix("m", 200, 10, t0)
	if _, c := ingestRated(t, s, t0, items); len(c) != 0 {
		t.Fatalf("5%% crossed: %+v", c)
	}
	var hams []Item
	for _, it := range items {
		if it.Ham {
			hams = append(hams, it)
		}
	}
	if _, c := ingestRated(t, s, t0, hams); len(c) != 0 {
		t.Fatalf("redelivered ham crossed: %+v", c)
	}
	if n := hamHeld(t, s); n != 190 {
		t.Fatalf("ham set holds %d, want 190", n)
	}
	_, c := ingestRated(t, s, t0, []Item{spam("one-more", t0)})
	if len(c) != 1 {
		t.Fatal("11 spam in 201 messages did not cross")
	}
}

// Flooding ham cannot hide spam: the count stays the backstop, and the
// ham set stays at its cap.
func TestSpamRateFloodOfHam(t *testing.T) {
	s := newStore(t)
	_, c := ingestRated(t, s, t0, mix("flood", 20000, 101, t0))
	if len(c) != 1 || c[0].Count != 101 || c[0].Rule != "spam_count" {
		t.Fatalf("crossings %+v", c)
	}
	ev, _, err := DecodeOutbox(c[0].Pending[0])
	if err != nil || ev.Suspension.Rule != "spam_count" {
		t.Fatalf("%+v %v", ev, err)
	}
	if n := hamHeld(t, s); n != rate5.HamCap(100) {
		t.Fatalf("ham set holds %d, want the cap %d", n, rate5.HamCap(100))
	}
}

// Ham from before a reinstatement or outside the window does not count.
func TestSpamRateWindowAndFloor(t *testing.T) {
	s := newStore(t)
	old := mix("old", 1000, 0, t0.Add(-2*day)) // outside the window
	ingestRated(t, s, t0, old)
	if n := hamHeld(t, s); n != 0 {
		t.Fatalf("ham set holds %d of ham outside the window", n)
	}
	if _, c := ingestRated(t, s, t0, mix("new", 15, 10, t0)); len(c) != 1 {
		t.Fatal("10 spam in 15 did not cross")
	}
}

// hamHeld is the size of alice's ham set.
func hamHeld(t *testing.T, s *Store) int {
	t.Helper()
	z, err := s.rdb.ZRangeWithScores(context.Background(), s.key("alice@example.com", sufHam), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(z)
}

// A report by the rate rule (shadow mode, the allowlist) holds while the
// rule holds, and the next crossing after it stopped holding is reported
// again.
func TestSpamRateReportHolds(t *testing.T) {
	s := newStore(t)
	run := func(items ...Item) Result {
		b := Batch{Account: "alice@example.com", Company: "acme", Threshold: 100, Cap: 101, Action: rules.ActionReport,
			SpamRate: rate5, HamCap: rate5.HamCap(100), OutboundOnly: true, Items: items}
		res, err := s.Ingest(context.Background(), []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		return res[0]
	}
	var items []Item
	for i := range 10 {
		items = append(items, spam(fmt.Sprint("s", i), t0))
	}
	if r := run(items...); r.Crossing != rules.ActionReport || r.Rule != "spam_rate" {
		t.Fatalf("first: %+v", r)
	}
	if r := run(spam("s10", t0)); r.Crossing != "" {
		t.Fatalf("reported again while the rule holds: %+v", r)
	}
	var hams []Item
	for i := range 300 {
		hams = append(hams, ham(fmt.Sprint("h", i), t0))
	}
	if r := run(hams...); r.Crossing != "" { // 11 in 311: 3.5%, no longer holds
		t.Fatalf("ham crossed: %+v", r)
	}
	var more []Item
	for i := 11; i < 30; i++ {
		more = append(more, spam(fmt.Sprint("s", i), t0))
	}
	if r := run(more...); r.Crossing != rules.ActionReport { // 30 in 330: 9%
		t.Fatalf("the next crossing was not reported: %+v", r)
	}
}

// The rate rule costs a small, fixed number of commands per account and
// batch, whatever the number of its events (statistics apart: they are
// written about once a second for every account at once).
func TestSpamRateCostDoesNotGrowPerEvent(t *testing.T) {
	rdb := testutil.PrivateRedis(t)
	s := New(rdb, "cost")
	cost := func(account string, n, from int) (int, map[string]int) {
		// at most 5% spam, and at least the minimum: every batch reads
		// the window's directions, and none crosses; 20 events hold one,
		// whose window is inline (ingest.lua's INLINE), the others more
		items := mix(fmt.Sprint(account, from), n, n/25+1, t0)
		rate := rules.SpamRate{PPM: rate5.PPM, MinSpam: 1}
		b := Batch{Account: account, Company: "acme", Threshold: 5000, Cap: 5001, Action: rules.ActionSuspend,
			SpamRate: rate, HamCap: rate.HamCap(5000), Items: items}
		before := commandCalls(t, rdb)
		res, err := s.Ingest(context.Background(), []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0,
			NewID: func() string { return NewID(t0) }, Stats: s.NewStats(0)}) // statistics apart
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		d, total := diff(commandCalls(t, rdb), before)
		return total, d
	}
	for _, phase := range []struct {
		name string
		from int
	}{{"new account", 0}, {"existing account", 1}} {
		n20, d20 := cost("twenty@example.com", 20, phase.from)
		n200, d200 := cost("hundreds@example.com", 200, phase.from)
		n2000, d2000 := cost("thousands@example.com", 2000, phase.from)
		t.Logf("%s: %d %v; %d %v; %d %v", phase.name, n20, d20, n200, d200, n2000, d2000)
		// (one counting event reads what a crossing would, first: the
		// one-event path adds it at once)
		if n200 != n2000 || n20 > n200 || max(n20, n200, n2000) > 14 {
			t.Fatalf("%s: batches of 20, 200 and 2000 events cost %d, %d and %d commands", phase.name, n20, n200, n2000)
		}
	}
}
