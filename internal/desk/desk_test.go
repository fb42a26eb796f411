package desk_test

import (
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

func has(t *testing.T, p page, want ...string) {
	t.Helper()
	for _, s := range want {
		if !strings.Contains(p.body, s) {
			t.Errorf("page lacks %q:\n%s", s, p.body)
		}
	}
}

func lacks(t *testing.T, p page, not ...string) {
	t.Helper()
	for _, s := range not {
		if strings.Contains(p.body, s) {
			t.Errorf("page has %q:\n%s", s, p.body)
		}
	}
}

// TestSignInAndOut: the sign-in page, a wrong token, a missing CSRF
// token, the session cookie's attributes, and a session after sign-out.
func TestSignInAndOut(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()

	p := b.get("/desk/")
	if p.code != http.StatusSeeOther || p.location() != "/desk/sign-in" {
		t.Fatalf("overview without a session: %d %q", p.code, p.location())
	}
	p = b.get("/desk/sign-in")
	has(t, p, `<label for="token">API token</label>`, `type="password"`)
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Referrer-Policy"} {
		if p.hdr.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if !strings.Contains(p.hdr.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("CSP %q", p.hdr.Get("Content-Security-Policy"))
	}
	token := csrf(t, p)

	if p = b.post("/desk/sign-in", url.Values{"token": {tokAbuse}}); p.code != http.StatusForbidden {
		t.Errorf("sign-in without the form's CSRF token: %d", p.code)
	}
	other := w.browser() // a form from another browser's session does not work here
	if p = other.post("/desk/sign-in", url.Values{"csrf": {token}, "token": {tokAbuse}}); p.code != http.StatusForbidden {
		t.Errorf("sign-in with another browser's CSRF token: %d", p.code)
	}
	p = b.post("/desk/sign-in", url.Values{"csrf": {token}, "token": {"not-a-token"}})
	if p.code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", p.code)
	}
	has(t, p, "That token is not valid.")

	p = b.get("/desk/sign-in")
	p = b.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {tokAbuse}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d\n%s", p.code, p.body)
	}
	var sess *http.Cookie
	for _, c := range (&http.Response{Header: p.hdr}).Cookies() {
		if c.Name == "aupd_desk" && c.Value != "" {
			sess = c
		}
	}
	if sess == nil {
		t.Fatalf("no session cookie: %v", p.hdr["Set-Cookie"])
	}
	if !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/desk/" || sess.MaxAge <= 0 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/desk/, an expiry", sess)
	}
	if sess.Secure {
		t.Errorf("session cookie is Secure over plain HTTP to an http:// desk")
	}
	// Behind a TLS proxy the cookies are Secure.
	proxied := w.browser()
	req, _ := http.NewRequest("GET", w.base+"/desk/sign-in", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	if pp := proxied.do(req); !strings.Contains(strings.Join(pp.hdr["Set-Cookie"], "\n"), "; Secure") {
		t.Errorf("cookies behind a TLS proxy: %q", pp.hdr["Set-Cookie"])
	}
	if strings.Contains(sess.Value, tokAbuse) {
		t.Errorf("the cookie carries the token")
	}
	p = b.get("/desk/")
	has(t, p, "Signed in as <strong>abuse-team</strong> (abuse)")
	sessCSRF := csrf(t, p)

	// Sign-out needs the CSRF token too.
	if p = b.post("/desk/sign-out", url.Values{}); p.code != http.StatusForbidden {
		t.Errorf("sign-out without CSRF: %d", p.code)
	}
	if p = b.get("/desk/"); p.code != 200 {
		t.Fatalf("session ended by a forged sign-out: %d", p.code)
	}
	if p = b.post("/desk/sign-out", url.Values{"csrf": {sessCSRF}}); p.code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", p.code)
	}

	// The old cookie, replayed, is worth nothing.
	replay := w.browser()
	u, _ := url.Parse(w.base + "/desk/")
	replay.c.Jar.SetCookies(u, []*http.Cookie{{Name: "aupd_desk", Value: sess.Value, Path: "/desk/"}})
	if p = replay.get("/desk/"); p.code != http.StatusSeeOther || p.location() != "/desk/sign-in" {
		t.Errorf("overview with a signed-out session: %d %q", p.code, p.location())
	}
	acct := "anyone@example.com"
	p = replay.post("/desk/accounts/"+acct+"/lock", url.Values{"csrf": {sessCSRF}, "reason": {"x"}})
	if p.code != http.StatusUnauthorized {
		t.Errorf("action with a signed-out session: %d", p.code)
	}
	if p = b.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("overview after sign-out: %d", p.code)
	}
}

// TestRevokedToken: a session ends when its token is taken out of the
// config or changes role (here: a second aupd on the same Redis, whose
// start records its token set). The end holds on every aupd of that
// Redis, the first one too; a new sign-in there, where the token is still
// configured, works.
func TestRevokedToken(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()
	b.signIn(tokAcmeAbuse)
	v := w.browser()
	v.signIn(tokAcmeViewer)
	w2 := newWorld(t, func(c *config.Config) {
		c.Redis.Prefix = w.cfg.Redis.Prefix
		c.Auth.Tokens = c.Auth.Tokens[:2] // root and abuse-team only
		c.Auth.Tokens = append(c.Auth.Tokens, auth.TokenConfig{Name: "acme-viewer", Hash: auth.HashToken(tokAcmeViewer), Role: auth.RoleAbuse, Company: "acme"})
	})
	// The second aupd's first sweep ends, in Redis, the sessions its
	// tokens no longer allow (both: one token removed, one given another
	// role); it runs as that aupd starts. Wait for it, so that it does not
	// end the session signed in again below.
	u, _ := url.Parse(w.base + "/desk/")
	testutil.Eventually(t, 20*time.Second, func() bool { return !w.sessionStored(b) && !w.sessionStored(v) },
		"the second aupd's sweep did not end the sessions of the revoked tokens")
	b2 := w2.browser()
	b2.c.Jar.SetCookies(u2(t, w2), b.c.Jar.Cookies(u))
	if p := b2.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("session of a removed token: %d", p.code)
	}
	b2.c.Jar.SetCookies(u2(t, w2), v.c.Jar.Cookies(u))
	if p := b2.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("session of a token whose role changed: %d", p.code)
	}
	if p := b.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("the session of the removed token at the first aupd: %d", p.code)
	}
	b.signIn(tokAcmeAbuse)
}

func u2(t *testing.T, w *world) *url.URL {
	u, err := url.Parse(w.base + "/desk/")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSignInIsRateLimited: past the limit, even the right token is
// answered 429 with Retry-After.
func TestSignInIsRateLimited(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Desk.SignInAttempts = 3 })
	b := w.browser()
	for i := range 3 {
		p := b.get("/desk/sign-in")
		if p = b.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {fmt.Sprint("wrong-", i)}}); p.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, p.code)
		}
	}
	p := b.get("/desk/sign-in")
	p = b.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {tokAbuse}})
	if p.code != http.StatusTooManyRequests || p.hdr.Get("Retry-After") == "" {
		t.Fatalf("4th attempt: %d, Retry-After %q", p.code, p.hdr.Get("Retry-After"))
	}
	has(t, p, "Too many sign-in attempts")
	if strings.Contains(strings.Join(p.hdr["Set-Cookie"], ";"), "aupd_desk=") {
		t.Errorf("a limited sign-in set a session")
	}
}

// TestPagesAndActions: the overview, search and the account page with a
// provider abuse token, and every action, checked through the API.
func TestPagesAndActions(t *testing.T) {
	w := newWorld(t, nil)
	acct := "dave@example.com"
	sus := w.overThreshold(acct, 5, plain, plainRaw)
	b := w.browser()
	tok := b.signIn(tokAbuse)

	p := b.get("/desk/")
	has(t, p, "Suspended now", acct, "send, webmail_send", "aup_violation", "Locked out now", "Notices that failed")
	has(t, p, `action="/desk/accounts/`+acct+`/reinstate"`)

	// Search: a whole address opens its page; a part lists.
	if p = b.get("/desk/search?q=DAVE@example.com"); p.code != http.StatusSeeOther || p.location() != "/desk/accounts/"+acct {
		t.Errorf("exact search: %d %q", p.code, p.location())
	}
	p = b.get("/desk/search?q=dave")
	has(t, p, `href="/desk/accounts/`+acct+`"`, `<span class="status status-suspended">sending suspended</span>`)
	p = b.get("/desk/search?q=nobody-here")
	has(t, p, "No account matches")

	// The account page: status, suspensions, counts, evidence, notice, history.
	w.notice(acct, sus) // the notice is rendered (and its evidence kept)
	p = b.get("/desk/accounts/" + acct)
	if p.code != 200 {
		t.Fatalf("account page: %d", p.code)
	}
	counted := w.account(acct)["counts"].(map[string]any)["counting"].(map[string]any)["by_direction"].(map[string]any)["outbound"].(float64)
	if counted < 4 {
		t.Errorf("the API counts %v outbound", counted)
	}
	has(t, p, "Suspensions", "aup_violation", "Rolling counts", fmt.Sprintf("<td>outbound</td><td>%v</td>", counted), "against a threshold of 3",
		"Evidence", "Suspension <code>"+sus+"</code>", `aria-label="Sample 1"`, "Sample 1: Cheap watches", "History",
		"Download evidence.txt", "state-sent")
	ev := b.get("/desk/accounts/" + acct + "/suspensions/" + sus + "/evidence.txt")
	if ev.code != 200 || !strings.Contains(ev.body, "Sample 1 of 3") || !strings.HasPrefix(ev.hdr.Get("Content-Type"), "text/plain") {
		t.Errorf("evidence.txt: %d %q", ev.code, ev.hdr.Get("Content-Type"))
	}

	// Reinstate: the reason is required.
	p = b.post("/desk/accounts/"+acct+"/reinstate", url.Values{"csrf": {tok}, "service": {"send", "webmail_send"}, "reason": {"  "}})
	if p.code != http.StatusBadRequest {
		t.Errorf("reinstate without a reason: %d", p.code)
	}
	has(t, p, "A reason is required")
	if got := suspended(w.account(acct)); len(got) != 2 {
		t.Fatalf("suspended %v after a refused reinstatement", got)
	}
	p = b.post("/desk/accounts/"+acct+"/reinstate", url.Values{"csrf": {tok}, "service": {"send", "webmail_send"}, "reason": {"password changed by the desk test"}})
	if p.code != http.StatusSeeOther || p.location() != "/desk/accounts/"+acct+"?done=reinstate" {
		t.Fatalf("reinstate: %d %q\n%s", p.code, p.location(), p.body)
	}
	a := w.account(acct)
	if got := suspended(a); len(got) != 0 || a["status"] != "active" {
		t.Fatalf("after reinstating: %v %v", a["status"], got)
	}
	h := w.history(acct)[0]
	if h.Action != "reinstate" || h.Actor != "abuse-team" || h.Via != store.ViaDesk || h.Reason != rules.ReasonAdmin || h.Note != "password changed by the desk test" {
		t.Errorf("history %+v", h)
	}
	p = b.get(p.location())
	has(t, p, "Reinstated.", "password changed by the desk test", "via desk")

	// Suspend, lock, unlock; then a lockout ended from the desk.
	steps := []struct {
		action string
		form   url.Values
		check  func(a map[string]any) bool
	}{
		{"suspend", url.Values{"service": {"receive", "imap"}}, func(a map[string]any) bool {
			return slices.Equal(suspended(a), []string{"receive", "imap"})
		}},
		{"lock", nil, func(a map[string]any) bool { return a["status"] == "locked" }},
		{"unlock", nil, func(a map[string]any) bool { return a["status"] == "active" }},
	}
	for _, s := range steps {
		form := url.Values{"csrf": {tok}, "reason": {"desk test " + s.action}}
		for k, v := range s.form {
			form[k] = v
		}
		p = b.post("/desk/accounts/"+acct+"/"+s.action, form)
		if p.code != http.StatusSeeOther {
			t.Fatalf("%s: %d\n%s", s.action, p.code, p.body)
		}
		if a := w.account(acct); !s.check(a) {
			t.Errorf("after %s: %v %v", s.action, a["status"], a["suspended"])
		}
		if h := w.history(acct)[0]; h.Via != store.ViaDesk || h.Note != "desk test "+s.action {
			t.Errorf("history after %s: %+v", s.action, h)
		}
	}
	// unlock again: the account is active already, so nothing changes
	// and no history is written, as in the API.
	n := len(w.history(acct))
	p = b.post("/desk/accounts/"+acct+"/unlock", url.Values{"csrf": {tok}, "reason": {"again"}})
	if p.code != http.StatusSeeOther || !strings.HasSuffix(p.location(), "done=unchanged") || len(w.history(acct)) != n {
		t.Errorf("unlock of an active account: %d %q", p.code, p.location())
	}
	// end-lockout of a locked account is refused: it ends lockouts only.
	if p = b.post("/desk/accounts/"+acct+"/lock", url.Values{"csrf": {tok}, "reason": {"lock again"}}); p.code != http.StatusSeeOther {
		t.Fatalf("lock: %d", p.code)
	}
	if p = b.post("/desk/accounts/"+acct+"/end-lockout", url.Values{"csrf": {tok}, "reason": {"none"}}); p.code != http.StatusConflict {
		t.Errorf("end-lockout of a locked account: %d", p.code)
	}
	has(t, p, "there is no lockout to end")
	if a := w.account(acct); a["status"] != "locked" {
		t.Errorf("after a refused end-lockout: %v", a["status"])
	}
	if _, err := w.st.SetStatus(t.Context(), acct, rules.StatusLockout, w.clk.now().Add(time.Hour), store.Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: "5 failed logins"}); err != nil {
		t.Fatal(err)
	}
	w.flush(acct)
	p = b.get("/desk/")
	has(t, p, "Locked out now", "5 failed logins")
	p = b.post("/desk/accounts/"+acct+"/end-lockout", url.Values{"csrf": {tok}, "reason": {"user called"}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("end-lockout: %d\n%s", p.code, p.body)
	}
	if a := w.account(acct); a["status"] != "active" {
		t.Errorf("after end-lockout: %v", a["status"])
	}

	// An unknown action, a missing account.
	if p = b.post("/desk/accounts/"+acct+"/delete", url.Values{"csrf": {tok}, "reason": {"x"}}); p.code != http.StatusNotFound {
		t.Errorf("unknown action: %d", p.code)
	}
	if p = b.get("/desk/accounts/nobody@example.com"); p.code != http.StatusNotFound {
		t.Errorf("missing account: %d", p.code)
	}
}

// TestNearThreshold: an account with at least half its threshold counted
// is on the overview with its count and a chart of the last 24 hours;
// one of another company is not shown to an acme session.
func TestNearThreshold(t *testing.T) {
	w := newWorld(t, nil)
	near, far, foreign := "olga@example.com", "paul@example.com", "quinn@globex.test"
	now := w.clk.now()
	for i, v := range []struct {
		acct string
		n    int
	}{{near, 2}, {far, 1}, {foreign, 2}} {
		for j := range v.n {
			m := verdict(fmt.Sprintf("near-%d-%d", i, j), v.acct, plain(j), plainRaw(j), now.Add(-time.Duration(j)*time.Hour))
			if _, err := w.js.Publish(t.Context(), "aup.verdict.outbound", m); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.waitNear(near, foreign)
	b := w.browser()
	b.signIn(tokAcmeAbuse)
	p := b.get("/desk/")
	has(t, p, "Near their threshold", `href="/desk/accounts/`+near+`"`, "2 of 3", `<svg class="chart"`, `role="img"`,
		"Counted messages per hour, oldest first: ")
	lacks(t, p, far, foreign)
	// The chart has 24 bars, two of them non-empty.
	if n := strings.Count(p.body, "<rect "); n != 24 {
		t.Errorf("%d bars, want 24", n)
	}
	if n := strings.Count(p.body, ": 1</title></rect>"); n != 2 {
		t.Errorf("%d hours with one event, want 2", n)
	}
	// Its page shows the counts, though aupd keeps no record of it yet;
	// another company's such account is a 404 like a missing one.
	p = b.get("/desk/accounts/" + near)
	if p.code != 200 {
		t.Fatalf("page of %s: %d", near, p.code)
	}
	has(t, p, "2 counted against a threshold of 3", "Company: Acme Ltd", "Nothing is suspended.", "not provisioned; 2 of 3 counted")
	missing, foreignPage := b.get("/desk/accounts/nobody@example.com"), b.get("/desk/accounts/"+foreign)
	if foreignPage.code != 404 || foreignPage.body != missing.body {
		t.Errorf("foreign near account: %d", foreignPage.code)
	}
	// Acting on it creates its record, with its company, as the API does.
	p = b.post("/desk/accounts/"+near+"/lock", url.Values{"csrf": {csrf(t, p)}, "reason": {"suspicious"}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("lock: %d\n%s", p.code, p.body)
	}
	if p := b.get("/desk/accounts/" + near); p.code != 200 || strings.Contains(p.body, "not provisioned") {
		t.Errorf("page after lock (a record now): %d", p.code)
	}
	if a := w.account(near); a["status"] != "locked" || a["company"] != "acme" {
		t.Errorf("after lock: %v %v", a["status"], a["company"])
	}
}

// TestFailedNotice: a notice that cannot be delivered is on the overview
// and its state on the account page.
func TestFailedNotice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there: every attempt is refused
	w := newWorld(t, func(c *config.Config) {
		c.Notifier.EMLDir = ""
		c.Notifier.SMTP.Host, c.Notifier.SMTP.Port, c.Notifier.SMTP.TLS = "127.0.0.1", port, "none"
		c.Notifier.GiveUpAfter = time.Millisecond
		c.Notifier.RetryMin, c.Notifier.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	})
	acct := "rosa@example.com"
	w.overThreshold(acct, 4, plain, plainRaw)
	b := w.browser()
	b.signIn(tokAcmeAbuse)
	var p page
	deadline := time.Now().Add(20 * time.Second)
	for {
		// the notice is pending, then sending, before it fails for good
		p = b.get("/desk/")
		if strings.Contains(p.body, "state-failed") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	has(t, p, "Notices that failed <span class=\"count\">1</span>", "abuse@example.com", "gave up after", `state-failed`)
	p = b.get("/desk/accounts/" + acct)
	has(t, p, `<span class="state state-failed">failed</span> to abuse@example.com`)
}

// TestCSRF: every change needs the session's CSRF token; a refused form
// changes nothing.
func TestCSRF(t *testing.T) {
	w := newWorld(t, nil)
	acct := "erin@example.com"
	w.overThreshold(acct, 4, plain, plainRaw)
	n := len(w.history(acct))
	b := w.browser()
	tok := b.signIn(tokAbuse)
	other := w.browser()
	otherTok := other.signIn(tokAbuse)
	if tok == otherTok {
		t.Fatal("two sessions share a CSRF token")
	}
	for _, form := range []url.Values{
		{"service": {"send"}, "reason": {"forged"}},
		{"service": {"send"}, "reason": {"forged"}, "csrf": {""}},
		{"service": {"send"}, "reason": {"forged"}, "csrf": {"x" + tok}},
		{"service": {"send"}, "reason": {"forged"}, "csrf": {otherTok}},
	} {
		p := b.post("/desk/accounts/"+acct+"/reinstate", form)
		if p.code != http.StatusForbidden {
			t.Errorf("reinstate with csrf %q: %d", form.Get("csrf"), p.code)
		}
		has(t, p, "out of date")
	}
	if got := suspended(w.account(acct)); len(got) != 2 {
		t.Errorf("a forged form changed the account: %v", got)
	}
	if h := w.history(acct); len(h) != n {
		t.Errorf("a forged form wrote history: %+v", h[0])
	}
}

// TestCompanyScope: an acme session sees acme's accounts only; another
// company's account answers exactly as a missing one, for pages and
// actions; a viewer sees no forms and may not act.
func TestCompanyScope(t *testing.T) {
	w := newWorld(t, nil)
	mine, theirs := "frank@example.com", "gina@globex.test"
	w.overThreshold(mine, 4, plain, plainRaw)
	w.overThreshold(theirs, 4, plain, plainRaw)
	b := w.browser()
	tok := b.signIn(tokAcmeAbuse)

	p := b.get("/desk/")
	has(t, p, mine, "(abuse, acme)")
	lacks(t, p, theirs)
	if p = b.get("/desk/search?q=gina"); strings.Contains(p.body, theirs) {
		t.Errorf("search shows another company's account")
	}
	if p = b.get("/desk/search?q=" + theirs); p.code != 200 || strings.Contains(p.body, `href="/desk/accounts/`+theirs) {
		t.Errorf("exact search of another company's account: %d", p.code)
	}

	missing := b.get("/desk/accounts/nobody@example.com")
	foreign := b.get("/desk/accounts/" + theirs)
	if missing.code != http.StatusNotFound || foreign.code != http.StatusNotFound || missing.body != foreign.body {
		t.Errorf("foreign account %d, missing %d; bodies equal: %v\n%s\n---\n%s", foreign.code, missing.code, missing.body == foreign.body, foreign.body, missing.body)
	}
	pm := b.post("/desk/accounts/nobody@example.com/reinstate", url.Values{"csrf": {tok}, "service": {"send"}, "reason": {"x"}})
	pf := b.post("/desk/accounts/"+theirs+"/reinstate", url.Values{"csrf": {tok}, "service": {"send"}, "reason": {"x"}})
	if pm.code != http.StatusNotFound || pf.code != http.StatusNotFound || pm.body != pf.body {
		t.Errorf("reinstate foreign %d, missing %d; bodies equal: %v", pf.code, pm.code, pm.body == pf.body)
	}
	ef := b.get("/desk/accounts/" + theirs + "/suspensions/x/evidence.txt")
	if ef.code != http.StatusNotFound || ef.body != missing.body {
		t.Errorf("foreign evidence: %d", ef.code)
	}
	if got := suspended(w.account(theirs)); len(got) != 2 {
		t.Errorf("another company's account changed: %v", got)
	}
	// The same over the API: 404 for both.
	codeF, bodyF := w.api("GET", "/api/v1/accounts/"+theirs, tokAcmeAbuse, nil)
	codeM, bodyM := w.api("GET", "/api/v1/accounts/nobody@example.com", tokAcmeAbuse, nil)
	if codeF != 404 || codeM != 404 || fmt.Sprint(bodyF) != fmt.Sprint(bodyM) {
		t.Errorf("API: foreign %d %v, missing %d %v", codeF, bodyF, codeM, bodyM)
	}

	// A viewer of acme: the page, but no forms, and no changes.
	v := w.browser()
	vtok := v.signIn(tokAcmeViewer)
	p = v.get("/desk/accounts/" + mine)
	has(t, p, "Suspensions")
	lacks(t, p, "/reinstate\"", "Actions")
	if p = v.post("/desk/accounts/"+mine+"/reinstate", url.Values{"csrf": {vtok}, "service": {"send"}, "reason": {"x"}}); p.code != http.StatusForbidden {
		t.Errorf("viewer reinstates: %d", p.code)
	}
	if got := suspended(w.account(mine)); len(got) != 2 {
		t.Errorf("a viewer changed the account: %v", got)
	}
}

// TestWhoMayLift: a company's token, session or link lifts AUP
// suspensions and its own, never the provider's, in the API and the desk
// alike; the history says who, by which door, with abuse_contact.
func TestWhoMayLift(t *testing.T) {
	w := newWorld(t, nil)
	acct := "hank@example.com"
	w.overThreshold(acct, 4, plain, plainRaw)
	// The provider suspends receiving; acme suspends IMAP.
	if code, body := w.api("POST", "/api/v1/accounts/"+acct+"/suspend", tokRoot, map[string]any{"services": []string{"receive"}, "reason": "provider hold"}); code != 200 {
		t.Fatalf("provider suspends: %d %v", code, body)
	}
	if code, body := w.api("POST", "/api/v1/accounts/"+acct+"/suspend", tokAcmeAbuse, map[string]any{"services": []string{"imap"}, "reason": "acme hold"}); code != 200 {
		t.Fatalf("acme suspends: %d %v", code, body)
	}

	// The API: the provider's suspension is refused with a clear message.
	code, body := w.api("POST", "/api/v1/accounts/"+acct+"/reinstate", tokAcmeAbuse, map[string]any{"services": []string{"receive"}, "reason": "try"})
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(body), "provider_suspension") || !strings.Contains(fmt.Sprint(body), "receive was suspended by the provider") {
		t.Errorf("acme lifts the provider's suspension: %d %v", code, body)
	}
	// Reinstating everything includes it, so that is refused whole.
	if code, _ = w.api("POST", "/api/v1/accounts/"+acct+"/reinstate", tokAcmeAbuse, map[string]any{"reason": "all"}); code != http.StatusForbidden {
		t.Errorf("acme lifts everything: %d", code)
	}
	if got := suspended(w.account(acct)); !slices.Equal(got, []string{"send", "receive", "imap", "webmail_send"}) {
		t.Fatalf("after refusals: %v", got)
	}
	// Its own and the AUP suspension: allowed, recorded as abuse_contact by token.
	if code, body = w.api("POST", "/api/v1/accounts/"+acct+"/reinstate", tokAcmeAbuse, map[string]any{"services": []string{"imap"}, "reason": "acme lifts its own"}); code != 200 {
		t.Errorf("acme lifts its own: %d %v", code, body)
	}
	if h := w.history(acct)[0]; h.Actor != "acme-abuse" || h.Reason != "abuse_contact" || h.Via != store.ViaToken {
		t.Errorf("history %+v", h)
	}

	// The desk: the provider's suspension is marked and not offered; a
	// forged attempt is refused with the same message.
	b := w.browser()
	tok := b.signIn(tokAcmeAbuse)
	p := b.get("/desk/accounts/" + acct)
	has(t, p, `<span class="tag provider">provider</span>`, `value="send" checked`, `value="webmail_send" checked`)
	lacks(t, p, `value="receive" checked`)
	p = b.get("/desk/")
	has(t, p, "only the provider can lift that", "Reinstate send, webmail_send")
	p = b.post("/desk/accounts/"+acct+"/reinstate", url.Values{"csrf": {tok}, "service": {"receive"}, "reason": {"try"}})
	if p.code != http.StatusForbidden {
		t.Errorf("desk lifts the provider's suspension: %d", p.code)
	}
	has(t, p, "receive was suspended by the provider")
	// From the overview's form: the AUP suspension only.
	p = b.post("/desk/accounts/"+acct+"/reinstate", url.Values{"csrf": {tok}, "back": {"overview"}, "service": {"send", "webmail_send"}, "reason": {"password changed"}})
	if p.code != http.StatusSeeOther || !strings.HasPrefix(p.location(), "/desk/?done=reinstate") {
		t.Fatalf("desk reinstates: %d %q\n%s", p.code, p.location(), p.body)
	}
	if got := suspended(w.account(acct)); !slices.Equal(got, []string{"receive"}) {
		t.Errorf("after the desk reinstated: %v", got)
	}
	if h := w.history(acct)[0]; h.Actor != "acme-abuse" || h.Reason != "abuse_contact" || h.Via != store.ViaDesk {
		t.Errorf("history %+v", h)
	}
	// The provider lifts its own.
	if code, _ = w.api("POST", "/api/v1/accounts/"+acct+"/reinstate", tokRoot, map[string]any{"reason": "provider done"}); code != 200 {
		t.Errorf("provider reinstates: %d", code)
	}
	if h := w.history(acct)[0]; h.Reason != "admin" || h.Via != store.ViaToken {
		t.Errorf("provider's history %+v", h)
	}
}

// TestSignedLink: the link of a delivered notice shows the account and
// reinstates once; expired, tampered, reused and foreign-suspension
// links do not reinstate.
func TestSignedLink(t *testing.T) {
	w := newWorld(t, nil)
	acct := "ivan@example.com"
	sus := w.overThreshold(acct, 4, plain, plainRaw)
	body, link := w.notice(acct, sus)
	for _, want := range []string{"Open this page to see the evidence and reinstate", "needs no password or API token", "reinstates this suspension once"} {
		if !strings.Contains(body, want) {
			t.Errorf("notice lacks %q", want)
		}
	}
	b := w.browser() // no session: the link is enough
	p := b.get(link)
	if p.code != 200 {
		t.Fatalf("link: %d\n%s", p.code, p.body)
	}
	has(t, p, "From your abuse notice", "Sample 1: Cheap watches", `action="`+link+`/reinstate"`, "Reinstate sending (send, webmail_send)")
	lacks(t, p, "Signed in as", "Download evidence.txt")
	form := csrf(t, p)

	// Tampered: any change to the token voids it.
	tampered := link[:len(link)-3] + "AAA"
	if strings.HasSuffix(link, "AAA") {
		tampered = link[:len(link)-3] + "BBB"
	}
	for _, bad := range []string{tampered, "/desk/l/garbage", "/desk/l/" + strings.Repeat("x", 2000)} {
		if p = b.get(bad); p.code != http.StatusNotFound {
			t.Errorf("GET %s: %d", bad[:min(len(bad), 60)], p.code)
		}
		if p = b.post(bad+"/reinstate", url.Values{"csrf": {form}, "reason": {"x"}}); p.code != http.StatusNotFound {
			t.Errorf("POST %s: %d", bad[:min(len(bad), 60)], p.code)
		}
	}
	// The form's CSRF token and the reason are required.
	if p = b.post(link+"/reinstate", url.Values{"reason": {"x"}}); p.code != http.StatusForbidden {
		t.Errorf("link without CSRF: %d", p.code)
	}
	if p = b.post(link+"/reinstate", url.Values{"csrf": {form}, "reason": {""}}); p.code != http.StatusBadRequest {
		t.Errorf("link without reason: %d", p.code)
	}
	if got := suspended(w.account(acct)); len(got) != 2 {
		t.Fatalf("refused link posts changed the account: %v", got)
	}

	// Reinstate once.
	p = b.post(link+"/reinstate", url.Values{"csrf": {form}, "reason": {"password changed via link"}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("link reinstates: %d\n%s", p.code, p.body)
	}
	a := w.account(acct)
	if got := suspended(a); len(got) != 0 || a["status"] != "active" {
		t.Fatalf("after the link: %v %v", a["status"], got)
	}
	h := w.history(acct)[0]
	if h.Action != "reinstate" || h.Actor != desk.LinkActor || h.Via != store.ViaLink || h.Reason != "abuse_contact" || h.Note != "password changed via link" {
		t.Errorf("history %+v", h)
	}
	p = b.get(p.location())
	has(t, p, "Reinstated.", "This link reinstated the mailbox on", "via link")
	lacks(t, p, `/reinstate"`)
	// Reused: refused, read-only.
	if p = b.post(link+"/reinstate", url.Values{"csrf": {form}, "reason": {"again"}}); p.code != http.StatusConflict {
		t.Errorf("reused link: %d", p.code)
	}

	// Foreign suspension: the account is suspended again; the old link
	// shows it but cannot lift the new suspension.
	sus2 := w.overThreshold(acct, 4, plain, plainRaw)
	if sus2 == sus {
		t.Fatal("no new suspension")
	}
	p = b.get(link)
	has(t, p, "This link reinstated the mailbox")
	lacks(t, p, `/reinstate"`)
	if p = b.post(link+"/reinstate", url.Values{"csrf": {form}, "reason": {"old link"}}); p.code != http.StatusConflict {
		t.Errorf("old link on a new suspension: %d", p.code)
	}
	// A link signed for a suspension id that is not the one in force
	// (signed with the right key) lifts nothing either.
	links := desk.NewLinks(w.cfg.Desk)
	other, _, _ := links.URL(acct, "not-"+sus2, w.clk.now())
	other = strings.TrimPrefix(other, "http://desk.test")
	p = b.get(other)
	has(t, p, "no longer in force")
	lacks(t, p, `/reinstate"`)
	otherForm := links.FormToken(other[strings.LastIndexByte(other, '/')+1:])
	if p = b.post(other+"/reinstate", url.Values{"csrf": {otherForm}, "reason": {"foreign"}}); p.code != http.StatusConflict {
		t.Errorf("foreign-suspension link: %d", p.code)
	}
	if got := suspended(w.account(acct)); len(got) != 2 {
		t.Errorf("old links lifted the new suspension: %v", got)
	}

	// The new notice's link works until it expires.
	_, link2 := w.notice(acct, sus2)
	p = b.get(link2)
	form2 := csrf(t, p)
	w.clk.add(w.cfg.Desk.LinkTTL + time.Minute)
	if p = b.get(link2); p.code != http.StatusGone {
		t.Errorf("expired link: %d", p.code)
	}
	has(t, p, "This link expired on")
	lacks(t, p, "Sample 1:", "Cheap watches")
	if p = b.post(link2+"/reinstate", url.Values{"csrf": {form2}, "reason": {"late"}}); p.code != http.StatusGone {
		t.Errorf("expired link posts: %d", p.code)
	}
	if got := suspended(w.account(acct)); len(got) != 2 {
		t.Errorf("an expired link reinstated: %v", got)
	}
}

// TestHostileEvidence: markup in a subject or message text is shown as
// text and never becomes markup.
func TestHostileEvidence(t *testing.T) {
	w := newWorld(t, nil)
	acct := "judy@example.com"
	subject := func(i int) string { return fmt.Sprintf(`<script>alert("s%d")</script>`, i) }
	raw := func(i int) string {
		return fmt.Sprintf("Subject: <b>bold %d</b>\r\n\r\n</pre><script>alert('x%d')</script><img src=x onerror=alert(%d)>\r\n\"'><svg onload=alert(1)>\r\n", i, i, i)
	}
	sus := w.overThreshold(acct, 4, subject, raw)
	w.notice(acct, sus)
	b := w.browser()
	b.signIn(tokAbuse)
	p := b.get("/desk/accounts/" + acct)
	if p.code != 200 {
		t.Fatalf("account page: %d", p.code)
	}
	has(t, p, "&lt;script&gt;alert(", "&lt;/pre&gt;&lt;script&gt;", "&lt;img src=x onerror=alert(", "&lt;svg onload=alert(1)&gt;")
	lacks(t, p, "<script", "<img", "<svg onload", "onerror=alert(1)>")
	if n := strings.Count(p.body, "<pre"); n != strings.Count(p.body, "</pre>") {
		t.Errorf("%d <pre> but %d </pre>: the evidence broke out", n, strings.Count(p.body, "</pre>"))
	}
}

// TestNoticeRedirectedFromItsMailbox: when the company's abuse contact is
// the suspended mailbox, the notice goes to the provider's fallback
// contact, and the account page and the API say so and why.
func TestNoticeRedirectedFromItsMailbox(t *testing.T) {
	w := newWorld(t, nil)
	acct := "abuse@example.com" // acme's abuse contact
	sus := w.overThreshold(acct, 5, plain, plainRaw)
	w.notice(acct, sus)
	note := "notice sent to the provider&#39;s fallback contact because the company&#39;s abuse contact is this mailbox"
	n := w.account(acct)["last_suspension"].(map[string]any)["notice"].(map[string]any)
	if n["recipient"] != w.cfg.Notifier.FallbackAbuseContact || n["recipient_reason"] != "contact_is_account" ||
		n["recipient_note"] != html.UnescapeString(note) {
		t.Errorf("the API's notice state: %v", n)
	}
	b := w.browser()
	b.signIn(tokAbuse)
	p := b.get("/desk/accounts/" + acct)
	has(t, p, "state-sent", "to "+w.cfg.Notifier.FallbackAbuseContact, note)
}

// TestCaseNotes: the account page's note form adds a note to the history
// with its author, shown escaped; it needs the CSRF token and role abuse,
// keeps to the session's company, refuses a note too long, and gives an
// address without a record neither a note nor a record.
func TestCaseNotes(t *testing.T) {
	w := newWorld(t, nil)
	mine, theirs := "nina@example.com", "omar@globex.test"
	for _, a := range []string{mine, theirs} {
		if code, body := w.api("POST", "/api/v1/accounts/"+a+"/lock", tokRoot, map[string]any{"reason": "set up"}); code != 200 {
			t.Fatalf("lock %s: %d %v", a, code, body)
		}
	}
	b := w.browser()
	tok := b.signIn(tokAcmeAbuse)
	p := b.get("/desk/accounts/" + mine)
	has(t, p, `action="/desk/accounts/`+mine+`/note"`, `name="text"`, "Add a note")

	form := func(text string) url.Values { return url.Values{"csrf": {tok}, "text": {text}} }
	if p = b.post("/desk/accounts/"+mine+"/note", url.Values{"text": {"no csrf"}}); p.code != http.StatusForbidden {
		t.Errorf("note without CSRF: %d", p.code)
	}
	if p = b.post("/desk/accounts/"+mine+"/note", form(strings.Repeat("x", 1001))); p.code != http.StatusBadRequest {
		t.Errorf("note too long: %d", p.code)
	} else {
		has(t, p, "Note not added: the note is longer than 1000 characters.")
	}
	if p = b.post("/desk/accounts/"+theirs+"/note", form("x")); p.code != http.StatusNotFound {
		t.Errorf("note on another company's account: %d", p.code)
	}
	if p = b.post("/desk/accounts/nobody@example.com/note", form("x")); p.code != http.StatusNotFound {
		t.Errorf("note on an address without a record: %d", p.code)
	}
	if code, _ := w.api("GET", "/api/v1/accounts/nobody@example.com", tokRoot, nil); code != http.StatusNotFound {
		t.Errorf("a note created a record: GET answers %d", code)
	}
	v := w.browser()
	vtok := v.signIn(tokAcmeViewer)
	lacks(t, v.get("/desk/accounts/"+mine), "/note\"")
	if p = v.post("/desk/accounts/"+mine+"/note", url.Values{"csrf": {vtok}, "text": {"x"}}); p.code != http.StatusForbidden {
		t.Errorf("viewer adds a note: %d", p.code)
	}
	for _, a := range []string{mine, theirs} {
		if code, h := w.api("GET", "/api/v1/accounts/"+a+"/history", tokRoot, nil); code != 200 || strings.Contains(fmt.Sprint(h), "action:note") {
			t.Fatalf("a refused note was written on %s: %d %v", a, code, h)
		}
	}

	p = b.post("/desk/accounts/"+mine+"/note", form("called the user, <b>new</b> password set"))
	if p.code != http.StatusSeeOther || p.location() != "/desk/accounts/"+mine+"?done=note" {
		t.Fatalf("note: %d %q", p.code, p.location())
	}
	p = b.get(p.location())
	has(t, p, "Note added to the history.", "<strong>note</strong>", "by acme-abuse via desk, reason the company&#39;s abuse contact&#39;s decision <code>abuse_contact</code>",
		"“called the user, &lt;b&gt;new&lt;/b&gt; password set”")
	lacks(t, p, "<b>new</b>")
	_, h := w.api("GET", "/api/v1/accounts/"+mine+"/history", tokRoot, nil)
	e := h["entries"].([]any)[0].(map[string]any)
	if e["action"] != "note" || e["actor"] != "acme-abuse" || e["via"] != "desk" || e["note"] != "called the user, <b>new</b> password set" {
		t.Errorf("history entry %v", e)
	}
}

// TestNoticeNotSentToItsMailbox: when the company's abuse contact and the
// fallback contact are both the suspended mailbox, no notice is written,
// and the overview and the account page say why.
func TestNoticeNotSentToItsMailbox(t *testing.T) {
	acct := "abuse@example.com"
	w := newWorld(t, func(c *config.Config) { c.Notifier.FallbackAbuseContact = "Abuse+Desk@Example.com" })
	sus := w.overThreshold(acct, 5, plain, plainRaw)
	var n map[string]any
	testutil.Eventually(t, 30*time.Second, func() bool {
		ls, _ := w.account(acct)["last_suspension"].(map[string]any)
		n, _ = ls["notice"].(map[string]any)
		return n != nil && n["state"] == "failed"
	}, "the notice of %s was not recorded as failed", sus)
	if n["recipient_reason"] != "fallback_is_account" || n["recipient"] != nil && n["recipient"] != "" {
		t.Errorf("notice state %v", n)
	}
	files, err := os.ReadDir(w.emlDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if noticeFile(f.Name()) {
			t.Errorf("a notice was written: %s", f.Name())
		}
	}
	b := w.browser()
	b.signIn(tokRoot)
	has(t, b.get("/desk/"), "Notices that failed <span class=\"count\">1</span>", `<span class="muted">not sent</span>`, "fallback contact is this mailbox")
	has(t, b.get("/desk/accounts/"+acct), "state-failed", "notice not sent: the provider&#39;s fallback contact is this mailbox")
}

// TestForgedLinksLimited: a link whose signature does not hold counts as a
// failed authentication of its client, with the API's wrong tokens; past
// http.auth_failures the client gets 429 even for a real link.
func TestForgedLinksLimited(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.HTTP.AuthFailures = 3 })
	acct := "olga@example.com"
	sus := w.overThreshold(acct, 4, plain, plainRaw)
	_, link := w.notice(acct, sus)
	b := w.browser()
	forged := link[:len(link)-4] + "AAAA"
	if forged == link {
		forged = link[:len(link)-4] + "BBBB"
	}
	if p := b.get(forged); p.code != 404 {
		t.Fatalf("a forged link: %d", p.code)
	}
	if p := b.get("/desk/sign-in/link/not.a.link"); p.code != 404 {
		t.Fatalf("a forged sign-in link: %d", p.code)
	}
	// The third failure is a wrong API token.
	req, _ := http.NewRequest("GET", w.base+"/api/v1/accounts/"+acct, nil)
	req.Header.Set("Authorization", "Bearer wrong-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	p := b.get(link)
	if p.code != 429 || p.hdr.Get("Retry-After") == "" {
		t.Fatalf("the real link after 3 failures: %d (Retry-After %q), want 429", p.code, p.hdr.Get("Retry-After"))
	}
}
