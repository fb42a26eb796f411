package desk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/app"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// Tokens of the test config.
const (
	tokRoot       = "root-token-secret"
	tokAbuse      = "abuse-token-secret"
	tokAcmeAbuse  = "acme-abuse-token-secret"
	tokAcmeViewer = "acme-viewer-token-secret"
)

// publicURL is the desk's public URL in the test config; links in notices
// start with it and the tests send their path to the real listener.
const publicURL = "http://desk.test/desk"

// clock is aupd's clock in a test: real time plus an offset.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// world is one running aupd with the desk on, over the local Redis and an
// in-process NATS server, writing notices as .eml files.
type world struct {
	t    *testing.T
	cfg  *config.Config
	base string // http://host:port
	// postfix is the Postfix policy server's address, when the config
	// turns it on
	postfix string
	js      jetstream.JetStream
	st      *store.Store
	clk     *clock
	emlDir  string
	logs    *logBuffer // what aupd logged
}

// logBuffer keeps what aupd logs, for tests that read it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newWorld(t *testing.T, mod func(*config.Config)) *world {
	t.Helper()
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.URL = ns.ClientURL()
	cfg.NATS.Consumer.MaxWait = 50 * time.Millisecond
	cfg.Redis.Addrs = []string{testutil.RedisAddr()}
	cfg.Redis.Prefix = prefix
	cfg.Redis.Autostart = false
	cfg.AUP.Threshold = 5
	cfg.Notifier.EMLDir = t.TempDir()
	cfg.Notifier.ProviderName = "Example Mail"
	cfg.Policy.Postfix.Listen = ""
	cfg.Policy.Dovecot.Listen = ""
	three := 3
	cfg.Companies = []companies.Company{
		{ID: "acme", Name: "Acme Ltd", Domains: []string{"example.com"}, AbuseContact: "abuse@example.com", Threshold: &three},
		{ID: "globex", Name: "Globex", Domains: []string{"globex.test"}, AbuseContact: "abuse@globex.test", Threshold: &three},
	}
	cfg.Auth.Tokens = []auth.TokenConfig{
		{Name: "root", Hash: auth.HashToken(tokRoot), Role: auth.RoleAdmin},
		{Name: "abuse-team", Hash: auth.HashToken(tokAbuse), Role: auth.RoleAbuse},
		{Name: "acme-abuse", Hash: auth.HashToken(tokAcmeAbuse), Role: auth.RoleAbuse, Company: "acme"},
		{Name: "acme-viewer", Hash: auth.HashToken(tokAcmeViewer), Role: auth.RoleViewer, Company: "acme"},
	}
	cfg.Desk.Enabled = true
	cfg.Desk.PublicURL = publicURL
	cfg.Desk.LinkKey = "test-link-key-0123456789-0123456789-abcdef"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, cfg: cfg, clk: &clock{}, emlDir: cfg.Notifier.EMLDir, st: store.New(rdb, prefix), logs: &logBuffer{}}
	nc := testutil.NATS(t, ns.ClientURL())
	w.js, _ = jetstream.New(nc)

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Options{Config: cfg, Now: w.clk.now, OnReady: func(i app.Info) { ready <- i },
			Logger: slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	}()
	select {
	case info := <-ready:
		w.base, w.postfix = "http://"+info.HTTPAddr, info.PostfixAddr
	case err := <-done:
		cancel()
		t.Fatalf("aupd exited: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("aupd did not start")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aupd: %v", err)
		}
	})
	return w
}

// verdict is one spam verdict event with a message.
func verdict(id, account, subject, raw string, at time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": id, "time": at.UTC().Format(time.RFC3339Nano), "direction": "outbound", "account": account,
		"verdict": "spam", "score": 12.5, "source": "test-filter",
		"message": map[string]any{"subject": subject, "from": account, "to": []string{"someone@example.net"}, "raw": raw},
	})
	return b
}

// overThreshold publishes n spam verdicts for account (n must exceed its
// threshold) and waits until the account's AUP suspension is in force.
// It returns the suspension id.
func (w *world) overThreshold(account string, n int, subject, raw func(i int) string) string {
	w.t.Helper()
	now := w.clk.now()
	tag := testutil.RandomHex(4)
	for i := range n {
		m := nats.NewMsg("aup.verdict.outbound")
		m.Data = verdict(fmt.Sprintf("%s-%s-%d", account, tag, i), account, subject(i), raw(i), now.Add(time.Duration(i)*time.Millisecond))
		if _, err := w.js.PublishMsg(context.Background(), m); err != nil {
			w.t.Fatal(err)
		}
	}
	var id string
	testutil.Eventually(w.t, 30*time.Second, func() bool {
		a, err := w.st.Account(context.Background(), account)
		if err == nil && a.AUP != "" && (a.LastAUP != nil && a.LastAUP.ID == a.AUP) {
			id = a.AUP
			return true
		}
		return false
	}, "%s was not suspended", account)
	return id
}

func plain(i int) string { return fmt.Sprintf("Cheap watches %d", i) }
func plainRaw(i int) string {
	return fmt.Sprintf("Subject: Cheap watches %d\r\n\r\nBuy now, offer %d\r\n", i, i)
}
func noticeFile(name string) bool { return strings.HasSuffix(name, ".eml") }

// flush publishes an account's pending account events (and updates the
// listing indexes), as aupd does after each change.
func (w *world) flush(account string) {
	w.t.Helper()
	if _, err := w.st.FlushOutbox(context.Background(), account, jsPublisher{w.js}); err != nil {
		w.t.Fatal(err)
	}
}

type jsPublisher struct{ js jetstream.JetStream }

func (p jsPublisher) PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error {
	_, err := p.js.Publish(ctx, events.AccountSubjectPrefix+ev.Type, data, jetstream.WithMsgID(ev.ID))
	return err
}

// waitNear waits until the overview lists the accounts as near their
// threshold. The worker writes its near-threshold hints with its next
// batch, so it keeps events coming, as live traffic does.
func (w *world) waitNear(accounts ...string) {
	w.t.Helper()
	b := w.browser()
	b.signIn(tokAbuse)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		filler := verdict(fmt.Sprintf("filler-%s-%d", testutil.RandomHex(3), i), "filler@elsewhere.test", "hello", "", w.clk.now())
		if _, err := w.js.Publish(context.Background(), "aup.verdict.outbound", filler); err != nil {
			w.t.Fatal(err)
		}
		p := b.get("/desk/")
		missing := false
		for _, a := range accounts {
			if !strings.Contains(p.body, `<td><a href="/desk/accounts/`+a+`">`) {
				missing = true
			}
		}
		if !missing {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("overview does not show %v as near their threshold:\n%s", accounts, p.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// notice waits for the .eml notice of a suspension and returns its text
// body and its desk link.
func (w *world) notice(account, suspension string) (body, link string) {
	w.t.Helper()
	testutil.Eventually(w.t, 30*time.Second, func() bool {
		files, _ := os.ReadDir(w.emlDir)
		for _, f := range files {
			if !noticeFile(f.Name()) {
				continue
			}
			raw, err := os.ReadFile(filepath.Join(w.emlDir, f.Name()))
			if err != nil {
				continue
			}
			text := noticeText(w.t, raw)
			if strings.Contains(text, "Reference: suspension "+suspension) && strings.Contains(text, account) {
				body = text
				return true
			}
		}
		return false
	}, "no notice for %s (%s)", account, suspension)
	// The file is written before the notice is recorded as sent.
	testutil.Eventually(w.t, 30*time.Second, func() bool {
		ls, _ := w.account(account)["last_suspension"].(map[string]any)
		n, _ := ls["notice"].(map[string]any)
		return ls["id"] != suspension || n["state"] == "sent"
	}, "the notice of %s was not recorded as sent", suspension)
	m := regexp.MustCompile(regexp.QuoteMeta(publicURL) + `/l/[A-Za-z0-9_.-]+`).FindString(body)
	if m == "" {
		w.t.Fatalf("notice has no desk link:\n%s", body)
	}
	return body, strings.TrimPrefix(m, "http://desk.test")
}

// noticeText is the decoded text/plain part of a notice.
func noticeText(t *testing.T, raw []byte) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("notice has no text part: %v", err)
		}
		if strings.HasPrefix(p.Header.Get("Content-Type"), "text/plain") && p.FileName() == "" {
			var r io.Reader = p
			if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
				r = quotedprintable.NewReader(p)
			}
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			return strings.ReplaceAll(string(b), "\r\n", "\n")
		}
	}
}

// api calls the admin API with a token and decodes the JSON answer.
func (w *world) api(method, path, token string, body any) (int, map[string]any) {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, w.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// account reads an account through the API with the root token.
func (w *world) account(addr string) map[string]any {
	w.t.Helper()
	code, a := w.api("GET", "/api/v1/accounts/"+addr, tokRoot, nil)
	if code != 200 {
		w.t.Fatalf("GET account %s: %d %v", addr, code, a)
	}
	return a
}

func suspended(a map[string]any) []string {
	var out []string
	for _, s := range a["suspended"].([]any) {
		out = append(out, s.(string))
	}
	return out
}

// history reads an account's history through the API, newest first.
func (w *world) history(addr string) []store.HistoryEntry {
	w.t.Helper()
	req, _ := http.NewRequest("GET", w.base+"/api/v1/accounts/"+addr+"/history", nil)
	req.Header.Set("Authorization", "Bearer "+tokRoot)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct{ Entries []store.HistoryEntry }
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		w.t.Fatal(err)
	}
	return page.Entries
}

// browser is a web client with its own cookies that does not follow
// redirects, so that tests see them.
type browser struct {
	t *testing.T
	w *world
	c *http.Client
}

func (w *world) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: w.t, w: w, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	code int
	body string
	hdr  http.Header
}

func (p page) location() string { return p.hdr.Get("Location") }

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{code: resp.StatusCode, body: string(body), hdr: resp.Header}
}

func (b *browser) get(path string) page {
	req, _ := http.NewRequest("GET", b.w.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	req, _ := http.NewRequest("POST", b.w.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the first form of a page.
func csrf(t *testing.T, p page) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("page has no CSRF token:\n%s", p.body)
	}
	return m[1]
}

// signIn signs in with a token and returns the session's CSRF token.
func (b *browser) signIn(token string) string {
	b.t.Helper()
	p := b.get("/desk/sign-in")
	if p.code != 200 {
		b.t.Fatalf("sign-in page: %d", p.code)
	}
	p = b.post("/desk/sign-in", url.Values{"csrf": {csrf(b.t, p)}, "token": {token}})
	if p.code != http.StatusSeeOther || p.location() != "/desk/" {
		b.t.Fatalf("sign-in: %d %s\n%s", p.code, p.location(), p.body)
	}
	p = b.get("/desk/")
	if p.code != 200 {
		b.t.Fatalf("overview after sign-in: %d", p.code)
	}
	return csrf(b.t, p)
}

// newMailWorld is a world whose mail (notices and sign-in links) goes to
// a real SMTP server in the test.
func newMailWorld(t *testing.T, mod func(*config.Config)) (*world, *testutil.SMTPServer) {
	t.Helper()
	srv := testutil.StartSMTP(t)
	host, port, _ := net.SplitHostPort(srv.Addr)
	w := newWorld(t, func(c *config.Config) {
		c.Notifier.EMLDir = ""
		c.Notifier.SMTP.Host = host
		c.Notifier.SMTP.Port, _ = strconv.Atoi(port)
		c.Notifier.SMTP.TLS = "none"
		c.Notifier.From = "Abuse Desk <abuse-desk@provider.test>"
		if mod != nil {
			mod(c)
		}
	})
	return w, srv
}

// metric reads one sample of aupd's /metrics, such as
// `aupd_desk_sign_in_links_total{result="sent"}`.
func (w *world) metric(sample string) float64 {
	w.t.Helper()
	resp, err := http.Get(w.base + "/metrics")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				w.t.Fatalf("metric %s: %q", sample, line)
			}
			return f
		}
	}
	w.t.Fatalf("no metric %s", sample)
	return 0
}

// linksAsked waits until the desk has handled n sign-in link asks, mailed
// or not.
func (w *world) linksAsked(n int) {
	w.t.Helper()
	testutil.Eventually(w.t, 20*time.Second, func() bool {
		var sum float64
		for _, r := range []string{"sent", "unknown", "limited", "dropped", "failed"} {
			sum += w.metric(`aupd_desk_sign_in_links_total{result="` + r + `"}`)
		}
		return sum >= float64(n)
	}, "the desk did not handle %d sign-in link asks", n)
}

var signInLinkPattern = regexp.MustCompile(regexp.QuoteMeta(publicURL) + `/sign-in/link/[A-Za-z0-9_.-]+`)

// signInMails returns the sign-in link mails the SMTP server received for
// to: their text and the path of their first link.
func signInMails(t *testing.T, srv *testutil.SMTPServer, to string) (texts, paths []string) {
	t.Helper()
	for _, m := range srv.Mail() {
		if len(m.To) != 1 || m.To[0] != to {
			continue
		}
		msg, text := testutil.MailText(t, m.Data)
		if msg.Header.Get("X-Aupd-Notice") != "aup-desk-sign-in" {
			continue
		}
		texts = append(texts, text)
		paths = append(paths, strings.TrimPrefix(signInLinkPattern.FindString(text), "http://desk.test"))
	}
	return texts, paths
}

// askLink asks for a sign-in link on the sign-in page, with the page to
// land on (next, "" for none), and returns the answer.
func (b *browser) askLink(addr, next string) page {
	b.t.Helper()
	path := "/desk/sign-in"
	if next != "" {
		path += "?next=" + url.QueryEscape(next)
	}
	p := b.get(path)
	if p.code != 200 {
		b.t.Fatalf("sign-in page: %d", p.code)
	}
	form := url.Values{"csrf": {csrf(b.t, p)}, "address": {addr}}
	if next != "" {
		form.Set("next", next)
	}
	return b.post("/desk/sign-in/link", form)
}

// useLink opens a sign-in link and presses its button; it returns the
// answer to the button.
func (b *browser) useLink(path string) page {
	b.t.Helper()
	p := b.get(path)
	if p.code != 200 {
		b.t.Fatalf("sign-in link %s: %d\n%s", path, p.code, p.body)
	}
	return b.post(path, url.Values{"csrf": {csrf(b.t, p)}})
}

// sessionStored reports whether the browser's desk session is in Redis.
// A second aupd on the same prefix ends, in its first sweep, the sessions
// its own config no longer allows; tests wait for that with it.
func (w *world) sessionStored(br *browser) bool {
	w.t.Helper()
	u, err := url.Parse(w.base + "/desk/")
	if err != nil {
		w.t.Fatal(err)
	}
	rdb, _ := testutil.Redis(w.t)
	for _, c := range br.c.Jar.Cookies(u) {
		if c.Name == "aupd_desk" {
			sum := sha256.Sum256([]byte(c.Value))
			return rdb.Exists(context.Background(), w.cfg.Redis.Prefix+":desk:session:"+hex.EncodeToString(sum[:])).Val() == 1
		}
	}
	return false
}
