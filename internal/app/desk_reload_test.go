package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// deskReload is an aupd with the desk on, run from a config file that a
// test rewrites and reloads: the token desk-abuse with a secret (none
// when "") and acme's desk_contacts.
type deskReload struct {
	t    *testing.T
	h    *harness
	base string
	path string
	// write renders the config file.
	write func(abuseSecret string, contacts []string)
}

const deskReloadKey = "test-link-key-0123456789-0123456789-abcdef"

func newDeskReload(t *testing.T, abuseSecret string, contacts []string) *deskReload {
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	dir := t.TempDir()
	r := &deskReload{t: t, path: dir + "/aupd.yml"}
	r.write = func(abuseSecret string, contacts []string) {
		tokens := fmt.Sprintf(`{name: reloader, role: admin, hash: %q}`, auth.HashToken("reload-test-token"))
		if abuseSecret != "" {
			tokens += fmt.Sprintf(`, {name: desk-abuse, role: abuse, hash: %q}`, auth.HashToken(abuseSecret))
		}
		list := "[]"
		if len(contacts) > 0 {
			list = "[" + strings.Join(contacts, ", ") + "]"
		}
		text := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
nats: {url: %s, consumer: {max_wait: 50ms}}
redis: {addrs: [%q], prefix: %s, autostart: false}
notifier: {eml_dir: %s}
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
desk: {enabled: true, public_url: "https://aupd.provider.test/desk", link_key: %q}
auth: {tokens: [%s]}
companies: [{id: acme, name: Acme, domains: [acme.test], abuse_contact: abuse@partner.test, desk_contacts: %s}]
`, dir, ns.ClientURL(), testutil.RedisAddr(), prefix, dir+"/notices", deskReloadKey, tokens, list)
		if err := os.WriteFile(r.path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.write(abuseSecret, contacts)
	cfg, err := config.Load(r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.h = &harness{t: t, cfg: cfg, js: testutil.JetStream(t, cfg.NATS.URL), st: store.New(rdb, prefix), path: r.path}
	r.h.run()
	r.base = "http://" + r.h.info.HTTPAddr
	return r
}

// reload rewrites the config file and reloads it.
func (r *deskReload) reload(abuseSecret string, contacts []string) {
	r.t.Helper()
	r.write(abuseSecret, contacts)
	req, _ := http.NewRequest(http.MethodPost, r.base+"/-/reload", nil)
	req.Header.Set("Authorization", "Bearer reload-test-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		r.t.Fatalf("reload: %v %v", err, resp)
	}
	resp.Body.Close()
}

// deskClient is one browser.
type deskClient struct {
	r *deskReload
	c *http.Client
}

func (r *deskReload) client() *deskClient {
	jar, _ := cookiejar.New(nil)
	return &deskClient{r: r, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *deskClient) get(p string) (int, string) {
	resp, err := c.c.Get(c.r.base + p)
	if err != nil {
		c.r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *deskClient) post(p string, form url.Values) int {
	resp, err := c.c.PostForm(c.r.base+p, form)
	if err != nil {
		c.r.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// signIn signs in with a token; 303 is success.
func (c *deskClient) signIn(token string) int {
	_, body := c.get("/desk/sign-in")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		c.r.t.Fatalf("sign-in page without a form:\n%s", body)
	}
	return c.post("/desk/sign-in", url.Values{"csrf": {m[1]}, "token": {token}})
}

// signInAs signs in with a sign-in link of addr for acme, signed with the
// configured key (as the mailed one is); 303 is success.
func (c *deskClient) signInAs(addr string) int {
	links := desk.NewLinks(desk.Config{Enabled: true, PublicURL: "https://aupd.provider.test/desk", LinkKey: deskReloadKey})
	tok, _ := links.SignIn(addr, "acme", "", time.Now())
	code, body := c.get("/desk/sign-in/link/" + tok)
	m := csrfField.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		return code
	}
	return c.post("/desk/sign-in/link/"+tok, url.Values{"csrf": {m[1]}})
}

// signedIn reports whether the overview opens.
func (c *deskClient) signedIn() bool {
	code, _ := c.get("/desk/")
	if code != http.StatusOK && code != http.StatusSeeOther {
		c.r.t.Fatalf("overview: %d", code)
	}
	return code == http.StatusOK
}

// TestReloadRevokesDeskTokens: a token taken out of the config by a reload
// signs in to the desk no more, and the sessions it opened end; so do the
// sessions of a token given a new secret (a rotation), and those of a
// token removed and added back, with a new secret or with the same one:
// a session ended by a reload never comes back. (The reload's sweep of
// the session index and the token marks of desk.RecordTokens both end
// them; internal/desk's TestTokenMarks checks the marks alone.)
func TestReloadRevokesDeskTokens(t *testing.T) {
	const abuseToken = "desk-abuse-token-for-reload"
	r := newDeskReload(t, abuseToken, nil)
	c := r.client()
	if code := c.signIn(abuseToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in with a configured token: %d", code)
	}
	if !c.signedIn() {
		t.Fatal("not signed in")
	}

	// Rotation: the same name, role and scope, a new secret.
	const rotated = "desk-abuse-token-rotated"
	r.reload(rotated, nil)
	if c.signedIn() {
		t.Fatal("after a rotation, the session of the old secret is still open")
	}
	if code := c.signIn(abuseToken); code == http.StatusSeeOther {
		t.Fatalf("the old secret signed in after a rotation")
	}
	if code := c.signIn(rotated); code != http.StatusSeeOther || !c.signedIn() {
		t.Fatalf("sign-in with the new secret: %d", code)
	}

	// Removed, then added back with another secret: the old session stays
	// ended.
	r.reload("", nil)
	if c.signedIn() {
		t.Fatal("the session of a removed token is still open")
	}
	if code := c.signIn(rotated); code == http.StatusSeeOther {
		t.Fatalf("a revoked token signed in")
	}
	r.reload("desk-abuse-token-third", nil)
	if c.signedIn() {
		t.Fatal("the session of a token removed and added back with a new secret is open")
	}

	// Removed and added back with the same secret, with no request in
	// between: the session made before the removal stays ended, and a new
	// sign-in works.
	if code := c.signIn("desk-abuse-token-third"); code != http.StatusSeeOther || !c.signedIn() {
		t.Fatalf("sign-in: %d", code)
	}
	other := r.client()
	if code := other.signIn("desk-abuse-token-third"); code != http.StatusSeeOther {
		t.Fatalf("second sign-in: %d", code)
	}
	r.reload("", nil)
	r.reload("desk-abuse-token-third", nil)
	if c.signedIn() || other.signedIn() {
		t.Fatal("a token removed and added back with the same secret revived its sessions")
	}
	if code := c.signIn("desk-abuse-token-third"); code != http.StatusSeeOther || !c.signedIn() {
		t.Fatalf("a new sign-in after the token came back: %d", code)
	}
	// A reload that changes nothing ends nothing.
	r.reload("desk-abuse-token-third", nil)
	if !c.signedIn() {
		t.Fatal("a reload without changes ended a session")
	}
}

// TestReloadRemovesDeskContact: a reload that takes an address out of a
// company's desk_contacts ends that person's desk sessions at once (with
// no request in between), and they stay ended when the address comes
// back; the abuse contact's session is untouched.
func TestReloadRemovesDeskContact(t *testing.T) {
	r := newDeskReload(t, "", []string{"carol@partner.test"})
	carol, contact := r.client(), r.client()
	if code := carol.signInAs("carol@partner.test"); code != http.StatusSeeOther || !carol.signedIn() {
		t.Fatalf("carol signs in: %d", code)
	}
	if code := contact.signInAs("abuse@partner.test"); code != http.StatusSeeOther || !contact.signedIn() {
		t.Fatalf("the abuse contact signs in: %d", code)
	}
	if code := r.client().signInAs("dave@partner.test"); code != http.StatusGone {
		t.Errorf("an address that is no contact: %d", code)
	}
	r.reload("", nil)
	r.reload("", []string{"carol@partner.test"})
	if carol.signedIn() {
		t.Fatal("carol's session survived her removal")
	}
	if !contact.signedIn() {
		t.Fatal("the abuse contact's session ended")
	}
	if code := carol.signInAs("carol@partner.test"); code != http.StatusSeeOther || !carol.signedIn() {
		t.Fatalf("carol signs in again: %d", code)
	}
}
