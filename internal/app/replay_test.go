package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

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
	get := func(q string) replay.Report {
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
