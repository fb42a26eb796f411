package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestMailstackWithoutCompanies runs the private Postfix and Dovecot
// against an aupd with an empty company list (the README's "Try it", or a
// provider that relies on notifier.fallback_abuse_contact), configured
// from deploy/postfix as pasted. A suspension that verdicts cause is
// refused at submission all the same. Then aupd's Redis, and then aupd
// itself, go away: mail to and from domains that aupd does not govern
// flows as if aupd were not there, mail for a hosted mailbox waits with
// the replies docs/postfix.md lists, and nothing bounces.
func TestMailstackWithoutCompanies(t *testing.T) {
	ms := startMailstackWith(t, stackOptions{noCompanies: true, ownRedis: true})
	ctx := context.Background()
	spammer := "spammer@" + domain

	// The spam filter reports threshold+2 spam messages from spammer.
	js := testutil.JetStream(t, ms.natsURL)
	for i := range threshold + 2 {
		ev, err := json.Marshal(map[string]any{
			"id": fmt.Sprintf("outage-%d", i), "time": time.Now().UTC().Format(time.RFC3339),
			"direction": "outbound", "account": spammer, "verdict": "spam", "source": "mailstack-test",
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "aup.verdict.outbound", ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, spammer+" suspended by verdicts", func() bool {
		a, err := ms.st.Account(ctx, spammer)
		if err != nil {
			t.Fatal(err)
		}
		_, ok := a.Suspensions[rules.ServiceSend]
		return ok && a.Company == ""
	})

	t.Run("a suspension by verdicts is enforced without a company list", func(t *testing.T) {
		for _, mode := range []string{"--tls", "--tlsc"} {
			addr := ms.submission
			if mode == "--tlsc" {
				addr = ms.smtps
			}
			out, err := swaksTLS(t, addr, mode, spammer, "friend@elsewhere.test", password)
			want := "554 5.7.1 <friend@elsewhere.test>: Recipient address rejected: Sending is suspended for this account"
			if err == nil || !strings.Contains(out, want) {
				t.Errorf("%s: submission by %s: err %v, want %q:\n%s", mode, spammer, err, want, out)
			}
		}
		if out, err := swaksTLS(t, ms.submission, "--tls", "active@"+domain, "friend@elsewhere.test", password); err != nil {
			t.Errorf("submission by an active user: %v\n%s", err, out)
		}
	})

	// relay: a host in mynetworks (a web server) sends to another domain;
	// hosted: mail from outside for a hosted mailbox.
	relay := func(t *testing.T, to string) {
		t.Helper()
		tr := smtpSession(t, ms.smtp, "127.0.0.1", "app@mailstack.test", to)
		if !tr.accepted() {
			t.Fatalf("relay to %s refused:\n%s", to, tr)
		}
		ms.waitMaillog(t, "to=<"+to+">", "status=sent")
	}
	hosted := func(t *testing.T, to, want string) {
		t.Helper()
		tr := smtpSession(t, ms.smtp, "127.0.0.1", "someone@elsewhere.test", to)
		if got := tr.rcpt[0]; got != want {
			t.Errorf("RCPT TO:<%s> answered %q, want %q:\n%s", to, got, want, tr)
		}
	}

	// While aupd cannot answer, Postfix's RCPT-time transport lookup
	// fails first for a hosted recipient (the policy check after it would
	// answer 4.3.5 or 4.7.1), and Dovecot refuses every login
	// (auth_policy_reject_on_fail = yes), so authenticated submission
	// fails at AUTH: the client keeps the message.
	const hostedReply = "451 4.3.0 <active@" + domain + ">: Temporary lookup failure"
	const authReply = "535 5.7.8 Error: authentication failed"
	outage := func(t *testing.T, n int) {
		relay(t, fmt.Sprintf("relay%d@elsewhere.test", n))
		hosted(t, "active@"+domain, hostedReply)
		out, err := swaksTLS(t, ms.submission, "--tls", "active@"+domain, "friend@elsewhere.test", password)
		if err == nil || !strings.Contains(out, authReply) {
			t.Errorf("submission by a hosted user: err %v, want %q:\n%s", err, authReply, out)
		}
		// Mail already in the queue, or injected locally: for a hosted
		// mailbox it waits; for another domain it is delivered.
		ms.sendmail(t, "root@mailstack.test", fmt.Sprintf("queued%d@elsewhere.test", n))
		ms.waitMaillog(t, fmt.Sprintf("to=<queued%d@elsewhere.test>", n), "status=sent")
		ms.sendmail(t, "root@mailstack.test", fmt.Sprintf("norecv+wait%d@%s", n, domain))
		ms.waitMaillog(t, fmt.Sprintf("to=<norecv+wait%d@%s>", n, domain), "status=deferred")
	}
	t.Run("redis down", func(t *testing.T) {
		// SHUTDOWN closes the connection; its reply is an error.
		_ = ms.rdb.Do(ctx, "SHUTDOWN", "NOSAVE").Err()
		waitFor(t, "redis down", func() bool { return ms.rdb.Ping(ctx).Err() != nil })
		outage(t, 1)
	})
	t.Run("aupd down", func(t *testing.T) {
		ms.stopAupd()
		outage(t, 2)
	})
	if b, err := os.ReadFile(filepath.Join(ms.dir, "postfix/maillog")); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(b), "status=bounced") {
		t.Errorf("an outage bounced mail:\n%s", b)
	}
}

// transcript is what an SMTP server answered to each command of one
// message.
type transcript struct {
	mail string
	rcpt []string
	data string // "" when no recipient was accepted
}

func (tr transcript) accepted() bool { return strings.HasPrefix(tr.data, "250 ") }

func (tr transcript) String() string {
	return fmt.Sprintf("MAIL: %s\nRCPT: %s\nDATA: %s", tr.mail, strings.Join(tr.rcpt, "\nRCPT: "), tr.data)
}

// smtpSession sends one message to addr from the loopback address ip,
// without AUTH, and returns each reply as "code text" (the last line of a
// multi-line reply).
func smtpSession(t *testing.T, addr, ip, from string, to ...string) transcript {
	t.Helper()
	c := dialTextFrom(t, addr, ip)
	defer c.Close()
	cmd := func(want int, format string, args ...any) string {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		code, msg, err := c.ReadResponse(want)
		if err != nil && code == 0 {
			t.Fatalf("%q: %v", fmt.Sprintf(format, args...), err)
		}
		lines := strings.Split(msg, "\n")
		return fmt.Sprintf("%d %s", code, lines[len(lines)-1])
	}
	var tr transcript
	cmd(220, "")
	cmd(250, "EHLO client.elsewhere.test")
	tr.mail = cmd(250, "MAIL FROM:<%s>", from)
	ok := false
	for _, r := range to {
		reply := cmd(250, "RCPT TO:<%s>", r)
		tr.rcpt = append(tr.rcpt, reply)
		ok = ok || strings.HasPrefix(reply, "250 ")
	}
	if ok {
		if reply := cmd(354, "DATA"); strings.HasPrefix(reply, "354 ") {
			w := c.DotWriter()
			fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: outage test\r\n\r\nhello\r\n", from, strings.Join(to, ", "))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			tr.data = cmd(250, "")
		}
	}
	cmd(221, "QUIT")
	return tr
}

// TestMailstackWrongPolicyKey: Dovecot, configured from deploy/dovecot,
// sends a key aupd does not hold (the key changed on one side only).
// aupd answers its policy requests 401, then 429 once the Dovecot host is
// over http.auth_failures; Dovecot, with the shipped
// auth_policy_reject_on_fail = yes, refuses every login rather than let a
// suspended or locked-out account in. This is what the alert
// AupdDovecotPolicyRefused and the runbook describe.
func TestMailstackWrongPolicyKey(t *testing.T) {
	ms := startMailstackWith(t, stackOptions{env: []string{"MS_AUTH_POLICY_KEY=wrong-" + testutil.RandomHex(8)}})
	for i := range 12 {
		if r := imapLogin(t, ms.imap, "active@"+domain, password); strings.HasPrefix(r, "OK") {
			t.Fatalf("login %d of an active user went through without aupd's answer: %q", i, r)
		}
	}
	unauthorized, limited := ms.policyRequests(t, "dovecot", "unauthorized"), ms.policyRequests(t, "dovecot", "limited")
	if unauthorized != 10 || limited < 2 {
		t.Errorf("aupd answered Dovecot %v times 401 and %v times 429; want 10 (http.auth_failures) and then 429", unauthorized, limited)
	}
	if allowed := ms.policyRequests(t, "dovecot", "allow"); allowed != 0 {
		t.Errorf("%v requests with a wrong key were answered allow", allowed)
	}
}

// TestMailstackPreviousPolicyKey: halfway through changing the API key as
// docs/dovecot.md says (aupd holds the new key as api_key and the old one
// as previous_api_key, Dovecot, configured from deploy/dovecot, still
// sends the old one), every login goes through aupd's answer as before,
// and aupd counts the requests that sent the old key, so that the
// operator sees when no Dovecot does.
func TestMailstackPreviousPolicyKey(t *testing.T) {
	ms := startMailstackWith(t, stackOptions{dovecot: func(c *dovecot.Config) {
		c.PreviousAPIKey, c.APIKey = c.APIKey, dovecot.Secret("rotated-"+testutil.RandomHex(8))
	}})
	must(t)(ms.st.Suspend(context.Background(), "suspended@"+domain, []rules.Service{rules.ServiceIMAP, rules.ServicePOP3}, admin))
	for i := range 3 {
		if r := imapLogin(t, ms.imap, "active@"+domain, password); !strings.HasPrefix(r, "OK") {
			t.Fatalf("login %d of an active user with the previous key: %q", i, r)
		}
	}
	if r := imapLogin(t, ms.imap, "suspended@"+domain, password); strings.HasPrefix(r, "OK") {
		t.Errorf("a suspended user logged in: %q", r)
	}
	if n := ms.policyRequests(t, "dovecot", "unauthorized") + ms.policyRequests(t, "dovecot", "limited"); n != 0 {
		t.Errorf("%v requests with the previous key were refused", n)
	}
	if n := ms.policyRequests(t, "dovecot", "allow"); n < 3 {
		t.Errorf("%v allow requests answered; want one a login at least", n)
	}
	if n := ms.metric(t, `aupd_policy_previous_key_total{server="dovecot"}`); n < 3 {
		t.Errorf("aupd counted %v requests with the previous key; want one a login at least", n)
	}
}
