package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aupd/aupd/internal/replay"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestReplayMatchesLive publishes known events one at a time (each
// processed before the next, so that the live worker's counts are per
// event too), lets the live worker decide at the provider's threshold (5),
// reinstates one account, then replays: at threshold 5 the replay
// decides exactly what the worker did; at 3 and 2 it differs as the rule
// says it must. The durable consumer is untouched.
func TestReplayMatchesLive(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	h := start(t, withIngestTokens(t, testConfig(t, ns.ClientURL(), prefix)))
	ctx := context.Background()
	now := time.Now()
	n := 0
	at := func() time.Time { return now.Add(-time.Duration(40-n) * time.Second) }
	send := func(account, verdict string) {
		t.Helper()
		n++
		ev := verdict4(fmt.Sprintf("rp-%d", n), account, verdict, at())
		a := h.post("/api/v1/ingest/verdicts", tokPublisher, "application/json", ev)
		if a.status != 202 {
			t.Fatalf("ingest: %d %s", a.status, a.body)
		}
		// Wait until the worker acked this very event, so that it is
		// processed alone, as the replay takes it.
		seq := a.ingest(t).Results[0].Seq
		testutil.Eventually(t, 30*time.Second, func() bool { return durableInfo(t, h).ackFloor >= seq }, "event %d not processed", seq)
	}
	for range 7 {
		send("g1@globex.test", "spam") // live: suspended at 6
	}
	for range 4 {
		send("g2@globex.test", "spam") // live: never (4 <= 5)
	}
	send("g2@globex.test", "ham")
	send("g2@globex.test", "ham")
	for range 6 {
		send("g3@globex.test", "spam") // live: suspended at 6
	}
	// g3 is reinstated, which resets its window; 3 more do not cross 5.
	if _, err := h.st.Reinstate(ctx, "g3@globex.test", nil, store.Actor{Name: "test", Reason: rules.ReasonAdmin, Note: "replay test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.FlushOutbox(ctx, "g3@globex.test", jsPublisher{h.js}); err != nil {
		t.Fatal(err)
	}
	// The events after it are later than the reinstatement (a second
	// ahead, well within the future skew).
	at = func() time.Time { return time.Now().Add(time.Second) }
	for range 3 {
		send("g3@globex.test", "spam")
	}
	// A copy of a g1 event published again without Nats-Msg-Id: stored
	// twice in the stream, counted once by the worker and by the replay.
	h.publish("aup.verdict.outbound", verdict4("rp-1", "g1@globex.test", "spam", now.Add(-39*time.Second)), "")
	h.drained()

	cons := durableInfo(t, h)
	token := tokAdminIngest
	get := func(q string) replay.Report { t.Helper(); return getReplay(t, h, token, q) }
	type dec struct {
		account string
		counts  []int
	}
	summary := func(r replay.Report, actual bool) []dec {
		var out []dec
		for _, a := range r.Accounts {
			cs := a.Would
			if actual {
				cs = a.Actual
			}
			if len(cs) == 0 {
				continue
			}
			d := dec{account: a.Account}
			for _, c := range cs {
				d.counts = append(d.counts, c.Count)
			}
			out = append(out, d)
		}
		return out
	}

	// The same threshold as the live worker: the same decisions.
	r5 := get("threshold=5&since=1h")
	if r5.Events != n+1 {
		t.Fatalf("replay read %d events, want %d", r5.Events, n+1)
	}
	live, would := summary(r5, true), summary(r5, false)
	if fmt.Sprint(live) != "[{g1@globex.test [6]} {g3@globex.test [6]}]" || fmt.Sprint(would) != fmt.Sprint(live) {
		t.Fatalf("at the live threshold: would %v, live %v", would, live)
	}
	for _, a := range r5.Accounts {
		if d := a.Would[0].At.Sub(a.Actual[0].At); d > 5*time.Second || d < -5*time.Second {
			t.Errorf("%s: would at %s, was at %s", a.Account, a.Would[0].At, a.Actual[0].At)
		}
	}
	// Lower thresholds: earlier, more, and again after the reinstatement.
	if got := fmt.Sprint(summary(get("threshold=3"), false)); got != "[{g1@globex.test [4]} {g2@globex.test [4]} {g3@globex.test [4]}]" {
		t.Fatalf("at 3: %s", got)
	}
	if got := fmt.Sprint(summary(get("threshold=2&since=2h"), false)); got != "[{g1@globex.test [3]} {g2@globex.test [3]} {g3@globex.test [3 3]}]" {
		t.Fatalf("at 2: %s", got)
	}
	// Scoped to a company with no such accounts: nothing.
	if r := get("threshold=2&company=acme"); len(r.Accounts) != 0 {
		t.Fatalf("acme: %+v", r.Accounts)
	}
	// A company's token replays its own company only.
	token = tokAcmeAbuse
	if r := get("threshold=2"); len(r.Accounts) != 0 || r.Company != "acme" {
		t.Fatalf("acme token: %+v", r)
	}
	req, _ := http.NewRequest("GET", "http://"+h.info.HTTPAddr+"/api/v1/replay?threshold=2&company=globex", nil)
	req.Header.Set("Authorization", "Bearer "+tokAcmeAbuse)
	if a := h.do(req); a.status != 403 {
		t.Fatalf("acme token for globex: %d %s", a.status, a.body)
	}
	// The live consumer did not move, and nothing was acted on.
	if after := durableInfo(t, h); after != cons {
		t.Fatalf("durable consumer changed: %+v -> %+v", cons, after)
	}
	if a, err := h.st.Account(ctx, "g2@globex.test"); err != nil || len(a.Suspended()) != 0 {
		t.Fatalf("g2 after replays: %v %v", a, err)
	}
	// Bad requests.
	for _, q := range []string{"", "threshold=0", "threshold=x", "threshold=3&since=-1h", "threshold=3&since=9999h"} {
		req, _ := http.NewRequest("GET", "http://"+h.info.HTTPAddr+"/api/v1/replay?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+tokAdminIngest)
		if a := h.do(req); a.status != 400 {
			t.Errorf("replay ?%s: %d %s", q, a.status, a.body)
		}
	}
}

type consState struct{ delivered, ackFloor uint64 }

func durableInfo(t *testing.T, h *harness) consState {
	t.Helper()
	c, err := h.js.Consumer(context.Background(), h.cfg.NATS.Verdicts.Name, h.cfg.NATS.Consumer.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return consState{info.Delivered.Stream, info.AckFloor.Stream}
}

func verdict4(id, account, v string, at time.Time) []byte {
	return verdict(id, "outbound", account, v, at)
}

// TestReplaySpamRateMatchesLive runs the live worker with the spam-rate
// rule on (over 25% of outbound messages with at least 3 spam, the
// threshold 6 its backstop; Acme: over 50% with at least 2, threshold 3)
// over known events, each spam event processed alone, then replays: at
// the live settings the replay decides exactly what the worker did (the
// same accounts, rule, count and figures); at a stricter rate it crosses
// more; with the rate off only the count crosses.
func TestReplaySpamRateMatchesLive(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	cfg.AUP.Threshold = 6
	cfg.AUP.SpamRate = rules.SpamRateSetting{Rate: 0.25, MinSpam: 3}
	cfg.Companies[0].SpamRate = &rules.SpamRateSetting{Rate: 0.5, MinSpam: 2} // acme, threshold 3
	h := start(t, withIngestTokens(t, cfg))
	ctx := context.Background()
	now := time.Now()
	n := 0
	at := func() time.Time { return now.Add(-time.Duration(400-n) * time.Second) }
	// post posts events as one NDJSON body and waits until the worker
	// acked the last, so that what comes next is processed after them.
	post := func(evs ...[]byte) {
		t.Helper()
		a := h.post("/api/v1/ingest/verdicts", tokPublisher, "application/x-ndjson", bytes.Join(evs, []byte("\n")))
		r := a.ingest(t)
		if a.status != 202 || r.Accepted != len(evs) {
			t.Fatalf("ingest: %d %s", a.status, a.body)
		}
		seq := r.Results[len(r.Results)-1].Seq
		testutil.Eventually(t, 30*time.Second, func() bool { return durableInfo(t, h).ackFloor >= seq }, "event %d not processed", seq)
	}
	event := func(dir, account, v string) []byte {
		n++
		return verdict(fmt.Sprintf("sr-%d", n), dir, account, v, at())
	}
	// spam posts k outbound spam events one at a time: each is
	// processed alone, as the replay takes it.
	spam := func(account string, k int) {
		for range k {
			post(event("outbound", account, "spam"))
		}
	}
	// ham posts k outbound ham events at once (ham cannot cross), and
	// returns them.
	ham := func(account string, k int) [][]byte {
		evs := make([][]byte, k)
		for i := range evs {
			evs[i] = event("outbound", account, "ham")
		}
		post(evs...)
		return evs
	}

	ham("r1@globex.test", 4)
	// Inbound ham is not the rate's: 3 in 7 crosses (3 in 17 would not).
	var inHam [][]byte
	for range 10 {
		inHam = append(inHam, event("inbound", "r1@globex.test", "ham"))
	}
	post(inHam...)
	spam("r1@globex.test", 3) // 3 in 7: the rate, at 3
	ham("r2@globex.test", 13)
	spam("r2@globex.test", 3) // 3 in 16 (19%): nothing
	ham("r3@globex.test", 20)
	spam("r3@globex.test", 7) // the count at 7; ham kept: HamCap(6) = 18, and 7 in 25 is over 25%
	ham("r4@globex.test", 9)
	spam("r4@globex.test", 4) // 3 in 12 is 25%, not over; 4 in 13 crosses
	// Ham stored twice in the stream (published again without
	// Nats-Msg-Id) counts once: 3 in 8 crosses (3 in 13 would not).
	for _, ev := range ham("r5@globex.test", 5) {
		ack, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "aup.verdict.outbound", Data: ev})
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, func() bool { return durableInfo(t, h).ackFloor >= ack.Sequence }, "copy not processed")
	}
	spam("r5@globex.test", 3)
	// Inbound spam counts toward the threshold, not the rate: the rate
	// crosses at the third outbound spam, with a count of 6.
	ham("r6@globex.test", 4)
	for range 3 {
		post(event("inbound", "r6@globex.test", "spam"))
	}
	spam("r6@globex.test", 3)
	ham("a1@example.com", 3)
	spam("a1@example.com", 4) // Acme's rule: 3 in 6 is 50%, not over; the count (3) crosses at 4
	// r4 is reinstated: the ham before no longer counts, and 3 spam are
	// 100%. The events after it are a second ahead of the reinstatement.
	if _, err := h.st.Reinstate(ctx, "r4@globex.test", nil, store.Actor{Name: "test", Reason: rules.ReasonAdmin, Note: "replay test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.FlushOutbox(ctx, "r4@globex.test", jsPublisher{h.js}); err != nil {
		t.Fatal(err)
	}
	at = func() time.Time { return time.Now().Add(time.Second) }
	spam("r4@globex.test", 3)
	h.drained()

	get := func(q string) replay.Report { t.Helper(); return getReplay(t, h, tokAdminIngest, q) }
	const wantLive = "r1@globex.test [spam_rate 3 (3/4)]\n" +
		"r3@globex.test [spam_count 7]\n" +
		"r4@globex.test [spam_rate 4 (4/9) spam_rate 3 (3/0)]\n" +
		"r5@globex.test [spam_rate 3 (3/5)]\n" +
		"r6@globex.test [spam_rate 6 (3/4)]\n"
	// At the live settings: the live threshold and each account's live
	// rate, or the live rate and each account's live threshold.
	for _, q := range []string{"company=globex&threshold=6&since=1h", "company=globex&rate=0.25&min_spam=3&since=1h"} {
		r := get(q)
		if live := decisions(r, true); live != wantLive {
			t.Fatalf("live decisions:\n%swant\n%s", live, wantLive)
		}
		if would := decisions(r, false); would != wantLive {
			t.Fatalf("replay %s:\n%swant what the worker did:\n%s", q, would, wantLive)
		}
		sameCrossings(t, r)
	}
	const wantAcme = "a1@example.com [spam_count 4]\n"
	if r := get("company=acme&threshold=3"); decisions(r, true) != wantAcme || decisions(r, false) != wantAcme {
		t.Fatalf("acme at its live settings: would\n%slive\n%s", decisions(r, false), decisions(r, true))
	} else {
		sameCrossings(t, r)
	}

	// A stricter rate: more crossings, and earlier; the report says what
	// it tried.
	r := get("rate=0.1&min_spam=3&since=1h")
	if r.Threshold != 0 || r.SpamRate == nil || r.SpamRate.Rate != 0.1 || r.SpamRate.MinSpam != 3 {
		t.Fatalf("report of a stricter rate: %+v %+v", r.Threshold, r.SpamRate)
	}
	const wantStricter = "a1@example.com [spam_rate 3 (3/3)]\n" +
		"r1@globex.test [spam_rate 3 (3/4)]\n" +
		"r2@globex.test [spam_rate 3 (3/13)]\n" +
		"r3@globex.test [spam_rate 3 (3/20)]\n" +
		"r4@globex.test [spam_rate 3 (3/9) spam_rate 3 (3/0)]\n" +
		"r5@globex.test [spam_rate 3 (3/5)]\n" +
		"r6@globex.test [spam_rate 6 (3/4)]\n"
	if got := decisions(r, false); got != wantStricter {
		t.Fatalf("at 10%%:\n%swant\n%s", got, wantStricter)
	}
	// The rate off: the count alone.
	if got := decisions(get("company=globex&threshold=6&rate=0"), false); got != "r3@globex.test [spam_count 7]\n" {
		t.Fatalf("rate off:\n%s", got)
	}

	// Bad requests: 400, saying why.
	for q, want := range map[string]string{
		"":                                  "give a threshold",
		"threshold=0":                       "give a threshold",
		"rate=0.05":                         "min_spam",
		"rate=0.05&min_spam=0":              "min_spam",
		"min_spam=3":                        "goes with a rate",
		"threshold=6&min_spam=3":            "goes with a rate",
		"rate=5&min_spam=3":                 "0.05 is 5%",
		"rate=1&min_spam=3":                 "under 1",
		"rate=-0.1&min_spam=3":              "fraction",
		"rate=NaN&min_spam=3":               "fraction such as 0.05",
		"rate=Inf&min_spam=3":               "fraction such as 0.05",
		"rate=5%25&min_spam=3":              "fraction such as 0.05",
		"rate=0.05&min_spam=x":              "whole number",
		"rate=0.05&min_spam=-1":             "min_spam",
		"rate=0.05&min_spam=3&threshold=-1": "threshold must be at least 1",
		"threshold=x":                       "whole number",
	} {
		replayRefused(t, h, q, want)
	}
}

// replayRefused asks for a replay with query q and wants it refused: 400
// invalid, its message saying want.
func replayRefused(t *testing.T, h *harness, q, want string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+h.info.HTTPAddr+"/api/v1/replay?"+q, nil)
	req.Header.Set("Authorization", "Bearer "+tokAdminIngest)
	a := h.do(req)
	var e struct {
		Error struct{ Code, Message string }
	}
	if a.status != 400 || json.Unmarshal(a.body, &e) != nil || e.Error.Code != "invalid" || !strings.Contains(e.Error.Message, want) {
		t.Errorf("replay ?%s: %d %s; want 400 saying %q", q, a.status, a.body, want)
	}
}

// getReplay asks for a replay with token and decodes the answer.
func getReplay(t *testing.T, h *harness, token, q string) replay.Report {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+h.info.HTTPAddr+"/api/v1/replay?"+q, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	a := h.do(req)
	if a.status != 200 {
		t.Fatalf("replay %s: %d %s", q, a.status, a.body)
	}
	var r replay.Report
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// decisions is a replay's crossings, simulated or actual, one account a
// line: each crossing's rule, count and, when the rate held, its spam
// and ham.
func decisions(r replay.Report, actual bool) string {
	var b strings.Builder
	for _, a := range r.Accounts {
		cs := a.Would
		if actual {
			cs = a.Actual
		}
		if len(cs) == 0 {
			continue
		}
		var each []string
		for _, c := range cs {
			s := fmt.Sprintf("%s %d", c.Rule, c.Count)
			if c.Rate != nil {
				s += fmt.Sprintf(" (%d/%d)", c.Rate.Spam, c.Rate.Ham)
			}
			each = append(each, s)
		}
		fmt.Fprintf(&b, "%s [%s]\n", a.Account, strings.Join(each, " "))
	}
	return b.String()
}

// sameCrossings checks that each simulated crossing is the live one:
// rule, count, threshold, action, figures, and about the same time.
func sameCrossings(t *testing.T, r replay.Report) {
	t.Helper()
	for _, a := range r.Accounts {
		if len(a.Would) != len(a.Actual) {
			t.Fatalf("%s: would %+v, was %+v", a.Account, a.Would, a.Actual)
		}
		for i, w := range a.Would {
			x := a.Actual[i]
			if d := w.At.Sub(x.At); d > 5*time.Second || d < -5*time.Second {
				t.Errorf("%s: would at %s, was at %s", a.Account, w.At, x.At)
			}
			w.At, w.ID, x.At, x.ID = time.Time{}, "", time.Time{}, ""
			if !reflect.DeepEqual(w, x) || x.Rate != nil && (x.Rate.Limit == 0 || x.Rate.MinSpam == 0) {
				t.Errorf("%s: would %+v %+v, was %+v %+v", a.Account, w, w.Rate, x, x.Rate)
			}
		}
	}
}
