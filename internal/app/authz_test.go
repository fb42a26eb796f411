package app

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/testutil"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/api.md's permission table from the code")

// matrixToken is one caller of the matrix: a token of a role and scope,
// a wrong token ("wrong") or none ("").
type matrixToken struct {
	name, secret string
	role         auth.Role
	company      string
}

var matrixTokens = []matrixToken{
	{"admin", "m-admin-secret", auth.RoleAdmin, ""},
	{"admin-acme", "m-admin-acme-secret", auth.RoleAdmin, "acme"},
	{"abuse", "m-abuse-secret", auth.RoleAbuse, ""},
	{"abuse-acme", "m-abuse-acme-secret", auth.RoleAbuse, "acme"},
	{"viewer", "m-viewer-secret", auth.RoleViewer, ""},
	{"viewer-acme", "m-viewer-acme-secret", auth.RoleViewer, "acme"},
	{"publisher", "m-publisher-secret", auth.RolePublisher, ""},
}

// path makes a request path of a route's pattern: an account of acme's,
// ids that name nothing.
func matrixPath(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.NewReplacer("{account}", "alice@example.com", "{id}", "nosuch", "{token}", "nosuch", "{$}", "", "{action}", "lock").Replace(path)
	return method, path
}

// TestAuthorizationMatrix: every route of the HTTP listener (control
// endpoints, admin API, session locks, abuse desk), with no token, a wrong
// token and a token of each role with and without a company scope, answers
// as auth.Allowed says: 401 without a valid token, 403 for a token that may
// not, neither for a token that may. The same table is docs/api.md's
// (TestPermissionTableDoc).
func TestAuthorizationMatrix(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	for _, m := range matrixTokens {
		cfg.Auth.Tokens = append(cfg.Auth.Tokens, auth.TokenConfig{Name: m.name, Hash: auth.HashToken(m.secret), Role: m.role, Company: m.company})
	}
	cfg.HTTP.AuthFailures = 1000 // the matrix sends a wrong token to every route
	cfg.Desk.Enabled = true
	cfg.Desk.PublicURL = "https://aupd.provider.test/desk/"
	cfg.Desk.LinkKey = "test-link-key-0123456789-0123456789-abcdef"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := start(t, cfg)
	base := "http://" + h.info.HTTPAddr

	callers := append([]matrixToken{{name: "no token"}, {name: "wrong token", secret: "not-a-configured-token"}}, matrixTokens...)
	n := 0
	for _, rt := range ListenerRoutes() {
		method, path := matrixPath(rt.Pattern)
		if strings.HasPrefix(path, "/desk/") {
			continue // sessions, below
		}
		for _, c := range callers {
			req, _ := http.NewRequest(method, base+path, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			if c.secret != "" {
				req.Header.Set("Authorization", "Bearer "+c.secret)
			}
			a := h.do(req)
			n++
			if strings.Contains(string(a.body), `"no_route"`) || strings.Contains(string(a.body), "404 page not found") {
				t.Errorf("%s: not served (%d %s)", rt.Pattern, a.status, a.body)
				continue
			}
			var want string
			switch {
			case rt.Perm == "":
				want = "neither"
			case c.role == "":
				want = "401"
			case auth.Allowed(c.role, c.company, rt.Perm):
				want = "neither"
			default:
				want = "403"
			}
			if got := classify(a.status); got != want {
				t.Errorf("%s as %s: %d (%s), want %s\n%s", rt.Pattern, c.name, a.status, got, want, a.body)
			}
		}
	}

	// The desk: a token that may read signs in, the others are answered
	// as a wrong token; a session opens the pages its token may read, and
	// an action answers 403 to a token that may not act.
	for _, c := range callers {
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		do := func(method, path string, form url.Values) (int, string, string) {
			t.Helper()
			req, _ := http.NewRequest(method, base+path, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header.Get("Location"), string(b)
		}
		csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
		if c.name != "no token" {
			_, _, body := do("GET", "/desk/sign-in", nil)
			code, loc, _ := do("POST", "/desk/sign-in", url.Values{"csrf": {csrf.FindStringSubmatch(body)[1]}, "token": {c.secret}})
			mayRead := c.role != "" && auth.Allowed(c.role, c.company, auth.PermRead)
			if signedIn := code == http.StatusSeeOther && loc == "/desk/"; signedIn != mayRead {
				t.Errorf("desk sign-in as %s: %d %s", c.name, code, loc)
			}
		}
		var formCSRF string
		for _, rt := range ListenerRoutes() {
			method, path := matrixPath(rt.Pattern)
			if !strings.HasPrefix(path, "/desk/") || rt.Perm == "" {
				continue
			}
			allowed := c.role != "" && auth.Allowed(c.role, c.company, rt.Perm)
			mayRead := c.role != "" && auth.Allowed(c.role, c.company, auth.PermRead)
			n++
			if method == "GET" {
				code, loc, body := do(method, path, nil)
				if m := csrf.FindStringSubmatch(body); m != nil && formCSRF == "" {
					formCSRF = m[1]
				}
				if redirected := code == http.StatusSeeOther && strings.HasPrefix(loc, "/desk/sign-in"); redirected == allowed || code == http.StatusForbidden {
					t.Errorf("desk %s as %s: %d %s", rt.Pattern, c.name, code, loc)
				}
				continue
			}
			if path == "/desk/sign-out" {
				continue // it would end the session the other rows need
			}
			code, _, body := do(method, path, url.Values{"csrf": {formCSRF}, "reason": {"matrix"}})
			switch {
			case !mayRead && code != http.StatusUnauthorized:
				t.Errorf("desk %s as %s: %d, want 401", rt.Pattern, c.name, code)
			case mayRead && !allowed && code != http.StatusForbidden:
				t.Errorf("desk %s as %s: %d, want 403\n%s", rt.Pattern, c.name, code, body)
			case allowed && (code == http.StatusUnauthorized || code == http.StatusForbidden):
				t.Errorf("desk %s as %s: %d, want neither 401 nor 403\n%s", rt.Pattern, c.name, code, body)
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d requests: the matrix lost its routes", n)
	}
}

func classify(code int) string {
	switch code {
	case http.StatusUnauthorized:
		return "401"
	case http.StatusForbidden:
		return "403"
	}
	return "neither"
}

// permissionTable is docs/api.md's permission table, made from
// auth.Allowed and ListenerRoutes.
func permissionTable() string {
	roles := []auth.Role{auth.RoleViewer, auth.RoleAbuse, auth.RoleAdmin, auth.RolePublisher}
	var b bytes.Buffer
	b.WriteString("| permission | viewer | abuse | admin | publisher | with a company scope | routes |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, p := range auth.Permissions() {
		fmt.Fprintf(&b, "| %s |", p)
		scoped := "yes, its company's accounts"
		for _, r := range roles {
			mark := "-"
			if auth.Allowed(r, "", p) {
				mark = "yes"
				if !auth.Allowed(r, "acme", p) {
					scoped = "no"
				}
			}
			fmt.Fprintf(&b, " %s |", mark)
		}
		var routes []string
		for _, rt := range ListenerRoutes() {
			if rt.Perm == p {
				routes = append(routes, "`"+rt.Pattern+"`")
			}
		}
		fmt.Fprintf(&b, " %s | %s |\n", scoped, strings.Join(routes, "<br>"))
	}
	var public []string
	for _, rt := range ListenerRoutes() {
		if rt.Perm == "" {
			public = append(public, "`"+rt.Pattern+"`")
		}
	}
	slices.Sort(public)
	fmt.Fprintf(&b, "| none (public) | yes | yes | yes | yes | yes | %s |\n", strings.Join(public, "<br>"))
	return b.String()
}

// TestPermissionTableDoc: docs/api.md's permission table is the code's
// (go test ./internal/app -run TestPermissionTableDoc -update-docs
// rewrites it).
func TestPermissionTableDoc(t *testing.T) {
	const begin, end = "<!-- permissions: begin (made by TestPermissionTableDoc) -->\n", "<!-- permissions: end -->"
	path := filepath.Join(root, "docs/api.md")
	doc := read(t, "docs/api.md")
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/api.md has no permission table between %q and %q", begin, end)
	}
	want := permissionTable()
	if got := doc[i+len(begin) : j]; got != want {
		if *updateDocs {
			if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("docs/api.md's permission table is not the code's; run go test ./internal/app -run TestPermissionTableDoc -update-docs\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// TestAuthFailureLimit: wrong tokens are limited per client on the API,
// the session locks and /-/reload: past http.auth_failures the client gets
// 429 with Retry-After, even with a right token. X-Forwarded-For counts
// only from a trusted proxy; behind one, two clients are limited apart.
func TestAuthFailureLimit(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	run := func(trusted []string) func(path, token, xff string) answer {
		_, prefix := testutil.Redis(t)
		cfg := testConfig(t, ns.ClientURL(), prefix)
		cfg.HTTP.AuthFailures = 3
		cfg.HTTP.TrustedProxies = trusted
		cfg.Auth.Tokens = []auth.TokenConfig{{Name: "viewer", Hash: auth.HashToken("right-token"), Role: auth.RoleViewer}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		h := start(t, cfg)
		return func(path, token, xff string) answer {
			req, _ := http.NewRequest("GET", "http://"+h.info.HTTPAddr+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if xff != "" {
				req.Header.Set("X-Forwarded-For", xff)
			}
			return h.do(req)
		}
	}
	const accounts, locks = "/api/v1/accounts", "/api/v1/accounts/alice@example.com/session-locks"

	// No trusted proxy: the peer's address counts, X-Forwarded-For is
	// ignored.
	get := run(nil)
	for i := range 3 {
		if a := get(accounts, "wrong", fmt.Sprintf("203.0.113.%d", i)); a.status != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d", i, a.status)
		}
	}
	for _, path := range []string{accounts, locks} {
		a := get(path, "wrong", "203.0.113.99")
		if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
			t.Errorf("%s, 4th wrong token: %d, Retry-After %q", path, a.status, a.header.Get("Retry-After"))
		}
		if a = get(path, "right-token", "198.51.100.1"); a.status != http.StatusTooManyRequests {
			t.Errorf("%s, right token over the limit, a forged X-Forwarded-For: %d", path, a.status)
		}
	}

	// Behind a trusted proxy (the test's own address), each forwarded
	// client has its own count.
	get = run([]string{"127.0.0.1/32", "::1/128"})
	for i := range 4 {
		if a := get(accounts, "wrong", "203.0.113.1"); i == 3 && a.status != http.StatusTooManyRequests {
			t.Fatalf("client A's 4th wrong token: %d", a.status)
		}
	}
	if a := get(accounts, "right-token", "203.0.113.2"); a.status != http.StatusOK {
		t.Errorf("client B behind the same proxy: %d\n%s", a.status, a.body)
	}
	if a := get(accounts, "right-token", "203.0.113.1"); a.status != http.StatusTooManyRequests {
		t.Errorf("client A with the right token: %d", a.status)
	}
}
