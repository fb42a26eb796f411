package desk_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// The rules of TestWhichRule: a volume limit of 7 recipients an hour,
// and Initech's spam-rate rule (over 7%, at least 6 spam) under a
// threshold of 40, so that its accounts cross by the rate.
var hourly7 = rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 7, Action: rules.VolumeSuspend}

func ruleWorld(t *testing.T) *world {
	forty := 40
	return newWorld(t, func(c *config.Config) {
		c.Policy.Postfix.Listen = "127.0.0.1:0"
		c.AUP.Volume = []rules.VolumeLimit{hourly7}
		c.AUP.VolumeAllowlist = []string{"ned@globex.test"}
		c.Companies = append(c.Companies, companies.Company{ID: "initech", Name: "Initech", Domains: []string{"initech.test"},
			AbuseContact: "abuse@initech.test", Threshold: &forty, SpamRate: &rules.SpamRateSetting{Rate: 0.07, MinSpam: 6}})
	})
}

// sendMail tells aupd's Postfix policy server, as Postfix does at the
// end of DATA, that sender submitted a message to n recipients from
// client.
func (w *world) sendMail(sender, client, queueID string, n int) string {
	w.t.Helper()
	c, err := net.Dial("tcp", w.postfix)
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close()
	req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_name=ESMTP\nprotocol_state=END-OF-MESSAGE\nsasl_username=%s\nsender=%s\n"+
		"client_address=%s\ninstance=%s.1\nqueue_id=%s\nrecipient_count=%d\nrecipient=\n\n", sender, sender, client, queueID, queueID, n)
	if _, err := c.Write([]byte(req)); err != nil {
		w.t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		w.t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "action=")
}

// judged publishes outbound verdicts of one kind for account and
// returns the stream sequence of the last.
func (w *world) judged(account, verdict string, n int) uint64 {
	w.t.Helper()
	now, tag := w.clk.now(), testutil.RandomHex(4)
	var seq uint64
	for i := range n {
		b, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("%s-%s-%s-%d", account, verdict, tag, i), "time": now.Add(time.Duration(i) * time.Millisecond).UTC().Format(time.RFC3339Nano),
			"direction": "outbound", "account": account, "verdict": verdict, "source": "test-filter"})
		m := nats.NewMsg("aup.verdict.outbound")
		m.Data = b
		ack, err := w.js.PublishMsg(context.Background(), m)
		if err != nil {
			w.t.Fatal(err)
		}
		seq = ack.Sequence
	}
	return seq
}

// counted waits until aupd has counted the verdicts up to seq: the
// worker acks each one once what it changed is stored.
func (w *world) counted(seq uint64) {
	w.t.Helper()
	cons, err := w.js.Consumer(context.Background(), w.cfg.NATS.Verdicts.Name, w.cfg.NATS.Consumer.Durable)
	if err != nil {
		w.t.Fatal(err)
	}
	testutil.Eventually(w.t, 30*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= seq
	}, "the verdicts up to %d were not counted", seq)
}

// lastAUP waits for the account's last crossing and returns it.
func (w *world) lastAUP(account string) *events.AUPSuspension {
	w.t.Helper()
	var last *events.AUPSuspension
	testutil.Eventually(w.t, 30*time.Second, func() bool {
		a, err := w.st.Account(context.Background(), account)
		last = a.LastAUP
		return err == nil && last != nil
	}, "%s crossed no rule", account)
	return last
}

// TestWhichRule: the desk says which rule suspended an account and why,
// with the figures of that crossing, for each rule: on the account page
// (the last crossing, the suspension's reason, the history line), on the
// overview, and in the evidence of a volume crossing without samples,
// from evidence.txt or, where no notice was sent, from the desk itself.
func TestWhichRule(t *testing.T) {
	w := ruleWorld(t)
	b := w.browser()
	b.signIn(tokAbuse)

	// spam_count: acme's threshold is 3; the fourth spam crosses it.
	counted := "carl@example.com"
	countSus := w.overThreshold(counted, 4, plain, plainRaw)

	// spam_rate: 52 ham counted first, then 6 spam: 6 of 58 is 10.34%,
	// over 7%, with Initech's minimum of 6; the count (40) is far off.
	rated := "rita@initech.test"
	w.counted(w.judged(rated, "ham", 52))
	w.judged(rated, "spam", 6)
	rateSus := w.lastAUP(rated)
	if rateSus.Rule != rules.RuleSpamRate || rateSus.Rate == nil || rateSus.Rate.Spam != 6 || rateSus.Rate.Ham != 52 {
		t.Fatalf("the rate crossing: %+v rate %+v", rateSus, rateSus.Rate)
	}

	// volume:hourly: 3 messages of 3 recipients; the third crosses 7,
	// from another client.
	sent := "vic@globex.test"
	for i, client := range []string{"198.51.100.23", "198.51.100.23", "2001:db8:5:6::9"} {
		if got := w.sendMail(sent, client, fmt.Sprintf("4V%d", i), 3); got != "DUNNO" && got != "dunno" {
			t.Fatalf("message %d: %q", i, got)
		}
	}
	volSus := w.lastAUP(sent)
	if volSus.Rule != "volume:hourly" || volSus.Volume == nil || volSus.Action != string(rules.ActionSuspend) {
		t.Fatalf("the volume crossing: %+v", volSus)
	}
	since := volSus.Volume.Since.UTC()
	if d := volSus.WindowEnd.Sub(since); d < 0 || d > 5*time.Minute {
		t.Fatalf("the burst began at %s, the crossing was at %s", since, volSus.WindowEnd)
	}
	// The same limit crossed by an allowlisted account: a report, no
	// notice, no evidence.txt.
	for i := range 2 {
		w.sendMail("ned@globex.test", "192.0.2.44", fmt.Sprintf("4N%d", i), 4)
	}
	reported := w.lastAUP("ned@globex.test")
	if reported.Action != string(rules.ActionReport) {
		t.Fatalf("the allowlisted crossing: %+v", reported)
	}
	w.notice(counted, countSus)
	w.notice(rated, rateSus.ID)
	w.notice(sent, volSus.ID)

	volWhy := "Sent to 9 recipients in 1 hour (limit 7), from 2001:db8:5:6::/64 and 198.51.100.23, since " + since.Format("15:04 UTC")
	for _, tc := range []struct {
		account    string
		want, lack []string
	}{
		{account: counted, want: []string{
			"<dt>Rule</dt><dd>too many spam messages <code>spam_count</code></dd>",
			"<dt>Counted</dt><dd>4 against a threshold of 3</dd>",
			`<td data-label="Reason">too many spam messages <code class="code">aup_violation</code></td>`,
			"reason too many spam messages <code>aup_violation</code> (rule <code>spam_count</code>)",
			"count 4 exceeds threshold 3",
		}, lack: []string{"<dt>Why</dt>", "crossed without samples"}},
		{account: rated, want: []string{
			"<dt>Rule</dt><dd>spam rate exceeded <code>spam_rate</code></dd>",
			`<dt>Why</dt><dd class="why">10.34% of outbound messages judged spam (6 of 58; limit 7%)</dd>`,
			`<td data-label="Reason">spam rate exceeded <code class="code">aup_violation</code></td>`,
			"reason spam rate exceeded <code>aup_violation</code> (rule <code>spam_rate</code>)",
			"spam_rate: 6 spam of 58 outbound messages exceed the rate of 7% (at least 6 spam)",
		}, lack: []string{"against a threshold of 40</dd>", "too many spam messages", "crossed without samples"}},
		{account: sent, want: []string{
			"<dt>Rule</dt><dd>sending volume limit exceeded <code>volume:hourly</code></dd>",
			`<dt>Why</dt><dd class="why">` + volWhy + `</dd>`,
			`<td data-label="Reason">sending volume limit exceeded <code class="code">aup_violation</code></td>`,
			"reason sending volume limit exceeded <code>aup_violation</code> (rule <code>volume:hourly</code>)",
			// evidence.txt's note, as one paragraph
			`<p class="help">The volume rule volume:hourly crossed without samples: it counts what the mailbox sends at the mail server, which sees no message content, and the spam filter had flagged none of its recent messages.</p>`,
			"Suspension <code>" + volSus.ID + "</code>",
		}, lack: []string{"against a threshold of 7</dd>", "too many spam messages", "No evidence is kept", "no-samples"}},
		{account: "ned@globex.test", want: []string{
			"<dt>Report</dt><dd><code>" + reported.ID + "</code> <span class=\"muted\">(reported only, nothing suspended",
			"<dt>Rule</dt><dd>sending volume limit exceeded <code>volume:hourly</code></dd>",
			`<dt>Why</dt><dd class="why">Sent to 8 recipients in 1 hour (limit 7), from 192.0.2.44, since `,
			`<p class="help no-samples">The volume rule volume:hourly crossed without samples: it counts what the mailbox sends at the mail server, which sees no message content, and the spam filter had flagged none of its recent messages.</p>`,
			"reason sending volume limit exceeded <code>aup_violation</code> (rule <code>volume:hourly</code>)",
		}, lack: []string{"No evidence is kept", "no longer in force", "sending suspended"}},
	} {
		p := b.get("/desk/accounts/" + tc.account)
		if p.code != 200 {
			t.Fatalf("%s: %d", tc.account, p.code)
		}
		has(t, p, tc.want...)
		lacks(t, p, tc.lack...)
	}

	// The API's history names each crossing's rule.
	for acct, rule := range map[string]string{counted: "spam_count", rated: "spam_rate", sent: "volume:hourly", "ned@globex.test": "volume:hourly"} {
		if h := w.history(acct); len(h) == 0 || h[0].Rule != rule || h[0].Reason != rules.ReasonAUPViolation {
			t.Errorf("%s: history %+v; want the rule %s", acct, h, rule)
		}
	}

	// The overview: each suspended account's reason names its rule, and
	// the rate's and the volume's figures.
	p := b.get("/desk/")
	for _, want := range []string{
		"too many spam messages <code>aup_violation</code> <span class=\"muted\">(rule <code>spam_count</code>)</span>",
		"spam rate exceeded <code>aup_violation</code> <span class=\"muted\">(rule <code>spam_rate</code>)</span>",
		`<dd class="why">10.34% of outbound messages judged spam (6 of 58; limit 7%)</dd>`,
		"sending volume limit exceeded <code>aup_violation</code> <span class=\"muted\">(rule <code>volume:hourly</code>)</span>",
		`<dd class="why">` + volWhy + `</dd>`,
	} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the overview lacks %q", want)
		}
	}
	if strings.Contains(p.body, "ned@globex.test") {
		t.Error("the overview lists a reported account as suspended")
	}

	// A suspension the provider adds beside a volume one keeps its own
	// words; reinstated, the account's last crossing is no longer in
	// force and still says why it was.
	code, _ := w.api("POST", "/api/v1/accounts/"+sent+"/suspend", tokRoot, map[string]any{"services": []string{"imap"}, "reason": "checking the devices"})
	if code != 200 {
		t.Fatalf("suspend imap: %d", code)
	}
	code, _ = w.api("POST", "/api/v1/accounts/"+sent+"/reinstate", tokRoot, map[string]any{"services": []string{"send", "webmail_send"}, "reason": "the user confirmed the mailing"})
	if code != 200 {
		t.Fatalf("reinstate: %d", code)
	}
	p = b.get("/desk/accounts/" + sent)
	has(t, p, `<td data-label="Reason">suspended by the provider <code class="code">admin</code></td>`,
		"(no longer in force)", `<dt>Why</dt><dd class="why">`+volWhy+`</dd>`)
	lacks(t, p, `sending volume limit exceeded <code class="code">aup_violation</code></td>`)
}
