package desk_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// alice is a desk contact of acme (desk_contacts), outside its domains.
const alice = "alice@partner.test"

func withAlice(c *config.Config) {
	c.Companies[0].DeskContacts = []string{"Alice@Partner.test"}
}

// TestSignInByMail: the sign-in page offers a link by mail first and the
// token second; asking for a link answers the same page whatever the
// address, mails a link to a contact only, and the link signs its person
// in once, as role abuse for the company, with changes recorded in the
// person's name. Opening the link does not use it up; the link is never
// logged, and the sign-in is logged with the client's address.
func TestSignInByMail(t *testing.T) {
	w, srv := newMailWorld(t, withAlice)
	b := w.browser()
	p := b.get("/desk/sign-in")
	has(t, p, `action="/desk/sign-in/link"`, `name="address"`, "Email me a sign-in link", "Sign in with an API token", "expires in 15 minutes")
	if i, j := strings.Index(p.body, "Email me a sign-in link"), strings.Index(p.body, "Sign in with an API token"); i < 0 || j < i {
		t.Errorf("the mail form is not first")
	}

	// A contact and an address that is not one: the same answer.
	known, unknown := b.askLink("Alice@Partner.test", ""), w.browser().askLink("nobody@example.com", "")
	if known.code != http.StatusOK || unknown.code != http.StatusOK || known.body != unknown.body {
		t.Fatalf("answers differ: %d, %d\n%s\n---\n%s", known.code, unknown.code, known.body, unknown.body)
	}
	if strings.Join(known.hdr["Set-Cookie"], "") != strings.Join(unknown.hdr["Set-Cookie"], "") {
		t.Errorf("cookies differ: %q %q", known.hdr["Set-Cookie"], unknown.hdr["Set-Cookie"])
	}
	has(t, known, "If that address may sign in, a link is on its way; it works once and expires in 15 minutes.")
	lacks(t, known, "alice", "Signed in as")
	// A malformed address is told so (that says nothing about accounts).
	if p := w.browser().askLink("not an address", ""); p.code != http.StatusBadRequest {
		t.Errorf("malformed address: %d", p.code)
	} else {
		has(t, p, "That is not an email address.")
	}

	w.linksAsked(2)
	if got := w.metric(`aupd_desk_sign_in_links_total{result="unknown"}`); got != 1 {
		t.Errorf("unknown: %v", got)
	}
	if n := len(srv.Mail()); n != 1 {
		t.Fatalf("%d mails, want 1 (to the contact only)", n)
	}
	texts, paths := signInMails(t, srv, alice)
	if len(texts) != 1 || paths[0] == "" {
		t.Fatalf("mails to %s: %q", alice, texts)
	}
	text, link := texts[0], paths[0]
	for _, want := range []string{"someone asked to sign in to the abuse desk as " + alice, "To sign in for Acme Ltd, open this link",
		"The link works once and expires at", "15 minutes", "from the address 127.0.0.1", "If you did not ask for it, ignore this message"} {
		if !strings.Contains(text, want) {
			t.Errorf("mail lacks %q:\n%s", want, text)
		}
	}
	if m := srv.Mail()[0]; m.From != "abuse-desk@provider.test" {
		t.Errorf("mail from %q", m.From)
	}

	// Opening the link (twice, as a mail filter might) signs in nobody and
	// uses nothing up.
	scanner := w.browser()
	for range 2 {
		p = scanner.get(link)
		if p.code != http.StatusOK {
			t.Fatalf("GET link: %d\n%s", p.code, p.body)
		}
		has(t, p, "Sign in as <strong>"+alice+"</strong> for <strong>Acme Ltd</strong>", `<button type="submit" id="sign-in">Sign in</button>`)
		if strings.Contains(strings.Join(p.hdr["Set-Cookie"], ";"), "aupd_desk=") {
			t.Errorf("opening the link set a session")
		}
	}
	if p = scanner.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("the scanner is signed in: %d", p.code)
	}
	// The button needs the form's token.
	form := csrf(t, scanner.get(link))
	if p = scanner.post(link, url.Values{}); p.code != http.StatusForbidden {
		t.Errorf("POST without CSRF: %d", p.code)
	}

	person := w.browser()
	p = person.useLink(link)
	if p.code != http.StatusSeeOther || p.location() != "/desk/" {
		t.Fatalf("sign-in with the link: %d %q\n%s", p.code, p.location(), p.body)
	}
	p = person.get("/desk/")
	has(t, p, "Signed in as <strong>"+alice+"</strong> (abuse, acme)")
	tok := csrf(t, p)
	// Once only.
	if p = scanner.post(link, url.Values{"csrf": {form}}); p.code != http.StatusGone {
		t.Errorf("second use: %d", p.code)
	}
	if p = scanner.get(link); p.code != http.StatusGone {
		t.Errorf("GET after use: %d", p.code)
	} else {
		has(t, p, "This sign-in link has been used")
	}

	// A change is made in the person's name, for acme only.
	acct, theirs := "pat@example.com", "quinn@globex.test"
	for _, a := range []string{acct, theirs} {
		if code, body := w.api("POST", "/api/v1/accounts/"+a+"/lock", tokRoot, map[string]any{"reason": "set up"}); code != 200 {
			t.Fatalf("lock %s: %d %v", a, code, body)
		}
	}
	if p = person.post("/desk/accounts/"+acct+"/unlock", url.Values{"csrf": {tok}, "reason": {"called the user"}}); p.code != http.StatusSeeOther {
		t.Fatalf("unlock: %d\n%s", p.code, p.body)
	}
	if h := w.history(acct)[0]; h.Status != "active" || h.Actor != alice || h.Via != store.ViaDesk || h.Reason != rules.ReasonAbuseContact || h.Note != "called the user" {
		t.Errorf("history %+v", h)
	}
	if p = person.post("/desk/accounts/"+theirs+"/unlock", url.Values{"csrf": {tok}, "reason": {"x"}}); p.code != http.StatusNotFound {
		t.Errorf("another company's account: %d", p.code)
	}

	logs := w.logs.String()
	_, secret, _ := strings.Cut(link, "/sign-in/link/")
	payload, _, _ := strings.Cut(secret, ".")
	if strings.Contains(logs, payload) {
		t.Errorf("the link is in the log:\n%s", logs)
	}
	if !regexp.MustCompile(`msg="desk sign-in with a mailed link" component=desk person=` + regexp.QuoteMeta(alice) + ` role=abuse company=acme client=127\.0\.0\.1`).MatchString(logs) {
		t.Errorf("no log line of the sign-in with its client:\n%s", logs)
	}
}

// TestSignInLinkRefusals: a changed, expired, foreign-key or notice link
// does not sign in, nor does a sign-in link open a notice's page; a link
// of an address that is no longer a contact is refused.
func TestSignInLinkRefusals(t *testing.T) {
	w := newWorld(t, withAlice)
	links := desk.NewLinks(w.cfg.Desk)
	path := func(tok string) string { return "/desk/sign-in/link/" + tok }
	tok, _ := links.SignIn(alice, "acme", "", w.clk.now())
	b := w.browser()
	form := csrf(t, b.get(path(tok)))

	tampered := tok[:len(tok)-2] + "AA"
	if strings.HasSuffix(tok, "AA") {
		tampered = tok[:len(tok)-2] + "BB"
	}
	otherKey := w.cfg.Desk
	otherKey.LinkKey = "another-link-key-0123456789-0123456789-abc"
	foreign, _ := desk.NewLinks(otherKey).SignIn(alice, "acme", "", w.clk.now())
	notice, _, _ := links.URL("pat@example.com", "sus-1", w.clk.now())
	noticeTok := notice[strings.LastIndexByte(notice, '/')+1:]
	for name, bad := range map[string]string{"tampered": tampered, "another key": foreign, "a notice link": noticeTok, "garbage": "x.y"} {
		if p := b.get(path(bad)); p.code != http.StatusNotFound {
			t.Errorf("GET %s: %d", name, p.code)
		}
		if p := b.post(path(bad), url.Values{"csrf": {form}}); p.code != http.StatusNotFound {
			t.Errorf("POST %s: %d", name, p.code)
		}
	}
	// A sign-in link is no notice link either.
	if p := b.get("/desk/l/" + tok); p.code != http.StatusNotFound {
		t.Errorf("a sign-in link as a notice link: %d", p.code)
	}
	// A link for an address that may not sign in for that company (signed
	// with the right key: what a contact removed since holds).
	for _, c := range [][2]string{{"nobody@example.com", "acme"}, {alice, "globex"}, {alice, "no-such-company"}} {
		tk, _ := links.SignIn(c[0], c[1], "", w.clk.now())
		if p := b.get(path(tk)); p.code != http.StatusGone {
			t.Errorf("link of %s for %s: %d", c[0], c[1], p.code)
		}
	}
	// Expired.
	w.clk.add(w.cfg.Desk.SignInLinkTTL + time.Second)
	if p := b.get(path(tok)); p.code != http.StatusGone {
		t.Errorf("expired: %d", p.code)
	} else {
		has(t, p, "This sign-in link expired at")
	}
	if p := b.post(path(tok), url.Values{"csrf": {form}}); p.code != http.StatusGone {
		t.Errorf("expired, POST: %d", p.code)
	}
	if p := b.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("refused links signed in: %d", p.code)
	}
}

// TestSignInLinkLimitPerAddress: an address gets at most sign_in_mails
// links per window, however often it is asked for (from anywhere); the
// answer stays the same.
func TestSignInLinkLimitPerAddress(t *testing.T) {
	w, srv := newMailWorld(t, withAlice)
	var first page
	for i := range 5 {
		p := w.browser().askLink(alice, "")
		if i == 0 {
			first = p
		}
		if p.code != http.StatusOK || p.body != first.body {
			t.Fatalf("ask %d: %d", i, p.code)
		}
	}
	w.linksAsked(5)
	if sent, limited := w.metric(`aupd_desk_sign_in_links_total{result="sent"}`), w.metric(`aupd_desk_sign_in_links_total{result="limited"}`); sent != 3 || limited != 2 {
		t.Errorf("sent %v, limited %v; want 3 and 2", sent, limited)
	}
	if texts, _ := signInMails(t, srv, alice); len(texts) != 3 {
		t.Errorf("%d mails, want 3", len(texts))
	}
	// Another address has its own count.
	w.browser().askLink("abuse@example.com", "")
	w.linksAsked(6)
	if texts, _ := signInMails(t, srv, "abuse@example.com"); len(texts) != 1 {
		t.Errorf("the abuse contact got %d mails", len(texts))
	}
}

// TestPersonSessionEnds: a person's session ends when the link key
// changes (another aupd on the same Redis with another key: the session
// is refused there and so ends everywhere), and when the address is no
// longer a contact of the company (here an API-managed company changed
// over the API); it stays ended when the contact comes back.
func TestPersonSessionEnds(t *testing.T) {
	w := newWorld(t, withAlice)
	links := desk.NewLinks(w.cfg.Desk)
	signIn := func(addr, company string) *browser {
		t.Helper()
		tok, _ := links.SignIn(addr, company, "", w.clk.now())
		b := w.browser()
		if p := b.useLink("/desk/sign-in/link/" + tok); p.code != http.StatusSeeOther {
			t.Fatalf("sign-in of %s: %d\n%s", addr, p.code, p.body)
		}
		return b
	}
	b := signIn(alice, "acme")
	if p := b.get("/desk/"); p.code != http.StatusOK {
		t.Fatalf("overview: %d", p.code)
	}
	w2 := newWorld(t, func(c *config.Config) {
		withAlice(c)
		c.Redis.Prefix = w.cfg.Redis.Prefix
		c.Desk.LinkKey = "a-new-link-key-0123456789-0123456789-abcd"
	})
	// The second aupd's first sweep ends the session of the old key in
	// Redis; wait for it, so that it cannot end the ones signed in below.
	testutil.Eventually(t, 20*time.Second, func() bool { return !w.sessionStored(b) }, "the second aupd's sweep did not end the session of the old key")
	b2 := w2.browser()
	b2.c.Jar.SetCookies(u2(t, w2), b.c.Jar.Cookies(u2(t, w)))
	if p := b2.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("session of the old link key: %d", p.code)
	}
	if p := b.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("after the key changed, the session at the first aupd: %d", p.code)
	}

	// An API-managed company and its contact.
	put := func(contacts []string) {
		t.Helper()
		if code, body := w.api("PUT", "/api/v1/companies/initech", tokRoot, map[string]any{
			"name": "Initech", "domains": []string{"initech.test"}, "desk_contacts": contacts, "reason": "test"}); code/100 != 2 {
			t.Fatalf("put company: %d %v", code, body)
		}
	}
	put([]string{"bob@initech.test"})
	bob := signIn("bob@initech.test", "initech")
	if p := bob.get("/desk/"); p.code != http.StatusOK {
		t.Fatalf("bob's overview: %d", p.code)
	}
	has(t, bob.get("/desk/"), "Signed in as <strong>bob@initech.test</strong> (abuse, initech)")
	put([]string{"carol@initech.test"})
	if p := bob.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("session of a removed contact: %d", p.code)
	}
	put([]string{"bob@initech.test"})
	if p := bob.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("the session came back with the contact: %d", p.code)
	}
	signIn("bob@initech.test", "initech") // a new link works
}

// TestSessionsPage: the sessions page lists the sessions of the user's
// company (who, how, from where, until when), and "sign out everywhere"
// ends every session of that company, another browser's and the user's
// own, and the links mailed before, but not another company's; the
// provider's admin sees every company and picks whose to end.
func TestSessionsPage(t *testing.T) {
	const tokGlobex = "globex-abuse-token-secret"
	w := newWorld(t, func(c *config.Config) {
		withAlice(c)
		c.Auth.Tokens = append(c.Auth.Tokens, auth.TokenConfig{Name: "globex-abuse", Hash: auth.HashToken(tokGlobex), Role: auth.RoleAbuse, Company: "globex"})
	})
	links := desk.NewLinks(w.cfg.Desk)
	person := w.browser()
	tok, _ := links.SignIn(alice, "acme", "", w.clk.now())
	if p := person.useLink("/desk/sign-in/link/" + tok); p.code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", p.code)
	}
	acme := w.browser()
	acmeCSRF := acme.signIn(tokAcmeAbuse)
	viewer := w.browser()
	viewerCSRF := viewer.signIn(tokAcmeViewer)
	globex := w.browser()
	globex.signIn(tokGlobex)
	root := w.browser()
	rootCSRF := root.signIn(tokRoot)
	unused, _ := links.SignIn(alice, "acme", "", w.clk.now())

	p := person.get("/desk/sessions")
	if p.code != http.StatusOK {
		t.Fatalf("sessions: %d", p.code)
	}
	has(t, p, `<a href="/desk/sessions">Sessions</a>`, "Acme Ltd <span class=\"count\">3</span>",
		alice+` <span class="tag">you, now</span>`, "<td>mailed link</td>", "acme-abuse", "acme-viewer", "<td>API token</td>", "<td>127.0.0.1</td>",
		`action="/desk/sessions/sign-out"`, "Sign out everywhere")
	lacks(t, p, "globex-abuse", "root", `name="scope"`)
	// A viewer sees the list, but may not sign anyone out.
	p = viewer.get("/desk/sessions")
	has(t, p, alice)
	lacks(t, p, `action="/desk/sessions/sign-out"`)
	if p = viewer.post("/desk/sessions/sign-out", url.Values{"csrf": {viewerCSRF}}); p.code != http.StatusForbidden {
		t.Errorf("viewer signs out everywhere: %d", p.code)
	}
	// The form needs its token.
	if p = acme.post("/desk/sessions/sign-out", url.Values{"csrf": {"forged"}}); p.code != http.StatusForbidden {
		t.Errorf("sign out everywhere without CSRF: %d", p.code)
	}
	if p = person.get("/desk/"); p.code != http.StatusOK {
		t.Fatalf("a refused sign-out ended a session: %d", p.code)
	}

	// The token's session signs out acme: the person's browser, the
	// viewer's and its own end; globex's and the provider's stay.
	p = acme.post("/desk/sessions/sign-out", url.Values{"csrf": {acmeCSRF}})
	if p.code != http.StatusSeeOther || p.location() != "/desk/sign-in?signed_out=1" {
		t.Fatalf("sign out everywhere: %d %q\n%s", p.code, p.location(), p.body)
	}
	for name, b := range map[string]*browser{"person": person, "acme token": acme, "viewer": viewer} {
		if p := b.get("/desk/"); p.code != http.StatusSeeOther {
			t.Errorf("%s after sign out everywhere: %d", name, p.code)
		}
	}
	for name, b := range map[string]*browser{"globex": globex, "root": root} {
		if p := b.get("/desk/"); p.code != http.StatusOK {
			t.Errorf("%s after acme signed out everywhere: %d", name, p.code)
		}
	}
	// The link mailed before is void; a new one works.
	if p := w.browser().get("/desk/sign-in/link/" + unused); p.code != http.StatusGone {
		t.Errorf("a link from before sign out everywhere: %d", p.code)
	}
	w.clk.add(time.Second)
	again, _ := links.SignIn(alice, "acme", "", w.clk.now())
	if p := person.useLink("/desk/sign-in/link/" + again); p.code != http.StatusSeeOther {
		t.Errorf("a new link: %d", p.code)
	}

	// The provider's admin sees every company and picks one.
	p = root.get("/desk/sessions")
	has(t, p, "Acme Ltd <span class=\"count\">1</span>", "Globex <span class=\"count\">1</span>", "globex-abuse",
		"The provider&#39;s staff (no company) <span class=\"count\">1</span>", `name="scope"`, `<option value="globex">`)
	if p = root.post("/desk/sessions/sign-out", url.Values{"csrf": {rootCSRF}}); p.code != http.StatusBadRequest {
		t.Errorf("sign out everywhere without a choice: %d", p.code)
	}
	p = root.post("/desk/sessions/sign-out", url.Values{"csrf": {rootCSRF}, "scope": {"globex"}})
	if p.code != http.StatusSeeOther || p.location() != "/desk/sessions?ended=1" {
		t.Fatalf("root signs out globex: %d %q", p.code, p.location())
	}
	has(t, root.get(p.location()), "Signed out everywhere: 1 sessions ended.")
	if p := globex.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("globex after root signed it out: %d", p.code)
	}
	if p := person.get("/desk/"); p.code != http.StatusOK {
		t.Errorf("acme after root signed out globex: %d", p.code)
	}
}

// TestNextAfterSignIn: a page asked for without a session is where the
// sign-in lands, by token or by mailed link; a next that leads off the
// desk lands on the overview.
func TestNextAfterSignIn(t *testing.T) {
	w, srv := newMailWorld(t, func(c *config.Config) { withAlice(c); c.Desk.SignInAttempts = 100 })
	b := w.browser()
	want := "/desk/search?q=pat"
	p := b.get(want)
	if p.code != http.StatusSeeOther || p.location() != "/desk/sign-in?next="+url.QueryEscape(want) {
		t.Fatalf("page without a session: %d %q", p.code, p.location())
	}
	p = b.get(p.location())
	has(t, p, `name="next" value="/desk/search?q=pat"`)
	p = b.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {tokAbuse}, "next": {want}})
	if p.code != http.StatusSeeOther || p.location() != want {
		t.Errorf("token sign-in with next: %d %q", p.code, p.location())
	}
	// Signed in, the sign-in page sends on at once.
	if p = b.get("/desk/sign-in?next=" + url.QueryEscape("/desk/sessions")); p.code != http.StatusSeeOther || p.location() != "/desk/sessions" {
		t.Errorf("sign-in page with a session: %d %q", p.code, p.location())
	}

	for _, bad := range []string{"https://evil.test/", "//evil.test/desk/", "/desk//evil.test", "/\\evil.test", "/desk/\\evil.test", "javascript:alert(1)", "/desk/../metrics", "/api/v1/accounts"} {
		c := w.browser()
		p := c.get("/desk/sign-in?next=" + url.QueryEscape(bad))
		lacks(t, p, "evil.test", "javascript:", "metrics", "/api/")
		p = c.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {tokAbuse}, "next": {bad}})
		if p.code != http.StatusSeeOther || p.location() != "/desk/" {
			t.Errorf("next %q: %d %q", bad, p.code, p.location())
		}
	}

	// Through the mail: the link carries the page.
	person := w.browser()
	if p = person.askLink(alice, "/desk/accounts/pat@example.com"); p.code != http.StatusOK {
		t.Fatalf("ask for a link: %d", p.code)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { texts, _ := signInMails(t, srv, alice); return len(texts) == 1 }, "no link mailed")
	_, paths := signInMails(t, srv, alice)
	if p = person.useLink(paths[0]); p.code != http.StatusSeeOther || p.location() != "/desk/accounts/pat@example.com" {
		t.Errorf("link sign-in with next: %d %q", p.code, p.location())
	}
	// And a bad one asked for lands on the overview.
	if p = w.browser().askLink(alice, "//evil.test/"); p.code != http.StatusOK {
		t.Fatalf("ask for a link: %d", p.code)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { texts, _ := signInMails(t, srv, alice); return len(texts) == 2 }, "no second link mailed")
	_, paths = signInMails(t, srv, alice)
	if p = w.browser().useLink(paths[1]); p.code != http.StatusSeeOther || p.location() != "/desk/" {
		t.Errorf("link sign-in with a bad next: %d %q", p.code, p.location())
	}
}

// TestFormTooLargeAndAssets: a form over 64 KiB is answered 413 "Form
// too large", not as an expired form; /desk/assets/ lists nothing.
func TestFormTooLargeAndAssets(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()
	tok := b.signIn(tokAbuse)
	big := strings.Repeat("x", 65<<10)
	for _, path := range []string{"/desk/sign-in", "/desk/accounts/pat@example.com/note"} {
		p := b.post(path, url.Values{"csrf": {tok}, "text": {big}})
		if p.code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s with a large form: %d", path, p.code)
		}
		has(t, p, "Form too large")
		lacks(t, p, "Form expired")
	}
	if p := b.post("/desk/accounts/pat@example.com/note", url.Values{"csrf": {tok}, "text": {"small"}}); p.code == http.StatusRequestEntityTooLarge {
		t.Errorf("a small form: %d", p.code)
	}
	for path, want := range map[string]int{"/desk/assets/": 404, "/desk/assets/desk.css": 200, "/desk/assets/nope.css": 404} {
		p := w.browser().get(path)
		if p.code != want {
			t.Errorf("GET %s: %d, want %d", path, p.code, want)
		}
		if strings.Contains(p.body, `<a href="desk.css">`) {
			t.Errorf("GET %s lists the directory", path)
		}
	}
}

// TestAskLinkIsRateLimited: asking for links counts toward the sign-in
// limit of the client's address, as tokens tried do; past it the answer
// is 429 and nothing is queued.
func TestAskLinkIsRateLimited(t *testing.T) {
	w, srv := newMailWorld(t, func(c *config.Config) { withAlice(c); c.Desk.SignInAttempts = 3 })
	b := w.browser()
	for i := range 3 {
		if p := b.askLink("nobody@example.com", ""); p.code != http.StatusOK {
			t.Fatalf("ask %d: %d", i, p.code)
		}
	}
	p := b.askLink(alice, "")
	if p.code != http.StatusTooManyRequests || p.hdr.Get("Retry-After") == "" {
		t.Fatalf("4th ask: %d", p.code)
	}
	has(t, p, "Too many sign-in attempts")
	p = b.get("/desk/sign-in")
	if p = b.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {tokAbuse}}); p.code != http.StatusTooManyRequests {
		t.Errorf("token after 3 asks: %d", p.code)
	}
	w.linksAsked(3)
	if texts, _ := signInMails(t, srv, alice); len(texts) != 0 {
		t.Errorf("a limited ask mailed %d links", len(texts))
	}
}

// TestNoSignInLinksWithoutPublicURL: a desk without public_url and
// link_key shows no mail form and mails nothing; tokens still sign in.
func TestNoSignInLinksWithoutPublicURL(t *testing.T) {
	w, srv := newMailWorld(t, func(c *config.Config) { withAlice(c); c.Desk.PublicURL, c.Desk.LinkKey = "", "" })
	b := w.browser()
	p := b.get("/desk/sign-in")
	has(t, p, "Sign in with an API token")
	lacks(t, p, "Email me a sign-in link", `name="address"`)
	if p = b.post("/desk/sign-in/link", url.Values{"csrf": {csrf(t, p)}, "address": {alice}}); p.code != http.StatusNotFound {
		t.Errorf("ask for a link: %d", p.code)
	}
	if p = b.get("/desk/sign-in/link/x.y"); p.code != http.StatusNotFound {
		t.Errorf("a link: %d", p.code)
	}
	b.signIn(tokAbuse)
	if !strings.Contains(w.logs.String(), "abuse contacts cannot ask for a sign-in link by mail") {
		t.Errorf("start-up does not say that links are off")
	}
	if n := len(srv.Mail()); n != 0 {
		t.Errorf("%d mails", n)
	}
}

// TestTokenMarks: desk.RecordTokens, which aupd runs at start-up and on
// each reload, marks the tokens removed or changed since the last record,
// and a session made before the mark is refused even if the token comes
// back with the same secret. The session here is one the index does not
// hold (as an older aupd made them), so only the mark can end it.
func TestTokenMarks(t *testing.T) {
	w := newWorld(t, nil)
	rdb := redis.NewClient(&redis.Options{Addr: testutil.RedisAddr()})
	defer rdb.Close()
	key := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return w.cfg.Redis.Prefix + ":desk:session:" + hex.EncodeToString(sum[:])
	}
	id := "an-old-session-id-0123456789"
	fp := auth.TokenConfig{Hash: auth.HashToken(tokAcmeAbuse)}.Fingerprint()
	if err := rdb.HSet(t.Context(), key(id), "name", "acme-abuse", "role", "abuse", "company", "acme", "token", fp, "csrf", "x",
		"created", w.clk.now().UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	b := w.browser()
	b.c.Jar.SetCookies(u2(t, w), []*http.Cookie{{Name: "aupd_desk", Value: id, Path: "/desk/"}})
	if p := b.get("/desk/"); p.code != http.StatusOK {
		t.Fatalf("the old session: %d", p.code)
	}
	// Nothing changed: nothing marked.
	if n, err := desk.RecordTokens(t.Context(), rdb, w.cfg.Redis.Prefix, w.cfg.Auth, w.clk.now()); err != nil || n != 0 {
		t.Fatalf("record the same tokens: %d %v", n, err)
	}
	if p := b.get("/desk/"); p.code != http.StatusOK {
		t.Fatalf("the old session after recording the same tokens: %d", p.code)
	}
	// Removed (as another aupd's reload would), then back with the same
	// secret.
	without := w.cfg.Auth
	without.Tokens = slices.DeleteFunc(slices.Clone(without.Tokens), func(t auth.TokenConfig) bool { return t.Name == "acme-abuse" })
	w.clk.add(time.Millisecond)
	if n, err := desk.RecordTokens(t.Context(), rdb, w.cfg.Redis.Prefix, without, w.clk.now()); err != nil || n != 1 {
		t.Fatalf("record without acme-abuse: %d %v", n, err)
	}
	if n, err := desk.RecordTokens(t.Context(), rdb, w.cfg.Redis.Prefix, w.cfg.Auth, w.clk.now()); err != nil || n != 0 {
		t.Fatalf("record with acme-abuse again: %d %v", n, err)
	}
	if p := b.get("/desk/"); p.code != http.StatusSeeOther {
		t.Errorf("a session from before the token's removal: %d", p.code)
	}
	w.clk.add(time.Millisecond)
	w.browser().signIn(tokAcmeAbuse) // a new sign-in works
	// A changed role marks the token too.
	changed := w.cfg.Auth
	changed.Tokens = slices.Clone(changed.Tokens)
	for i := range changed.Tokens {
		if changed.Tokens[i].Name == "acme-viewer" {
			changed.Tokens[i].Role = auth.RoleAbuse
		}
	}
	if n, err := desk.RecordTokens(t.Context(), rdb, w.cfg.Redis.Prefix, changed, w.clk.now()); err != nil || n != 1 {
		t.Errorf("record a changed role: %d %v", n, err)
	}
}
