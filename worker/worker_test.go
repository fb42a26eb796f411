package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// noPublish fails the test if the worker publishes: the batches here
// cross no threshold.
type noPublish struct{ t *testing.T }

func (p noPublish) PublishAccountEvents(context.Context, []*events.AccountEvent, [][]byte) []error {
	p.t.Error("an account event was published")
	return nil
}

// acme is a store on the shared Redis under a prefix of the test's own,
// and a directory of one company, acme, with the domain example.com.
func acme(t *testing.T) (*store.Store, *companies.Directory) {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	dir, err := companies.New(nil, prefix, []companies.Company{{ID: "acme", Domains: []string{"example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	return store.New(rdb, prefix), dir
}

// TestStatisticsWrittenAtClose: statistics-only events wait in the worker
// until a flush (a second after the last, an idle fetch, or Close), and
// Close writes what is held; the counting events of the same batches are
// in Redis at once.
func TestStatisticsWrittenAtClose(t *testing.T) {
	ctx := context.Background()
	st, dir := acme(t)
	w, err := New(Options{
		Store: st, Directory: dir, Publisher: noPublish{t},
		Policy: func() Policy {
			return Policy{Window: 24 * time.Hour, FutureSkew: 5 * time.Minute, Threshold: 50,
				Directions: rules.Directions, Verdicts: []rules.Verdict{rules.Spam}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// no background flush during the test: the last one was "just now"
	w.lastFlush.Store(time.Now().Add(time.Hour).UnixNano())
	now := time.Now()
	verdict := func(id, verdict string) Event {
		v := &events.Verdict{ID: id, Time: now, Direction: rules.Outbound, Account: "alice@example.com", Verdict: rules.Verdict(verdict), Source: "rspamd"}
		return Event{Verdict: v}
	}
	for i := range 3 {
		errs := w.Process(ctx, []Event{verdict(fmt.Sprint("ham-", i), "ham"), verdict(fmt.Sprint("spam-", i), "spam")})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	counts := func() *store.Counts {
		c, err := st.Counts(ctx, "alice@example.com", store.CountQuery{Window: 24 * time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := counts()
	if c.Counting.Total != 3 {
		t.Fatalf("counting %d, want the 3 spam at once", c.Counting.Total)
	}
	if c.Other.Total != 0 {
		t.Fatalf("statistics %d before any flush, want 0 (gathered, not yet written)", c.Other.Total)
	}
	w.Close(ctx)
	if c := counts(); c.Other.Total != 3 || c.Other.ByVerdict[rules.Outbound][rules.Ham] != 3 {
		t.Fatalf("statistics after Close %+v, want the 3 ham", c.Other)
	}
}

// TestSenderTally: the senders of events counted now go to the account's
// sender tally at the next flush; those of statistics-only events and of
// redelivered ones (duplicates) do not, and events without a sender
// leave nothing to write.
func TestSenderTally(t *testing.T) {
	ctx := context.Background()
	st, dir := acme(t)
	pol := Policy{Window: 24 * time.Hour, FutureSkew: 5 * time.Minute, Threshold: 50,
		Directions: rules.Directions, Verdicts: []rules.Verdict{rules.Spam}}
	w, err := New(Options{Store: st, Directory: dir, Publisher: noPublish{t}, Policy: func() Policy { return pol }})
	if err != nil {
		t.Fatal(err)
	}
	w.lastFlush.Store(time.Now().Add(time.Hour).UnixNano()) // no background flush
	now := time.Now().Truncate(time.Second)
	ev := func(id, verdict string, sender *events.Sender) Event {
		return Event{Verdict: &events.Verdict{ID: id, Time: now, Direction: rules.Outbound, Account: "alice@example.com",
			Verdict: rules.Verdict(verdict), Sender: sender}}
	}
	process := func(evs ...Event) {
		t.Helper()
		for _, err := range w.Process(ctx, evs) {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Without senders: nothing held.
	process(ev("plain-1", "spam", nil), ev("plain-2", "ham", nil))
	if n := w.senders.Len(); n != 0 {
		t.Fatalf("%d sender entries held for events without a sender", n)
	}
	thief := &events.Sender{IP: "203.0.113.9", Login: "alice@example.com"}
	batch := []Event{ev("s-1", "spam", thief), ev("s-2", "spam", thief), ev("h-1", "ham", &events.Sender{IP: "192.0.2.1"})}
	process(batch...)
	process(batch...) // redelivered: duplicates, and ham again
	process(ev("s-3", "spam", &events.Sender{IP: "198.51.100.7"}))
	w.Close(ctx)
	got, err := st.Senders(ctx, "alice@example.com", now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("senders %+v, want the two of counted events", got)
	}
	bySender := map[string]int{}
	for _, s := range got {
		bySender[s.IP+" "+s.Login] = s.Count
		if !s.Last.Equal(now.UTC()) {
			t.Errorf("%+v: last seen %s, want the event's time %s", s, s.Last, now.UTC())
		}
	}
	if bySender["203.0.113.9 alice@example.com"] != 2 || bySender["198.51.100.7 "] != 1 {
		t.Fatalf("tally %v, want 2 and 1", bySender)
	}
}

// failingStore fails every Ingest with err.
type failingStore struct {
	*store.Store
	err error
}

func (s failingStore) Ingest(context.Context, []store.Batch, store.IngestParams) ([]store.Result, error) {
	return nil, s.err
}

// TestIngestErrorKeepsCause: when the store round trip fails, every event
// of the batch is transient and its error still wraps the store's error.
func TestIngestErrorKeepsCause(t *testing.T) {
	cause := &store.PermanentError{Err: errors.New("ERR script")}
	st, dir := acme(t)
	w, err := New(Options{
		Store: failingStore{st, cause}, Directory: dir, Publisher: noPublish{t},
		Policy: func() Policy {
			return Policy{Window: 24 * time.Hour, Threshold: 5, Directions: rules.Directions, Verdicts: []rules.Verdict{rules.Spam}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	v := &events.Verdict{ID: "x", Time: time.Now(), Direction: rules.Outbound, Account: "alice@example.com", Verdict: rules.Spam, Source: "rspamd"}
	errs := w.Process(context.Background(), []Event{{Verdict: v}})
	if len(errs) != 1 || !errors.Is(errs[0], ErrTransient) || !errors.Is(errs[0], cause) {
		t.Fatalf("errs = %v; want one error wrapping ErrTransient and the store's error", errs)
	}
}

// failPublish refuses every account event, as a JetStream that is down:
// a crossing stays in the account's outbox and its events are
// redelivered, which is all these tests need to see it.
type failPublish struct{}

func (failPublish) PublishAccountEvents(_ context.Context, evs []*events.AccountEvent, _ [][]byte) []error {
	errs := make([]error, len(evs))
	for i := range errs {
		errs[i] = errors.New("jetstream down")
	}
	return errs
}

// rateRig is a store under its own prefix, a test clock, and workers
// with a spam-rate rule (5%, at least 3 spam; threshold 10) on it, as
// several aupd processes share one Redis.
type rateRig struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	dir *companies.Directory
	clk *testutil.Clock
	n   int // events made so far, for their ids
}

func newRateRig(t *testing.T) *rateRig {
	st, dir := acme(t)
	return &rateRig{t: t, ctx: context.Background(), st: st, dir: dir, clk: testutil.NewClock(time.Now().Truncate(time.Minute))}
}

// worker is one more process's worker.
func (r *rateRig) worker() *Worker {
	w, err := New(Options{
		Store: r.st, Directory: r.dir, Publisher: failPublish{}, Now: r.clk.Now,
		Policy: func() Policy {
			return Policy{Window: 24 * time.Hour, FutureSkew: 5 * time.Minute, Threshold: 10, Mode: rules.ModeEnforce,
				Directions: []rules.Direction{rules.Outbound}, Verdicts: []rules.Verdict{rules.Spam},
				SpamRate: rules.SpamRate{PPM: rules.RatePPM(0.05), MinSpam: 3}}
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return w
}

// verdicts are k outbound verdicts of the account, now.
func (r *rateRig) verdicts(account, verdict string, k int) []Event {
	var evs []Event
	for range k {
		r.n++
		evs = append(evs, Event{Verdict: &events.Verdict{ID: fmt.Sprint("ev-", r.n), Time: r.clk.Now(), Direction: rules.Outbound,
			Account: account, Verdict: rules.Verdict(verdict), Source: "rspamd"}})
	}
	return evs
}

// process has w apply evs, and returns how many it did not acknowledge.
func (r *rateRig) process(w *Worker, evs []Event) (failed int) {
	for _, err := range w.Process(r.ctx, evs) {
		if err != nil {
			failed++
		}
	}
	return failed
}

// crossed is the rule of the account's last crossing ("": none).
func (r *rateRig) crossed(account string) string {
	a, err := r.st.Account(r.ctx, account)
	if err != nil {
		r.t.Fatal(err)
	}
	if a.LastAUP == nil {
		return ""
	}
	return a.LastAUP.Rule
}

// TestSpamRateStandsAsideWithoutHam: the spam-rate rule judges a share of
// outbound mail, so it acts only while outbound ham arrives (one within
// the last hour); otherwise a filter that reports only spam would make
// every share 100%. Without ham the spam count alone decides; the first
// batch with ham, anyone's, brings the rule back; an hour without ham
// sets it aside again. aupd_spam_rate_ham_feed says which.
func TestSpamRateStandsAsideWithoutHam(t *testing.T) {
	r := newRateRig(t)
	w := r.worker()
	clk, crossed := r.clk, r.crossed
	verdicts := r.verdicts
	process := func(evs []Event) int { return r.process(w, evs) }
	feed := func(want float64) {
		t.Helper()
		var m dto.Metric
		if err := w.metrics.hamFeed.Write(&m); err != nil || m.GetGauge().GetValue() != want {
			t.Errorf("aupd_spam_rate_ham_feed %v (%v); want %v", m.GetGauge().GetValue(), err, want)
		}
	}

	// No ham yet: 4 spam of 4 is 100%, but the rule stands aside.
	if failed := process(verdicts("alice@example.com", "spam", 4)); failed != 0 || crossed("alice@example.com") != "" {
		t.Fatalf("without ham: %d failed, crossed %q; want nothing", failed, crossed("alice@example.com"))
	}
	feed(0)
	// bob's ham is the feed: alice's next spam crosses the rate (5 of 5).
	if failed := process(append(verdicts("bob@example.com", "ham", 50), verdicts("alice@example.com", "spam", 1)...)); failed != 1 {
		t.Fatalf("with ham: %d events not acked; want alice's crossing one, waiting for its publish", failed)
	}
	if r := crossed("alice@example.com"); r != rules.RuleSpamRate {
		t.Fatalf("alice crossed %q; want %s", r, rules.RuleSpamRate)
	}
	feed(1)
	// An hour without ham: carol's 4 spam of 4 cross nothing.
	clk.Add(time.Hour + time.Minute)
	if failed := process(verdicts("carol@example.com", "spam", 4)); failed != 0 || crossed("carol@example.com") != "" {
		t.Fatalf("an hour after the last ham: %d failed, crossed %q; want nothing", failed, crossed("carol@example.com"))
	}
	feed(0)
	// The count still decides: carol's 11th spam crosses the threshold
	// (the batch's events of the account wait for the crossing's publish).
	if failed := process(verdicts("carol@example.com", "spam", 7)); failed != 7 || crossed("carol@example.com") != rules.RuleSpamCount {
		t.Fatalf("the count without ham: %d failed, crossed %q; want %s", failed, crossed("carol@example.com"), rules.RuleSpamCount)
	}
}

// TestHamFeedIsSharedByTheProcesses: the stream spreads events among the
// processes, so one may get an account's spam while only another gets
// ham. Each tells Redis when it last applied ham, with its statistics'
// flush, and learns when any did: the spam-rate rule then acts alike in
// every process.
func TestHamFeedIsSharedByTheProcesses(t *testing.T) {
	ctx := context.Background()
	r := newRateRig(t)
	newWorker := func() *Worker {
		w := r.worker()
		w.lastFlush.Store(time.Now().Add(time.Hour).UnixNano()) // flushes only when the test asks
		return w
	}
	a, b := newWorker(), newWorker()
	clk, verdicts, failed, crossed := r.clk, r.verdicts, r.process, r.crossed
	// a gets bob's ham; b, which saw none, lets alice's 4 spam of 4 by.
	if k := failed(a, verdicts("bob@example.com", "ham", 50)); k != 0 {
		t.Fatalf("bob's ham: %d failed", k)
	}
	if k := failed(b, verdicts("alice@example.com", "spam", 4)); k != 0 || crossed("alice@example.com") != "" {
		t.Fatalf("before the feed is shared: %d failed, alice crossed %q; want nothing", k, crossed("alice@example.com"))
	}
	// a's flush tells Redis, b's learns it: alice's next spam crosses the
	// rate in b (5 of 5).
	a.Idle(ctx)
	b.Idle(ctx)
	if k := failed(b, verdicts("alice@example.com", "spam", 1)); k != 1 || crossed("alice@example.com") != rules.RuleSpamRate {
		t.Fatalf("after the feed is shared: %d failed, alice crossed %q; want %s", k, crossed("alice@example.com"), rules.RuleSpamRate)
	}
	// An hour later neither saw ham: both stand aside (the shared time is
	// the last ham's, not the last flush's).
	clk.Add(time.Hour + time.Minute)
	a.Idle(ctx)
	b.Idle(ctx)
	if k := failed(a, verdicts("carol@example.com", "spam", 4)); k != 0 || crossed("carol@example.com") != "" {
		t.Fatalf("an hour after the last ham: %d failed, carol crossed %q; want nothing", k, crossed("carol@example.com"))
	}
}
