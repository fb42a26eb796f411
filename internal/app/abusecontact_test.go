package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/aupd/aupd/internal/testutil"
)

// TestAbuseContactEndToEnd is the abuse desk as an abuse contact meets it,
// through a whole aupd: verdicts that carry the sending client push an
// account over its threshold; the notice reaches the company's abuse
// contact at a real SMTP server; in a real chromium the contact asks the
// sign-in page for a link, takes it from the mail that server received,
// signs in, reads the signs of a compromise (the sending client, which
// also logged in), adds a note and reinstates; the history names the
// person, not a token.
func TestAbuseContactEndToEnd(t *testing.T) {
	path := testutil.Chromium(t)
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	smtpd := testutil.StartSMTP(t)
	cfg := withIngestTokens(t, testConfig(t, ns.ClientURL(), prefix))
	cfg.HTTP.Listen = "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	base := "http://" + cfg.HTTP.Listen
	host, port, _ := net.SplitHostPort(smtpd.Addr)
	cfg.Notifier.EMLDir = ""
	cfg.Notifier.SMTP.Host = host
	cfg.Notifier.SMTP.Port, _ = strconv.Atoi(port)
	cfg.Notifier.SMTP.TLS = "none"
	cfg.Notifier.From = "aupd@provider.test"
	cfg.Desk.Enabled = true
	cfg.Desk.PublicURL = base + "/desk"
	cfg.Desk.LinkKey = "e2e-link-key-7f3a9c1d5e8b2f4a6c0d9e1b3a5c7e9f"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := start(t, cfg)
	const (
		acct    = "dave@example.com"  // acme's: threshold 3
		contact = "abuse@example.com" // acme's abuse contact
		thief   = "198.51.100.77"
	)

	// The mailbox logs in from the thief's address, then sends spam from it.
	resp, err := http.Post("http://"+h.info.DovecotAddr+"/?command=report", "application/json", strings.NewReader(
		fmt.Sprintf(`{"login":%q,"user":%q,"protocol":"imap","remote":%q,"pwhash":"ab1","success":true,"policy_reject":false}`, acct, acct, thief)))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for i := range 5 {
		h.publish("aup.verdict.outbound", fmt.Appendf(nil, `{"id":"e2e-%d","time":%q,"direction":"outbound","account":%q,"verdict":"spam",`+
			`"sender":{"ip":%q,"login":%q},"message":{"subject":"=?UTF-8?B?WW91ciBwYXJjZWwg4oCU?= %d","raw":"Subject: parcel %d\r\n\r\nconfirm now\r\n"}}`,
			i, now, acct, thief, acct, i, i), "")
	}
	h.drained()
	mailsTo := func(kind string) []string {
		var texts []string
		for _, m := range smtpd.Mail() {
			if len(m.To) == 1 && m.To[0] == contact {
				msg, text := testutil.MailText(t, m.Data)
				if msg.Header.Get("X-Aupd-Notice") == kind {
					texts = append(texts, text)
				}
			}
		}
		return texts
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(mailsTo("aup-suspension")) == 1 }, "no notice reached %s", contact)

	ctx, dialogs := testutil.Chrome(t, path)
	accountPage := "/desk/accounts/" + acct
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+accountPage),
		chromedp.WaitVisible(chromedp.ID("address")),
		chromedp.SendKeys(chromedp.ID("address"), contact),
		chromedp.Click(chromedp.CSS(`form[action="/desk/sign-in/link"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("ask for a sign-in link: %v", err)
	}
	linkRe := regexp.MustCompile(regexp.QuoteMeta(base) + `/desk/sign-in/link/[A-Za-z0-9_.-]+`)
	var link string
	testutil.Eventually(t, 30*time.Second, func() bool {
		if texts := mailsTo("aup-desk-sign-in"); len(texts) == 1 {
			link = linkRe.FindString(texts[0])
		}
		return link != ""
	}, "no sign-in link reached %s", contact)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("sign-in")),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("h-signs")),
	); err != nil {
		t.Fatalf("sign in with the mailed link: %v", err)
	}
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || loc != base+accountPage {
		t.Errorf("landed on %q (%v), want the account page asked for", loc, err)
	}
	signs := testutil.Text(t, ctx, "section.signs")
	for _, want := range []string{thief, acct, "sent counted mail too", "logged in"} {
		if !strings.Contains(signs, want) {
			t.Errorf("the signs of a compromise lack %q:\n%s", want, signs)
		}
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("note-text"), "called the user, new password set"),
		chromedp.Click(chromedp.CSS(`form[action$="/note"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
		chromedp.SendKeys(chromedp.ID("reinstate-reason"), "password changed, devices checked"),
		chromedp.Click(chromedp.CSS(`form[action$="/reinstate"] button[type=submit]`)),
		// nothing is left to lift: the page after it has no reinstate form
		chromedp.WaitNotPresent(chromedp.CSS(`form[action$="/reinstate"]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("note and reinstate: %v", err)
	}
	if flash := testutil.Text(t, ctx, "p.flash"); !strings.Contains(flash, "Reinstated") {
		t.Errorf("after reinstating: %q", flash)
	}

	r := h.do(authed("GET", base+"/api/v1/accounts/"+acct+"/history", tokAdminIngest))
	var page struct {
		Entries []struct{ Actor, Action, Via, Note string }
	}
	if r.status != 200 || json.Unmarshal(r.body, &page) != nil {
		t.Fatalf("history: %d %s", r.status, r.body)
	}
	got := map[string]string{}
	for _, e := range page.Entries {
		got[e.Action] = e.Actor + " via " + e.Via
	}
	for _, action := range []string{"note", "reinstate"} {
		if got[action] != contact+" via desk" {
			t.Errorf("history %s by %q, want the person (%s via desk); all: %v", action, got[action], contact, got)
		}
	}
	if d := dialogs(); len(d) != 0 {
		t.Errorf("dialogs %q", d)
	}
}
