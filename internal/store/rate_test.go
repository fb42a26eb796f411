package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

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
