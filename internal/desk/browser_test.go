package desk_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// The browser test drives Debian's chromium, installed by scripts/chromium
// when missing. AUPD_BROWSER=skip skips it, AUPD_BROWSER=require turns a
// missing browser into a failure. Screenshots go to
// $AUPD_DESK_SCREENSHOTS, or to the test's temporary directory.

func chromium(t *testing.T) string {
	t.Helper()
	mode := os.Getenv("AUPD_BROWSER")
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf("browser test: "+format, args...)
		if mode == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if mode == "skip" {
		skip("AUPD_BROWSER=skip")
	}
	script, err := filepath.Abs("../../scripts/chromium")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		skip("no chromium (install it with apt-get install chromium): %v %s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

func screenshotDir(t *testing.T) string {
	if d := os.Getenv("AUPD_DESK_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// newChrome starts a headless chromium with a fresh profile; dialogs (an
// alert from injected script) are recorded and dismissed.
func newChrome(t *testing.T, path string) (context.Context, func() []string) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { tcancel(); cancel(); acancel() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var dialogs []string
	opened := make(chan struct{}, 16)
	if err := chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*cdppage.EventJavascriptDialogOpening); ok {
			mu.Lock()
			dialogs = append(dialogs, d.Message)
			mu.Unlock()
			select {
			case opened <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	go func() { // dismiss dialogs so that a page with one does not hang
		for {
			select {
			case <-ctx.Done():
				return
			case <-opened:
				_, _ = chromedp.Call(ctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{})
			}
		}
	}()
	return ctx, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(dialogs) }
}

func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", filepath.Join(dir, name))
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// TestBrowser: in a real chromium, an abuse contact opens the link from
// the delivered notice, reads the evidence and reinstates with a reason;
// the API then shows the account active and the history names the link.
// Then the provider's abuse team signs in with a token and reinstates
// from the overview.
func TestBrowser(t *testing.T) {
	path := chromium(t)
	dir := screenshotDir(t)
	w := newWorld(t, nil)

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

	ctx, dialogs := newChrome(t, path)

	// The link from the notice.
	if err := chromedp.Do(ctx, chromedp.Navigate(w.base+link), chromedp.WaitVisible(chromedp.ID("link-reason"))); err != nil {
		t.Fatalf("open the link: %v", err)
	}
	if title, err := chromedp.Run(ctx, chromedp.Title()); err != nil || !strings.Contains(title, victim) {
		t.Errorf("title %q: %v", title, err)
	}
	evidence := text(t, ctx, "article.evidence")
	for _, want := range []string{"Sample 1: Your parcel is waiting", "Your parcel is waiting", `<script>alert("xss")</script>`, "<img src=x onerror=alert("} {
		if !strings.Contains(evidence, want) {
			t.Errorf("evidence on the page lacks %q:\n%s", want, evidence)
		}
	}
	shoot(t, ctx, dir, "desk-link.png")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("link-reason"), "password changed, phone scanned"),
		chromedp.Click(chromedp.CSS(`form[action$="/reinstate"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("reinstate through the link: %v", err)
	}
	if flash, note := text(t, ctx, "p.flash"), text(t, ctx, "section.link"); !strings.Contains(flash, "Reinstated") || !strings.Contains(note, "This link reinstated the mailbox") {
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
	shoot(t, ctx, dir, "desk-account.png")

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
	if who := text(t, ctx, "header .who"); !strings.Contains(who, "abuse-team") {
		t.Errorf("header %q", who)
	}
	shoot(t, ctx, dir, "desk-overview.png")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(form+` input[name=reason]`), "customer confirmed the mailing stopped"),
		chromedp.Click(chromedp.CSS(form+` button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("reinstate from the overview: %v", err)
	}
	if flash := text(t, ctx, "p.flash"); !strings.Contains(flash, "Reinstated") {
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
	for _, acct := range []string{victim, stolen} {
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
	}
	if badge := text(t, ctx, "p.sub .status"); badge != "sending suspended" {
		t.Errorf("first badge %q", badge)
	}
	noteWidth, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`[...document.querySelectorAll('td[data-label="Note"]')].find(e => e.textContent.trim() != "").getBoundingClientRect().width`))
	if err != nil {
		t.Fatal(err)
	}
	if noteWidth < 250 {
		t.Errorf("the suspension's note is %.0f px wide on a 390 px screen", noteWidth)
	}
	if signs := text(t, ctx, "section.signs"); !strings.Contains(signs, "someone may have guessed the password") || !strings.Contains(signs, "203.0.113.9") {
		t.Errorf("signs of a compromise on the phone: %q", signs)
	}
	shoot(t, ctx, dir, "desk-account-phone.png")
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(w.base+"/desk/accounts/"+stolen), chromedp.WaitVisible(chromedp.ID("h-signs"))); err != nil {
		t.Fatal(err)
	}
	shoot(t, ctx, dir, "desk-account-signs.png")
	if d := dialogs(); len(d) != 0 {
		t.Errorf("script from the evidence ran: dialogs %q", d)
	}
}

// TestBrowserSignInLink: in a real chromium, an abuse contact opens an
// account's page, is sent to sign in, asks for a link by mail, opens the
// link from the mail the SMTP server received, presses "Sign in" and
// lands on the page first asked for, signed in in their own name.
func TestBrowserSignInLink(t *testing.T) {
	path := chromium(t)
	dir := screenshotDir(t)
	w, srv := newMailWorld(t, withAlice)
	acct := "pat@example.com"
	if code, body := w.api("POST", "/api/v1/accounts/"+acct+"/lock", tokRoot, map[string]any{"reason": "password leaked"}); code != 200 {
		t.Fatalf("lock: %d %v", code, body)
	}
	ctx, dialogs := newChrome(t, path)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.base+"/desk/accounts/"+acct),
		chromedp.WaitVisible(chromedp.ID("address")),
	); err != nil {
		t.Fatalf("open the account page without a session: %v", err)
	}
	shoot(t, ctx, dir, "desk-sign-in.png")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("address"), "Alice@Partner.test"),
		chromedp.Click(chromedp.CSS(`form[action="/desk/sign-in/link"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("ask for a link: %v", err)
	}
	if msg := text(t, ctx, "p.flash"); !strings.Contains(msg, "If that address may sign in, a link is on its way") {
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
	if p := text(t, ctx, "main form"); !strings.Contains(p, "Sign in as "+alice+" for Acme Ltd") {
		t.Errorf("link page: %q", p)
	}
	shoot(t, ctx, dir, "desk-sign-in-link.png")
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
	if who := text(t, ctx, "header .who"); !strings.Contains(who, alice) || !strings.Contains(who, "abuse, acme") {
		t.Errorf("header %q", who)
	}
	shoot(t, ctx, dir, "desk-signed-in-by-link.png")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`header nav a[href="/desk/sessions"]`)),
		chromedp.WaitVisible(chromedp.ID("h-everywhere")),
	); err != nil {
		t.Fatalf("sessions page: %v", err)
	}
	if rows := text(t, ctx, "table.sessions tbody"); !strings.Contains(rows, alice) || !strings.Contains(rows, "mailed link") {
		t.Errorf("sessions %q", rows)
	}
	shoot(t, ctx, dir, "desk-sessions.png")
	if d := dialogs(); len(d) != 0 {
		t.Errorf("dialogs %q", d)
	}
}
