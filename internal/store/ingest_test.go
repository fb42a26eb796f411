package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func newStore(t *testing.T) *Store {
	rdb, prefix := testutil.Redis(t)
	return New(rdb, prefix, WithClock(func() time.Time { return t0 }))
}

func spam(id string, at time.Time) Item {
	return Item{ID: id, Time: at, Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true}
}

func ingest(t *testing.T, s *Store, now time.Time, threshold int, items ...Item) Result {
	t.Helper()
	b := Batch{Account: "alice@example.com", Company: "acme", Threshold: threshold, Cap: 100, Action: rules.ActionSuspend, Items: items}
	res, err := s.Ingest(context.Background(), []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: now, NewID: func() string { return NewID(now) }})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	return res[0]
}

func outcomes(r Result) string {
	b := make([]byte, len(r.Outcomes))
	for i, o := range r.Outcomes {
		b[i] = byte(o)
	}
	return string(b)
}

func TestIngestCountsEachIDOnce(t *testing.T) {
	s := newStore(t)
	r := ingest(t, s, t0, 10, spam("a", t0), spam("b", t0), spam("a", t0))
	if got := outcomes(r); got != "ccd" {
		t.Fatalf("outcomes %q, want ccd", got)
	}
	if r.Count != 2 {
		t.Fatalf("count %d, want 2", r.Count)
	}
	// A redelivery of the whole batch counts nothing again.
	r = ingest(t, s, t0.Add(time.Minute), 10, spam("a", t0), spam("b", t0))
	if got := outcomes(r); got != "dd" || r.Count != 2 {
		t.Fatalf("redelivery: outcomes %q count %d", got, r.Count)
	}
	// Ham is statistics only: never stored per event, never counted; a
	// batch of it alone does not read the window (count -1), and with a
	// counting event it leaves the count as it was.
	ham := Item{ID: "a", Time: t0, Kind: rules.KindOf(rules.Outbound, rules.Ham)}
	if r = ingest(t, s, t0, 10, ham); outcomes(r) != "s" || r.Count != -1 {
		t.Fatalf("ham: %q count %d", outcomes(r), r.Count)
	}
	if r = ingest(t, s, t0, 10, ham, spam("a", t0)); outcomes(r) != "sd" || r.Count != 2 {
		t.Fatalf("ham and a duplicate: %q count %d", outcomes(r), r.Count)
	}
	// Ingest creates no account record.
	if a, err := s.Account(context.Background(), "alice@example.com"); err != nil || a.Exists {
		t.Fatalf("verdicts alone made a record: %+v %v", a, err)
	}
}

func TestIngestWindowEdges(t *testing.T) {
	s := newStore(t)
	now := t0
	r := ingest(t, s, now, 10,
		spam("exactly-24h", now.Add(-day)),
		spam("just-inside", now.Add(-day+time.Millisecond)),
		spam("future-within-skew", now.Add(2*time.Minute)),
		spam("older", now.Add(-25*time.Hour)),
	)
	if got := outcomes(r); got != "lccl" {
		t.Fatalf("outcomes %q, want lccl", got)
	}
	if r.Count != 2 {
		t.Fatalf("count %d, want 2", r.Count)
	}
	// One millisecond later the oldest counted event leaves the window.
	r = ingest(t, s, now.Add(time.Millisecond), 10)
	if r.Count != 1 {
		t.Fatalf("count after 1ms %d, want 1", r.Count)
	}
}

func TestIngestOutOfOrder(t *testing.T) {
	s := newStore(t)
	ingest(t, s, t0, 10, spam("3", t0.Add(-time.Hour)))
	ingest(t, s, t0, 10, spam("1", t0.Add(-3*time.Hour)))
	r := ingest(t, s, t0, 10, spam("2", t0.Add(-2*time.Hour)), spam("1", t0.Add(-3*time.Hour)))
	if outcomes(r) != "cd" || r.Count != 3 {
		t.Fatalf("outcomes %q count %d", outcomes(r), r.Count)
	}
	// At t0+22h30m the event of t0-3h is 25.5h old and leaves; t0-2h
	// (24.5h) leaves too; t0-1h (23.5h) stays.
	if r = ingest(t, s, t0.Add(22*time.Hour+30*time.Minute), 10); r.Count != 1 {
		t.Fatalf("count %d, want 1", r.Count)
	}
}

func TestIngestSuspendsOnceWhenCountExceedsThreshold(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	r := ingest(t, s, t0, 3, spam("1", t0), spam("2", t0), spam("3", t0))
	if r.Crossing != "" {
		t.Fatalf("count 3 with threshold 3 must not suspend, got %q", r.Crossing)
	}
	in := Item{ID: "4", Time: t0, Kind: rules.KindOf(rules.Complaint, rules.Phish), Counting: true}
	r = ingest(t, s, t0, 3, in)
	if r.Crossing != rules.ActionSuspend || r.ID == "" || r.Count != 4 || len(r.Pending) != 1 {
		t.Fatalf("crossing: %+v", r)
	}
	r2 := ingest(t, s, t0, 3, spam("5", t0))
	if r2.Crossing != "" || len(r2.Pending) != 1 {
		t.Fatalf("second crossing reported: %+v", r2)
	}
	a, err := s.Account(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if a.AUP != r.ID {
		t.Fatalf("AUP id %q, want %q", a.AUP, r.ID)
	}
	for _, svc := range rules.AUPServices {
		sus, ok := a.Suspensions[svc]
		if !ok || sus.ID != r.ID || sus.Reason != rules.ReasonAUPViolation || sus.Actor != "aupd" {
			t.Fatalf("service %s: %+v %v", svc, sus, ok)
		}
	}
	if len(a.Suspensions) != 2 {
		t.Fatalf("suspensions %v, want send and webmail_send only", a.Suspended())
	}
	l := a.LastAUP
	if l == nil || l.Count != 4 || l.Threshold != 3 || l.Counts["outbound"] != 3 || l.Counts["complaint"] != 1 || l.Counts["inbound"] != 0 {
		t.Fatalf("last AUP record %+v", l)
	}
	if !l.WindowEnd.Equal(t0) || !l.WindowStart.Equal(t0.Add(-day)) {
		t.Fatalf("window %s..%s", l.WindowStart, l.WindowEnd)
	}
	// The decision function now denies sending but allows reading.
	v := a.View()
	if d := rules.Decide(v, rules.SendSMTP, t0); d.Result != rules.Deny {
		t.Fatalf("send: %+v", d)
	}
	if d := rules.Decide(v, rules.LoginIMAP, t0); d.Result != rules.Allow {
		t.Fatalf("imap: %+v", d)
	}
	h, err := s.History(ctx, "alice@example.com", 0, 10)
	if err != nil || len(h) != 1 || h[0].Action != "suspended" || h[0].ID != r.ID || !h[0].Time.Equal(t0) ||
		!slices.Equal(h[0].Services, []string{"send", "webmail_send"}) || h[0].Note != "count 4 exceeds threshold 3" || h[0].Rule != "spam_count" {
		t.Fatalf("history %+v %v", h, err)
	}
	// The account event, rendered from the same record.
	ev, _, err := DecodeOutbox(r.Pending[0])
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != r.ID || ev.Type != "suspended" || ev.Account != "alice@example.com" || !ev.Time.Equal(t0) ||
		len(ev.Old.Suspended) != 0 || !slices.Equal(ev.New.Suspended, []string{"send", "webmail_send"}) ||
		ev.Suspension == nil || ev.Suspension.Rule != "spam_count" || ev.Suspension.Count != 4 {
		t.Fatalf("account event %+v %+v", ev, ev.Suspension)
	}
	if sus := a.Suspensions[rules.ServiceSend]; !sus.At.Equal(t0) {
		t.Fatalf("suspended at %s, want %s", sus.At, t0)
	}
}

// What aupd 0.2 wrote is still read: its crossing records (no rule) and
// its last_aup, which held the suspension alone.
func TestCrossingWrittenByEarlierVersions(t *testing.T) {
	entry := `{"crossing":{"type":"suspended","time":"2026-01-02T03:04:05.006Z","account":"a@x.example","company":"x",` +
		`"status":"active","old":[],"new":["send","webmail_send"],"suspension":{"id":"01ID","action":"suspend",` +
		`"services":["send","webmail_send"],"threshold":3,"count":4,"counts":{"outbound":4,"inbound":0,"complaint":0},` +
		`"window_start":"2026-01-01T03:04:05.006Z","window_end":"2026-01-02T03:04:05.006Z","samples":[7]}}}`
	ev, _, err := DecodeOutbox(entry)
	if err != nil || ev.ID != "01ID" || ev.Suspension.Count != 4 || !slices.Equal(ev.Suspension.Samples, []uint64{7}) {
		t.Fatalf("%+v %v", ev, err)
	}
	sus := decodeAUP(`{"id":"01ID","action":"suspend","threshold":3,"count":4,"counts":{"outbound":4}}`)
	if sus == nil || sus.ID != "01ID" || sus.Count != 4 {
		t.Fatalf("last_aup %+v", sus)
	}
}

func TestIngestRacingWorkersSuspendOnce(t *testing.T) {
	s := newStore(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var crossings []string
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				r := ingest(t, s, t0, 20, spam(fmt.Sprintf("w%d-%d", w, i), t0))
				if r.Crossing != "" {
					mu.Lock()
					crossings = append(crossings, r.ID)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(crossings) != 1 {
		t.Fatalf("%d crossings, want 1", len(crossings))
	}
	a, _ := s.Account(context.Background(), "alice@example.com")
	if a.LastAUP.Count != 21 {
		t.Fatalf("suspension recorded count %d, want 21 (the count that caused it)", a.LastAUP.Count)
	}
}

func TestReinstateClearsWindow(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var items []Item
	for i := range 4 {
		items = append(items, spam(fmt.Sprint(i), t0.Add(-time.Hour)))
	}
	first := ingest(t, s, t0, 3, items...)
	if first.Crossing != rules.ActionSuspend {
		t.Fatal("no suspension")
	}
	op, err := s.Reinstate(ctx, "alice@example.com", []rules.Service{rules.ServiceSend}, Actor{Name: "abuse-desk", Reason: "admin", Note: "password changed"})
	if err != nil || !op.Changed {
		t.Fatalf("reinstate: %v %+v", err, op)
	}
	a, _ := s.Account(ctx, "alice@example.com")
	if len(a.Suspensions) != 0 || a.AUP != "" || !a.Floor.Equal(t0) {
		t.Fatalf("after reinstate: suspended %v aup %q floor %s", a.Suspended(), a.AUP, a.Floor)
	}
	// Redeliveries of the old events and late events from before the
	// reinstatement do not count.
	r := ingest(t, s, t0.Add(time.Minute), 3, append(items, spam("late", t0.Add(-time.Second)))...)
	if r.Count != 0 || outcomes(r) != "lllll" {
		t.Fatalf("after reinstate: count %d outcomes %q", r.Count, outcomes(r))
	}
	// New events count from zero; the next crossing is a new suspension.
	var next []Item
	for i := range 4 {
		next = append(next, spam(fmt.Sprint("n", i), t0.Add(time.Minute)))
	}
	r = ingest(t, s, t0.Add(2*time.Minute), 3, next...)
	if r.Crossing != rules.ActionSuspend || r.ID == first.ID || r.Count != 4 {
		t.Fatalf("second suspension: %+v", r)
	}
	if !r2Start(t, s).Equal(t0) {
		t.Fatalf("second suspension's window starts at %s, want the reinstatement %s", r2Start(t, s), t0)
	}
	// Reinstating again is idempotent.
	if _, err := s.Reinstate(ctx, "alice@example.com", nil, Actor{Name: "x", Reason: "admin"}); err != nil {
		t.Fatal(err)
	}
	op, err = s.Reinstate(ctx, "alice@example.com", nil, Actor{Name: "x", Reason: "admin"})
	if err != nil || op.Changed {
		t.Fatalf("second reinstate changed something: %v %+v", err, op)
	}
}

func r2Start(t *testing.T, s *Store) time.Time {
	a, err := s.Account(context.Background(), "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return a.LastAUP.WindowStart
}

func TestIngestCapKeepsMinOfRealCountAndCap(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	b := Batch{Account: "bob@example.com", Threshold: 1000, Cap: 5, Action: rules.ActionSuspend}
	for i := range 8 {
		b.Items = append(b.Items, spam(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Minute-day/2)))
	}
	res, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return "x" }})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	if res[0].Count != 5 || !res[0].Capped || outcomes(res[0]) != "ccccckkk" {
		t.Fatalf("count %d capped %v outcomes %q", res[0].Count, res[0].Capped, outcomes(res[0]))
	}
	// The oldest were evicted: a redelivery of one of them cannot raise
	// the count above the cap.
	b.Items = b.Items[:1]
	res, _ = s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return "x" }})
	if res[0].Count != 5 {
		t.Fatalf("count %d after redelivery of an evicted event", res[0].Count)
	}
}

func TestIngestSamplesPreferDifferentMessages(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var items []Item
	for i, fp := range []uint32{0xaaaa, 0xaaaa, 0xaaaa, 0xbbbb, 0xaaaa, 0xcccc} {
		it := spam(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second))
		it.Fingerprint, it.Seq = fp, uint64(100+i)
		items = append(items, it)
	}
	r := ingest(t, s, t0.Add(time.Minute), 5, items...)
	if r.Crossing != rules.ActionSuspend {
		t.Fatalf("no suspension: %+v", r)
	}
	a, _ := s.Account(ctx, "alice@example.com")
	got := map[uint64]bool{}
	for _, q := range a.LastAUP.Samples {
		got[q] = true
	}
	// One of the 0xaaaa copies, plus bbbb (103) and cccc (105).
	if len(got) != 3 || !got[103] || !got[105] || !(got[100] || got[101] || got[102] || got[104]) {
		t.Fatalf("samples %v", a.LastAUP.Samples)
	}
}

func TestIngestReportModeRecordsWithoutSuspending(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	b := Batch{Account: "carol@example.com", Threshold: 1, Cap: 10, Action: rules.ActionReport,
		Items: []Item{spam("1", t0), spam("2", t0)}}
	res, _ := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return "rep1" }})
	if res[0].Crossing != rules.ActionReport || res[0].ID != "rep1" {
		t.Fatalf("%+v", res[0])
	}
	b.Items = []Item{spam("3", t0)}
	res, _ = s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return "rep2" }})
	if res[0].Crossing != "" {
		t.Fatalf("reported twice in one crossing: %+v", res[0])
	}
	a, _ := s.Account(ctx, "carol@example.com")
	if len(a.Suspensions) != 0 || a.LastAUP.Action != "report" {
		t.Fatalf("report mode suspended: %v %+v", a.Suspended(), a.LastAUP)
	}
	// The crossing ends when the window empties; the next one is reported.
	later := t0.Add(day + time.Hour)
	b.Items = []Item{spam("4", later), spam("5", later)}
	res, _ = s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: later, NewID: func() string { return "rep3" }})
	if res[0].Count != 2 || res[0].Crossing != rules.ActionReport || res[0].ID != "rep3" {
		t.Fatalf("new crossing after the window emptied: %+v", res[0])
	}
}

// TestIngestAncientEventIsLate: an event time before 1970 is outside any
// window (the packed time is signed), not a huge future time.
func TestIngestAncientEventIsLate(t *testing.T) {
	s := newStore(t)
	r := ingest(t, s, t0, 10, spam("old", time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)), spam("now", t0))
	if got := outcomes(r); got != "lc" || r.Count != 1 {
		t.Fatalf("outcomes %q count %d, want lc and 1", got, r.Count)
	}
}

// TestIngestHugeBatchOfOneAccount: the largest batch the consumer takes
// (10,000 events), all for one account, counts exactly, first on a new
// window and then on an existing one (more ids than Lua unpacks at once).
func TestIngestHugeBatchOfOneAccount(t *testing.T) {
	s := newStore(t)
	mk := func(from, n int) []Item {
		items := make([]Item, n)
		for i := range items {
			items[i] = spam(fmt.Sprintf("id-%d", from+i), t0.Add(-time.Duration(from+i)*time.Millisecond))
		}
		return items
	}
	b := Batch{Account: "alice@example.com", Company: "acme", Threshold: 20000, Cap: 30000, Action: rules.ActionSuspend, Items: mk(0, 10000)}
	p := IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }}
	for round, want := range []int{10000, 15000} {
		res, err := s.Ingest(context.Background(), []Batch{b}, p)
		if err != nil || res[0].Err != nil {
			t.Fatalf("round %d: %v %v", round, err, res[0].Err)
		}
		if res[0].Count != want {
			t.Fatalf("round %d: count %d, want %d", round, res[0].Count, want)
		}
		b.Items = mk(5000, 10000) // half of them known
	}
}

// TestIngestSamplesAcrossBatches: three samples of different messages are
// kept while they last (a fourth message does not replace one), and one
// that leaves the window makes room for the next.
func TestIngestSamplesAcrossBatches(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	ev := func(id string, fp uint32, at time.Time, seq uint64) Item {
		it := spam(id, at)
		it.Fingerprint, it.Seq = fp, seq
		return it
	}
	ingest(t, s, t0, 5, ev("a", 0xaaaa, t0.Add(-23*time.Hour-50*time.Minute), 100), ev("b", 0xbbbb, t0.Add(-time.Hour), 101), ev("c", 0xcccc, t0.Add(-time.Hour), 102))
	ingest(t, s, t0, 5, ev("d", 0xdddd, t0.Add(-30*time.Minute), 103))
	// 15 minutes later a's event has left the window: e takes its place.
	later := t0.Add(15 * time.Minute)
	if r := ingest(t, s, later, 5, ev("e", 0xeeee, later, 104)); r.Count != 4 {
		t.Fatalf("count %d, want 4 (a left the window)", r.Count)
	}
	r := ingest(t, s, later, 5, ev("f", 0xbbbb, later, 105), ev("g", 0xbbbb, later, 106))
	if r.Crossing != rules.ActionSuspend {
		t.Fatalf("no suspension: %+v", r)
	}
	a, err := s.Account(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	for _, q := range a.LastAUP.Samples {
		got[q] = true
	}
	if len(got) != 3 || !got[101] || !got[102] || !got[104] {
		t.Fatalf("samples %v, want b, c and e (101, 102, 104)", a.LastAUP.Samples)
	}
}

// TestClusterRefusalsAreRerun: the errors a Redis Cluster node gives a
// script for a key it does not serve now, in the words of Redis 7.0 and
// of later releases, send the account to a call of its own slot
// (transient); other errors of an account's part stay permanent.
func TestClusterRefusalsAreRerun(t *testing.T) {
	for _, msg := range []string{
		"ERR Script attempted to access a non local key in a cluster node script: ingest",
		"Unable to execute command 'hmget' in script because undeclared keys were accessed during rehashing of the slot",
		"Script attempted to access a slot not served",
		"Script attempted to execute a command while the cluster is down",
	} {
		err := classifyScript(msg)
		if !errors.Is(err, errMoved) || IsPermanent(err) {
			t.Errorf("%q: %v (permanent %v), want a transient slot move", msg, err, IsPermanent(err))
		}
	}
	if err := classifyScript("WRONGTYPE Operation against a key holding the wrong kind of value"); errors.Is(err, errMoved) || !IsPermanent(err) {
		t.Errorf("a key of the wrong type: %v, want permanent", err)
	}
}

// TestLeftoverWindowOfANewAddress: a window set whose state is gone
// (deleted by hand, or evicted by a Redis that should not evict) is not
// carried into the address's new count, whether or not it holds the new
// event's id, nor is it deleted when it holds nothing else; an inline
// window ignores it, and it goes when the window moves to its set.
func TestLeftoverWindowOfANewAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		next Item
	}{
		{"another id", spam("new", t0.Add(time.Minute))},
		{"an id it holds", spam("old-1", t0.Add(time.Minute))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			ctx := context.Background()
			rdb := s.rdb.(*redis.Client)
			var old []Item // more than an inline window holds: a set
			for i := range 8 {
				old = append(old, spam(fmt.Sprint("old-", i), t0.Add(-time.Duration(i)*time.Minute)))
			}
			ingest(t, s, t0, 50, old...)
			if err := rdb.Del(ctx, s.key("alice@example.com", sufState)).Err(); err != nil {
				t.Fatal(err)
			}
			if r := ingest(t, s, t0.Add(time.Minute), 50, tc.next); r.Count != 1 {
				t.Errorf("count %d, want 1 (the leftover window is not counted)", r.Count)
			}
			win := windowOf(t, rdb, s, "alice@example.com")
			if len(win) != 1 {
				t.Errorf("window %q, want the new event alone", win)
			}
			// The next events count on from there, inline, then in a set
			// of their own.
			if r := ingest(t, s, t0.Add(2*time.Minute), 50, spam("next", t0.Add(2*time.Minute))); r.Count != 2 {
				t.Errorf("then count %d, want 2", r.Count)
			}
			var more []Item
			for i := range 6 {
				more = append(more, spam(fmt.Sprint("more-", i), t0.Add(2*time.Minute)))
			}
			if r := ingest(t, s, t0.Add(3*time.Minute), 50, more...); r.Count != 8 {
				t.Errorf("then count %d, want 8", r.Count)
			}
			if n := rdb.ZCard(ctx, s.key("alice@example.com", sufWindow)).Val(); n != 8 || rdb.HExists(ctx, s.key("alice@example.com", sufState), fieldInline).Val() {
				t.Errorf("the window moved to a set of %d members, want the 8 counted, and none inline", n)
			}
		})
	}
	// A window that holds only the new event's id stays as it is.
	s := newStore(t)
	rdb := s.rdb.(*redis.Client)
	ingest(t, s, t0, 50, spam("only", t0))
	if err := rdb.Del(context.Background(), s.key("alice@example.com", sufState)).Err(); err != nil {
		t.Fatal(err)
	}
	if r := ingest(t, s, t0.Add(time.Minute), 50, spam("only", t0)); r.Count != 1 {
		t.Errorf("the same event again: count %d, want 1", r.Count)
	}
}
