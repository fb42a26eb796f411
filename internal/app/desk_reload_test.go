package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"testing"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// TestReloadRevokesDeskTokens: a token taken out of the config by a reload
// signs in to the desk no more, and the sessions it opened end; so do the
// sessions of a token given a new secret (a rotation), and those of a
// token removed and added back with a new secret.
func TestReloadRevokesDeskTokens(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	dir := t.TempDir()
	path := dir + "/aupd.yml"
	const abuseToken = "desk-abuse-token-for-reload"
	// write configures the token desk-abuse with that secret, none when "".
	write := func(abuseSecret string) {
		tokens := fmt.Sprintf(`{name: reloader, role: admin, hash: %q}`, api.HashToken("reload-test-token"))
		if abuseSecret != "" {
			tokens += fmt.Sprintf(`, {name: desk-abuse, role: abuse, hash: %q}`, api.HashToken(abuseSecret))
		}
		text := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
nats: {url: %s, consumer: {max_wait: 50ms}}
redis: {addrs: [%q], prefix: %s, autostart: false}
notifier: {eml_dir: %s}
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
desk: {enabled: true, public_url: "https://aupd.provider.test/desk", link_key: "test-link-key-0123456789-0123456789-abcdef"}
auth: {tokens: [%s]}
`, dir, ns.ClientURL(), testutil.RedisAddr(), prefix, dir+"/notices", tokens)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(abuseToken)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	js := testutil.JetStream(t, cfg.NATS.URL)
	h := &harness{t: t, cfg: cfg, js: js, st: store.New(rdb, prefix), path: path}
	h.run()
	base := "http://" + h.info.HTTPAddr
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(p string) (int, string) {
		resp, err := c.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	signIn := func(abuseToken string) int {
		_, body := get("/desk/sign-in")
		m := csrf.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("sign-in page without a form:\n%s", body)
		}
		resp, err := c.PostForm(base+"/desk/sign-in", url.Values{"csrf": {m[1]}, "token": {abuseToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	reload := func(abuseSecret string) {
		t.Helper()
		write(abuseSecret)
		req, _ := http.NewRequest(http.MethodPost, base+"/-/reload", nil)
		req.Header.Set("Authorization", "Bearer reload-test-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("reload: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	signedOut := func(what string) {
		t.Helper()
		if code, _ := get("/desk/"); code != http.StatusSeeOther {
			t.Fatalf("%s: the overview answers %d, not the way to sign-in", what, code)
		}
	}
	if code := signIn(abuseToken); code != http.StatusSeeOther {
		t.Fatalf("sign-in with a configured token: %d", code)
	}
	if code, _ := get("/desk/"); code != http.StatusOK {
		t.Fatalf("overview: %d", code)
	}

	// Rotation: the same name, role and scope, a new secret.
	const rotated = "desk-abuse-token-rotated"
	reload(rotated)
	signedOut("after a rotation, the session of the old secret")
	if code := signIn(abuseToken); code == http.StatusSeeOther {
		t.Fatalf("the old secret signed in after a rotation")
	}
	if code := signIn(rotated); code != http.StatusSeeOther {
		t.Fatalf("sign-in with the new secret: %d", code)
	}
	if code, _ := get("/desk/"); code != http.StatusOK {
		t.Fatalf("overview with the new secret: %d", code)
	}

	// Removed, then added back with another secret: the old session stays
	// ended.
	reload("")
	signedOut("the session of a removed token")
	if code := signIn(rotated); code == http.StatusSeeOther {
		t.Fatalf("a revoked token signed in")
	}
	reload("desk-abuse-token-third")
	signedOut("the session of a token removed and added back with a new secret")
}
