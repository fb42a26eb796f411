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

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// TestReloadRevokesDeskTokens: a token taken out of the config by a reload
// signs in to the desk no more, and the sessions it opened end.
func TestReloadRevokesDeskTokens(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	dir := t.TempDir()
	path := dir + "/aupd.yml"
	const abuseToken = "desk-abuse-token-for-reload"
	write := func(withAbuse bool) {
		tokens := fmt.Sprintf(`{name: reloader, role: admin, hash: %q}`, api.HashToken("reload-test-token"))
		if withAbuse {
			tokens += fmt.Sprintf(`, {name: desk-abuse, role: abuse, hash: %q}`, api.HashToken(abuseToken))
		}
		text := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
nats: {url: %s, consumer: {max_wait: 50ms}}
redis: {addrs: [%q], prefix: %s, autostart: false}
notifier: {eml_dir: %s}
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
desk: {enabled: true, public_url: "https://aupd.provider.test", link_key: "test-link-key-0123456789-0123456789-abcdef"}
auth: {tokens: [%s]}
`, dir, ns.ClientURL(), testutil.RedisAddr(), prefix, dir+"/notices", tokens)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(true)
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
	signIn := func() int {
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
	if code := signIn(); code != http.StatusSeeOther {
		t.Fatalf("sign-in with a configured token: %d", code)
	}
	if code, _ := get("/desk/"); code != http.StatusOK {
		t.Fatalf("overview: %d", code)
	}
	write(false)
	req, _ := http.NewRequest(http.MethodPost, base+"/-/reload", nil)
	req.Header.Set("Authorization", "Bearer reload-test-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %v %v", err, resp)
	}
	resp.Body.Close()
	if code, body := get("/desk/"); code == http.StatusOK && !strings.Contains(body, "sign-in") {
		t.Fatalf("the revoked token's session still opens the overview")
	}
	if code := signIn(); code == http.StatusSeeOther {
		t.Fatalf("a revoked token signed in")
	}
}
