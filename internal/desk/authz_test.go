package desk_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/testutil"
)

const tokPublisher = "publisher-token-secret"

// TestPublisherCannotUseDesk: a token that may not read (a publisher's)
// signs in no more than a wrong token does, with the same answer, and a
// session of such a token (one an older aupd made) opens no page.
func TestPublisherCannotUseDesk(t *testing.T) {
	w := newWorld(t, func(c *config.Config) {
		c.Auth.Tokens = append(c.Auth.Tokens, auth.TokenConfig{Name: "rspamd", Hash: auth.HashToken(tokPublisher), Role: auth.RolePublisher})
	})
	acct := "alice@example.com"
	w.overThreshold(acct, 4, plain, plainRaw)

	signIn := func(token string) page {
		b := w.browser()
		p := b.get("/desk/sign-in")
		return b.post("/desk/sign-in", url.Values{"csrf": {csrf(t, p)}, "token": {token}})
	}
	pub, wrong := signIn(tokPublisher), signIn("not-a-token-at-all")
	if pub.code != http.StatusUnauthorized || wrong.code != http.StatusUnauthorized {
		t.Fatalf("sign-in: publisher %d, wrong token %d; want 401 both", pub.code, wrong.code)
	}
	tokens := regexp.MustCompile(`value="[^"]*"`)
	if a, b := tokens.ReplaceAllString(pub.body, ""), tokens.ReplaceAllString(wrong.body, ""); a != b {
		t.Errorf("a publisher's sign-in answers otherwise than a wrong token's:\n%s\n---\n%s", a, b)
	}
	if strings.Contains(strings.Join(pub.hdr["Set-Cookie"], ";"), "aupd_desk=") {
		t.Errorf("a publisher's sign-in set a session")
	}

	// Sessions written as the desk writes them: a viewer's opens the
	// pages, a publisher's none.
	rdb := redis.NewClient(&redis.Options{Addr: testutil.RedisAddr()})
	defer rdb.Close()
	forge := func(id, name, secret string, role auth.Role, company string) *browser {
		sum := sha256.Sum256([]byte(id))
		key := w.cfg.Redis.Prefix + ":desk:session:" + hex.EncodeToString(sum[:])
		fp := auth.TokenConfig{Hash: auth.HashToken(secret)}.Fingerprint()
		if err := rdb.HSet(context.Background(), key, "name", name, "role", string(role), "company", company, "token", fp, "csrf", "x", "created", 1).Err(); err != nil {
			t.Fatal(err)
		}
		b := w.browser()
		b.c.Jar.SetCookies(u2(t, w), []*http.Cookie{{Name: "aupd_desk", Value: id, Path: "/desk/"}})
		return b
	}
	pages := []string{"/desk/", "/desk/search?q=alice", "/desk/accounts/" + acct}
	v := forge("viewer-session-id-0123456789", "acme-viewer", tokAcmeViewer, auth.RoleViewer, "acme")
	for _, p := range pages {
		if got := v.get(p); got.code != http.StatusOK {
			t.Fatalf("viewer session, %s: %d", p, got.code)
		}
	}
	ps := forge("publisher-session-id-0123456789", "rspamd", tokPublisher, auth.RolePublisher, "")
	for _, p := range pages {
		if got := ps.get(p); got.code != http.StatusSeeOther || !strings.HasPrefix(got.location(), "/desk/sign-in") {
			t.Errorf("publisher session, %s: %d %s", p, got.code, got.location())
		}
	}
	if got := ps.post("/desk/accounts/"+acct+"/reinstate", url.Values{"csrf": {"x"}, "reason": {"r"}}); got.code != http.StatusUnauthorized {
		t.Errorf("publisher session, reinstate: %d", got.code)
	}
	// The API says the same.
	if code, _ := w.api("GET", "/api/v1/accounts/"+acct, tokPublisher, nil); code != http.StatusForbidden {
		t.Errorf("API read with a publisher token: %d", code)
	}
}
