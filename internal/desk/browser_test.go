package desk_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// The browser tests drive Debian's chromium (testutil.Chromium).

// TestBrowser: in a real chromium, an abuse contact opens the link from
// the delivered notice, reads the evidence and reinstates with a reason;
// the API then shows the account active and the history names the link.
// Then the provider's abuse team signs in with a token and reinstates
// from the overview.
func TestBrowser(t *testing.T) {
	path := testutil.Chromium(t)
	dir := testutil.ScreenshotDir(t)
	w := ruleWorld(t)

	// An account over its threshold, with a hostile subject among the
	// samples, and some company for the overview.
	victim := "kate@example.com"
	subject := func(i int) string { return fmt.Sprintf("Your parcel is waiting (ref %d)", 4810+i) }
	raw := func(i int) string {
		return fmt.Sprintf("From: %s\r\nSubject: %s\r\n\r\nDear customer,\r\n\r\nconfirm your delivery at http://parcel.invalid/%d\r\n"+
			"<script>alert(\"xss\")</script><img src=x onerror=alert(%d)>\r\n", victim, subject(i), i, i)
	}
	sus := w.overThreshold(victim, 5, subject, raw)
	w.overThreshold("leo@example.com", 4, plain, plainRaw)
	w.overThreshold("mia@globex.test", 4, plain, plainRaw)
	if _, err := w.st.SetStatus(t.Context(), "noah@example.com", rules.StatusLockout, w.clk.now().Add(30*time.Minute),
		store.Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: "5 failed logins within 15m"}); err != nil {
		t.Fatal(err)
	}
	w.flush("noah@example.com")
	// Two near their threshold, with events spread over the last hours.
	now := w.clk.now()
	for acct, n := range map[string]int{"rita@example.com": 2, "sam@globex.test": 2} {
		for j := range n {
			v := verdict(fmt.Sprintf("%s-%d", acct, j), acct, plain(j), plainRaw(j), now.Add(-time.Duration(3*j+1)*time.Hour))
			if _, err := w.js.Publish(t.Context(), "aup.verdict.outbound", v); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.waitNear("rita@example.com", "sam@globex.test")
	_, link := w.notice(victim, sus)
	// And one that looks stolen, with every sign and a long note.
	stolen := "pia@example.com"
	w.compromise(stolen)
	// And one suspended by a volume limit, from two clients, one of them
	// a long IPv6 network.
	burst := "vic@globex.test"
	for i, client := range []string{"198.51.100.23", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff", "2001:db8:5:6::9"} {
		w.sendMail(burst, client, fmt.Sprintf("4B%d", i), 3)
	}
	if last := w.lastAUP(burst); last.Volume == nil {
		t.Fatalf("%s: %+v", burst, last)
	}

	ctx, dialogs := testutil.Chrome(t, path)

	// The link from the notice.
	if err := chromedp.Do(ctx, chromedp.Navigate(w.base+link), chromedp.WaitVisible(chromedp.ID("link-reason"))); err != nil {
		t.Fatalf("open the link: %v", err)
	}
	if title, err := chromedp.Run(ctx, chromedp.Title()); err != nil || !strings.Contains(title, victim) {
		t.Errorf("title %q: %v", title, err)
	}
	evidence := testutil.Text(t, ctx, "article.evidence")
	for _, want := range []string{"Sample 1: Your parcel is waiting", "Your parcel is waiting", `<script>alert("xss")</script>`, "<img src=x onerror=alert("} {
		if !strings.Contains(evidence, want) {
			t.Errorf("evidence on the page lacks %q:\n%s", want, evidence)
		}
	}
	testutil.Shoot(t, ctx, dir, "desk-link.png")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("link-reason"), "password changed, phone scanned"),
		chromedp.Click(chromedp.CSS(`form[action$="/reinstate"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("reinstate through the link: %v", err)
	}
	if flash, note := testutil.Text(t, ctx, "p.flash"), testutil.Text(t, ctx, "section.link"); !strings.Contains(flash, "Reinstated") || !strings.Contains(note, "This link reinstated the mailbox") {
		t.Errorf("after reinstating: flash %q, note %q", flash, note)
	}
	a := w.account(victim)
	if got := suspended(a); len(got) != 0 || a["status"] != "active" {
		t.Fatalf("after the browser reinstated: %v %v", a["status"], got)
	}
	h := w.history(victim)[0]
	if h.Action != "reinstate" || h.Via != store.ViaLink || h.Actor != desk.LinkActor || h.Note != "password changed, phone scanned" {
		t.Errorf("history %+v", h)
	}
	testutil.Shoot(t, ctx, dir, "desk-account.png")

	// Sign in with a token, reinstate from the overview.
	target := "leo@example.com"
	form := `form[action="/desk/accounts/` + target + `/reinstate"]`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.base+"/desk/sign-in"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), tokAbuse),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("h-suspended")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	if who := testutil.Text(t, ctx, "header .who"); !strings.Contains(who, "abuse-team") {
		t.Errorf("header %q", who)
	}
	testutil.Shoot(t, ctx, dir, "desk-overview.png")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(form+` input[name=reason]`), "customer confirmed the mailing stopped"),
		chromedp.Click(chromedp.CSS(form+` button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("reinstate from the overview: %v", err)
	}
	if flash := testutil.Text(t, ctx, "p.flash"); !strings.Contains(flash, "Reinstated") {
		t.Errorf("flash %q", flash)
	}
	if got := suspended(w.account(target)); len(got) != 0 {
		t.Errorf("%s still suspended: %v", target, got)
	}
	if h := w.history(target)[0]; h.Via != store.ViaDesk || h.Actor != "abuse-team" || h.Note != "customer confirmed the mailing stopped" {
		t.Errorf("history %+v", h)
	}

	// The account page on a phone-sized screen, of an account with
	// everything on it: suspensions with a long note, the signs of a
	// compromise, the evidence as messages. Nothing scrolls sideways,
	// and the note reads as lines of words, not a letter per line.
	for _, acct := range []string{victim, burst, stolen} {
		if err := chromedp.Do(ctx,
			chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
			chromedp.Navigate(w.base+"/desk/accounts/"+acct),
			chromedp.WaitVisible(chromedp.ID("h-history")),
		); err != nil {
			t.Fatalf("phone view: %v", err)
		}
		overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
		if err != nil {
			t.Fatal(err)
		}
		if overflow {
			wide, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName + "." + e.className).join(", ")`))
			t.Errorf("%s: the account page scrolls sideways on a phone (wider: %s)", acct, wide)
		}
		if acct == burst {
			if why := testutil.Text(t, ctx, "dd.why"); !strings.Contains(why, "Sent to 9 recipients in 1 hour (limit 7), from 2001:db8:5:6::/64, 2001:db8:aaaa:bbbb::/64 and 198.51.100.23") {
				t.Errorf("why %s was suspended, on a phone: %q", burst, why)
			}
			testutil.Shoot(t, ctx, dir, "desk-account-volume-phone.png")
		}
	}
	if badge := testutil.Text(t, ctx, "p.sub .status"); badge != "sending suspended" {
		t.Errorf("first badge %q", badge)
	}
	noteWidth, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`[...document.querySelectorAll('td[data-label="Note"]')].find(e => e.textContent.trim() != "").getBoundingClientRect().width`))
	if err != nil {
		t.Fatal(err)
	}
	if noteWidth < 250 {
		t.Errorf("the suspension's note is %.0f px wide on a 390 px screen", noteWidth)
	}
	if signs := testutil.Text(t, ctx, "section.signs"); !strings.Contains(signs, "someone may have guessed the password") || !strings.Contains(signs, "203.0.113.9") {
		t.Errorf("signs of a compromise on the phone: %q", signs)
	}
	testutil.Shoot(t, ctx, dir, "desk-account-phone.png")
	// The overview on the phone, with the volume suspension's figures.
	if err := chromedp.Do(ctx, chromedp.Navigate(w.base+"/desk/"), chromedp.WaitVisible(chromedp.ID("h-suspended"))); err != nil {
		t.Fatal(err)
	}
	if overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)); err != nil || overflow {
		t.Errorf("the overview scrolls sideways on a phone: %v %v", overflow, err)
	}
	if why := testutil.Text(t, ctx, "dd.why"); !strings.Contains(why, "Sent to 9 recipients in 1 hour (limit 7)") {
		t.Errorf("the overview's why on a phone: %q", why)
	}
	testutil.Shoot(t, ctx, dir, "desk-overview-phone.png")
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(w.base+"/desk/accounts/"+stolen), chromedp.WaitVisible(chromedp.ID("h-signs"))); err != nil {
		t.Fatal(err)
	}
	testutil.Shoot(t, ctx, dir, "desk-account-signs.png")
	if d := dialogs(); len(d) != 0 {
		t.Errorf("script from the evidence ran: dialogs %q", d)
	}
}

// TestBrowserSignInLink: in a real chromium, an abuse contact opens an
// account's page, is sent to sign in, asks for a link by mail, opens the
// link from the mail the SMTP server received, presses "Sign in" and
// lands on the page first asked for, signed in in their own name.
func TestBrowserSignInLink(t *testing.T) {
	path := testutil.Chromium(t)
	dir := testutil.ScreenshotDir(t)
	w, srv := newMailWorld(t, withAlice)
	acct := "pat@example.com"
	if code, body := w.api("POST", "/api/v1/accounts/"+acct+"/lock", tokRoot, map[string]any{"reason": "password leaked"}); code != 200 {
		t.Fatalf("lock: %d %v", code, body)
	}
	ctx, dialogs := testutil.Chrome(t, path)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.base+"/desk/accounts/"+acct),
		chromedp.WaitVisible(chromedp.ID("address")),
	); err != nil {
		t.Fatalf("open the account page without a session: %v", err)
	}
	testutil.Shoot(t, ctx, dir, "desk-sign-in.png")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("address"), "Alice@Partner.test"),
		chromedp.Click(chromedp.CSS(`form[action="/desk/sign-in/link"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("ask for a link: %v", err)
	}
	if msg := testutil.Text(t, ctx, "p.flash"); !strings.Contains(msg, "If that address may sign in, a link is on its way") {
		t.Errorf("after asking: %q", msg)
	}
	var link string
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, paths := signInMails(t, srv, alice)
		if len(paths) == 1 {
			link = paths[0]
		}
		return link != ""
	}, "no sign-in link mailed to %s", alice)

	if err := chromedp.Do(ctx, chromedp.Navigate(w.base+link), chromedp.WaitVisible(chromedp.ID("sign-in"))); err != nil {
		t.Fatalf("open the link: %v", err)
	}
	if p := testutil.Text(t, ctx, "main form"); !strings.Contains(p, "Sign in as "+alice+" for Acme Ltd") {
		t.Errorf("link page: %q", p)
	}
	testutil.Shoot(t, ctx, dir, "desk-sign-in-link.png")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("h-history")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || loc != w.base+"/desk/accounts/"+acct {
		t.Errorf("landed on %q (%v), want the account page", loc, err)
	}
	if who := testutil.Text(t, ctx, "header .who"); !strings.Contains(who, alice) || !strings.Contains(who, "abuse, acme") {
		t.Errorf("header %q", who)
	}
	testutil.Shoot(t, ctx, dir, "desk-signed-in-by-link.png")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`header nav a[href="/desk/sessions"]`)),
		chromedp.WaitVisible(chromedp.ID("h-everywhere")),
	); err != nil {
		t.Fatalf("sessions page: %v", err)
	}
	if rows := testutil.Text(t, ctx, "table.sessions tbody"); !strings.Contains(rows, alice) || !strings.Contains(rows, "mailed link") {
		t.Errorf("sessions %q", rows)
	}
	testutil.Shoot(t, ctx, dir, "desk-sessions.png")
	if d := dialogs(); len(d) != 0 {
		t.Errorf("dialogs %q", d)
	}
}
