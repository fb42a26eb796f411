package desk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// The subject of the compromised account's spam, as a filter passes it
// on: RFC 2047 encoded ("Grüße aus Köln – Ihr Paket").
const encodedSubject = "=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4oCTIElociBQYWtldA==?="

// compromise makes account look stolen: spam counted from a client
// address that also failed to log in, with the sender fields a filter
// sends, an encoded subject and Received fields (one of them hostile),
// a note longer than a phone's width on the suspension, and logins. It
// returns the suspension id, with the notice (and so the evidence) kept.
func (w *world) compromise(account string) string {
	w.t.Helper()
	ctx := context.Background()
	now := w.clk.now()
	tag := testutil.RandomHex(4)
	for i := range 5 {
		sender := map[string]string{"ip": "203.0.113.9", "login": strings.ToUpper(account[:1]) + account[1:]}
		if i == 4 {
			sender = map[string]string{"ip": "2001:db8::77"}
		}
		raw := "Received: from <script>alert(1)</script> (x [198.51.100.66]\"><img src=x onerror=alert(2)>) by nowhere\r\n" +
			"Received: from smtp.example.com (smtp.example.com [192.0.2.25]) by mx.example.net (Postfix) with ESMTPS id 9\r\n" +
			"Received: from [192.168.1.20] (dsl-9.isp.example\r\n\t[203.0.113.9]) by smtp.example.com (Postfix) with ESMTPSA id 4Q\r\n" +
			"From: " + account + "\r\nSubject: " + encodedSubject + "\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n\r\n" +
			fmt.Sprintf("Hallo,\r\n\r\nIhr Paket %d wartet: http://parcel.invalid/%d\r\n", i, i)
		b, _ := json.Marshal(map[string]any{
			"id": fmt.Sprintf("%s-%s-%d", account, tag, i), "time": now.Add(time.Duration(i) * time.Millisecond).UTC().Format(time.RFC3339Nano),
			"direction": "outbound", "account": account, "verdict": "spam", "score": 15, "source": "rspamd",
			"sender":  sender,
			"message": map[string]any{"subject": encodedSubject, "from": account, "to": []string{"someone@example.net"}, "raw": raw},
		})
		m := nats.NewMsg("aup.verdict.outbound")
		m.Data = b
		if _, err := w.js.PublishMsg(ctx, m); err != nil {
			w.t.Fatal(err)
		}
	}
	var sus string
	testutil.Eventually(w.t, 30*time.Second, func() bool {
		a, err := w.st.Account(ctx, account)
		if err == nil && a.AUP != "" {
			sus = a.AUP
			return true
		}
		return false
	}, "%s was not suspended", account)
	w.notice(account, sus)
	// The provider also suspends IMAP, with a long note.
	code, _ := w.api("POST", "/api/v1/accounts/"+account+"/suspend", tokRoot, map[string]any{
		"services": []string{"imap"}, "reason": "Customer reported a compromise on the phone; waiting for the new password and a scan of every device (ticket 48151623-alpha)"})
	if code != 200 {
		w.t.Fatalf("suspend imap: %d", code)
	}
	// Dovecot's reports: the user's own login, then guesses from the
	// address that sent the spam, which then got in.
	lim := store.LoginLimits{Keep: 20, Retention: 7 * 24 * time.Hour}
	for _, l := range []store.LoginReport{
		{Time: now.Add(-3 * time.Hour), Result: store.LoginOK, Protocol: "imap", IP: "192.0.2.44"},
		{Time: now.Add(-2 * time.Hour), Result: store.LoginFailed, Protocol: "submission", IP: "203.0.113.9"},
		{Time: now.Add(-2*time.Hour + time.Minute), Result: store.LoginFailed, Protocol: "submission", IP: "203.0.113.9"},
		{Time: now.Add(-time.Hour), Result: store.LoginOK, Protocol: "submission", IP: "203.0.113.9"},
	} {
		if ok, err := w.st.RecordLogin(ctx, account, l, true, lim); err != nil || !ok {
			w.t.Fatalf("record login: %v %v", ok, err)
		}
	}
	return sus
}

// TestSignsOfCompromise: the account page says what is suspended in
// words, gives reasons in plain words, and shows the signs of a
// compromise: the count against the threshold, who sent the counted
// messages, the client addresses in the samples' Received fields, the
// recent logins, and the hint that one address guessed at the password
// and sent the spam; the evidence shows as messages with the encoded
// subject decoded, and nothing hostile in it becomes markup. The API
// gives the same senders and logins.
func TestSignsOfCompromise(t *testing.T) {
	w := newWorld(t, nil)
	acct := "oscar@example.com"
	sus := w.compromise(acct)
	b := w.browser()
	b.signIn(tokAbuse)
	var p page
	testutil.Eventually(t, 30*time.Second, func() bool {
		// the worker writes the sender tallies about once a second
		p = b.get("/desk/accounts/" + acct)
		return strings.Contains(p.body, "<code>203.0.113.9</code>") && strings.Contains(p.body, "oscar@example.com</td>")
	}, "the sender tally did not show")
	has(t, p,
		`<span class="status status-suspended">sending suspended</span>`, `<span class="status status-suspended">IMAP suspended</span>`,
		"too many spam messages <code class=\"code\">aup_violation</code>", "suspended by the provider <code class=\"code\">admin</code>",
		"reason too many spam messages <code>aup_violation</code>",
		"Signs of a compromise", "<strong>At least 4</strong> messages counted in the window (spam 4), against a threshold of 3",
		// the sender tally: the login as the filter gave it, in lower case
		`data-label="Messages">at least 4</td>`, `<code>2001:db8::77</code>`, "failed logins too",
		// Received: the client behind the HELO literal, the earliest hop
		`<code>203.0.113.9</code> <span class="tag">earliest hop</span>`, `<code>192.0.2.25</code>`, `<code>198.51.100.66</code>`,
		// logins
		"wrong password", "logged in", "sent counted mail too", `data-label="Service">submission</td>`,
		"203.0.113.9 failed to log in (2 times) and also sent counted messages: someone may have guessed the password.",
		// the evidence as messages
		"Sample 1: Grüße aus Köln – Ihr Paket", "<dt>Subject</dt><dd>Grüße aus Köln – Ihr Paket <span class=\"muted raw\">"+encodedSubject+"</span>",
		" wartet: http://parcel.invalid/", `class="message-body"`,
		"Received from</dt><dd><code>203.0.113.9</code> → <code>192.0.2.25</code> → <code>198.51.100.66</code>",
	)
	lacks(t, p, `status-active`, "AUP suspension evidence", "<script", "<img", "onerror=alert(2)>")
	if strings.Contains(p.body, "Sample 1: "+encodedSubject) {
		t.Error("the subject is shown encoded")
	}

	// The API's account view: the same senders and logins.
	a := w.account(acct)
	senders, _ := a["senders"].([]any)
	logins, _ := a["logins"].([]any)
	if len(senders) != 2 || len(logins) != 3 {
		t.Fatalf("API senders %v logins %v", senders, logins)
	}
	first := senders[0].(map[string]any)
	if first["ip"] != "2001:db8::77" && first["ip"] != "203.0.113.9" {
		t.Errorf("API sender %v", first)
	}
	for _, s := range senders {
		s := s.(map[string]any)
		if s["ip"] == "203.0.113.9" && (s["login"] != acct || s["count"] != float64(4)) {
			t.Errorf("API sender %v, want oscar's login and 4", s)
		}
	}
	if l := logins[0].(map[string]any); l["result"] != "ok" || l["ip"] != "203.0.113.9" || l["protocol"] != "submission" {
		t.Errorf("API last login %v", l)
	}

	// Reinstated: the senders of the messages counted before no longer
	// show; the logins do.
	tok := csrf(t, p)
	p = b.post("/desk/accounts/"+acct+"/reinstate", url.Values{"csrf": {tok}, "service": {"send", "webmail_send"}, "reason": {"password changed"}})
	if p.code != 303 {
		t.Fatalf("reinstate: %d", p.code)
	}
	p = b.get("/desk/accounts/" + acct)
	has(t, p, "Nothing counted in the window.", "wrong password", `<span class="status status-suspended">IMAP suspended</span>`)
	lacks(t, p, "sending suspended", "failed logins too")
	if _, ok := w.account(acct)["senders"]; ok {
		t.Error("the API still gives the senders counted before the reinstatement")
	}
	_ = sus
}
