package dovecot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/authlimit"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

func testRedis(t testing.TB) (*redis.Client, string) { return testutil.Redis(t) }

// fakeStore is the test double of the account store: Accounts and
// lockout.Locker. A lockout it records shows in later lookups.
type fakeStore struct {
	mu       sync.Mutex
	views    map[string]rules.AccountView
	err      error
	lockouts []string
}

func newFakeStore() *fakeStore {
	return &fakeStore{views: map[string]rules.AccountView{
		"active@example.test":    {Type: rules.TypeMailbox},
		"locked@example.test":    {Type: rules.TypeMailbox, Status: rules.StatusLocked},
		"maint@example.test":     {Type: rules.TypeMailbox, Status: rules.StatusMaintenance},
		"closed@example.test":    {Type: rules.TypeMailbox, Status: rules.StatusClosed},
		"noimap@example.test":    {Type: rules.TypeMailbox, Suspended: []rules.Service{rules.ServiceIMAP}},
		"nopop@example.test":     {Type: rules.TypeMailbox, Suspended: []rules.Service{rules.ServicePOP3}},
		"nosend@example.test":    {Type: rules.TypeMailbox, Suspended: []rules.Service{rules.ServiceSend}},
		"fwd@example.test":       {Type: rules.TypeForward},
		"lockedout@example.test": {Type: rules.TypeMailbox, Status: rules.StatusLockout, LockoutUntil: t0.Add(time.Hour)},
		"wasout@example.test":    {Type: rules.TypeMailbox, Status: rules.StatusLockout, LockoutUntil: t0.Add(-time.Second)},
		// A record outside every company's domains: governed all the same.
		"locked@nocompany.test": {Type: rules.TypeMailbox, Status: rules.StatusLocked},
	}}
}

func (f *fakeStore) Lookup(_ context.Context, acct string) (rules.AccountView, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return rules.AccountView{}, false, f.err
	}
	v, known := f.views[acct]
	return v, strings.HasSuffix(acct, "@example.test") || known, nil
}

func (f *fakeStore) Lockout(_ context.Context, acct string, until time.Time, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.views[acct]
	v.Status, v.LockoutUntil = rules.StatusLockout, until
	f.views[acct] = v
	f.lockouts = append(f.lockouts, acct)
	return nil
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	h     *Handler
	store *fakeStore
	reg   *prometheus.Registry
	clk   *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newEnv(t testing.TB, cfg Config, lcfg lockout.Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, lcfg, nil)
}

// newEnvWith is newEnv with the logins of the reports recorded by logins.
func newEnvWith(t testing.TB, cfg Config, lcfg lockout.Config, logins Logins) *env {
	t.Helper()
	rdb, prefix := testRedis(t)
	store := newFakeStore()
	clk := &clock{t: t0}
	lcfg.KeyPrefix = prefix
	// The counter's keys expire relative to Redis's clock, so a fixed
	// test clock is fine for it.
	ctr, err := lockout.New(rdb, lcfg, store, lockout.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h, err := New(cfg, store, ctr, Options{Now: clk.now, Registerer: reg, Logins: logins})
	if err != nil {
		t.Fatal(err)
	}
	return &env{h: h, store: store, reg: reg, clk: clk}
}

// post sends one policy request and decodes the answer.
func (e *env) post(t *testing.T, command string, body any, header ...string) (int, Response, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	r := httptest.NewRequest(http.MethodPost, "/?command="+command, strings.NewReader(string(b)))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	var resp Response
	raw := w.Body.String()
	if err := json.Unmarshal([]byte(raw), &resp); err != nil {
		t.Fatalf("answer %q is not JSON: %v", raw, err)
	}
	return w.Code, resp, raw
}

func allowReq(login, proto, pwhash string) map[string]any {
	return map[string]any{"login": login, "pwhash": pwhash, "remote": "192.0.2.9", "device_id": "",
		"protocol": proto, "session_id": "abc", "tls": false}
}

func reportReq(login, proto, pwhash string, success, policyReject bool) map[string]any {
	m := allowReq(login, proto, pwhash)
	m["success"], m["policy_reject"] = success, policyReject
	return m
}

func TestAllow(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{})
	tests := []struct {
		login, proto string
		status       int
		msg          string
	}{
		{"active@example.test", "imap", 0, ""},
		{"Active@Example.Test", "pop3", 0, ""},
		{"locked@example.test", "imap", -1, messages[rules.CodeLocked]},
		{"locked@example.test", "smtp", -1, messages[rules.CodeLocked]},
		{"maint@example.test", "pop3", -1, messages[rules.CodeMaintenance]},
		{"closed@example.test", "imap", -1, messages[rules.CodeClosed]},
		{"noimap@example.test", "imap", -1, messages[rules.CodeIMAPSuspended]},
		{"noimap@example.test", "pop3", 0, ""},
		{"nopop@example.test", "pop3", -1, messages[rules.CodePOP3Suspended]},
		{"nopop@example.test", "IMAP", 0, ""},
		// SMTP AUTH stays allowed with sending suspended, so that the user
		// is told "sending suspended" by Postfix, not "wrong password".
		{"nosend@example.test", "smtp", 0, ""},
		{"nosend@example.test", "submission", 0, ""},
		{"fwd@example.test", "imap", -1, messages[rules.CodeForward]},
		// A lockout is a plain failure: status -1 and no message.
		{"lockedout@example.test", "imap", -1, ""},
		{"lockedout@example.test", "pop3", -1, ""},
		{"lockedout@example.test", "smtp", -1, ""},
		{"wasout@example.test", "imap", 0, ""},
		{"someone@elsewhere.test", "imap", 0, ""},
		{"locked@nocompany.test", "imap", -1, messages[rules.CodeLocked]},
		{"not-an-address", "imap", 0, ""},
		{"locked@example.test", "managesieve", -1, messages[rules.CodeLocked]},
	}
	for _, tt := range tests {
		t.Run(tt.login+"/"+tt.proto, func(t *testing.T) {
			// The check after authentication carries no password hash.
			code, resp, raw := e.post(t, "allow", allowReq(tt.login, tt.proto, ""))
			if code != http.StatusOK || resp.Status != tt.status || resp.Msg != tt.msg {
				t.Errorf("got %d %s; want status %d msg %q", code, raw, tt.status, tt.msg)
			}
			if tt.msg == "" && strings.Contains(raw, "msg") {
				t.Errorf("answer %s has a msg", raw)
			}
		})
	}
}

func TestAllowUsesTranslatedUser(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{})
	// The user typed a bare name that Dovecot translated (auth_default_realm).
	body := allowReq("locked", "imap", "")
	body["user"] = "locked@example.test"
	if _, resp, raw := e.post(t, "allow", body); resp.Status != -1 {
		t.Errorf("got %s", raw)
	}
}

func TestAPIKey(t *testing.T) {
	e := newEnv(t, Config{APIKey: "s3cret"}, lockout.Config{})
	body := allowReq("locked@example.test", "imap", "")
	for _, hdr := range [][]string{nil, {"X-API-Key", "wrong"}, {"X-API-Key", "s3cre"}, {"Authorization", "s3cret"}} {
		code, resp, raw := e.post(t, "allow", body, hdr...)
		if code != http.StatusUnauthorized || resp.Status != 0 {
			t.Errorf("header %v: %d %s", hdr, code, raw)
		}
	}
	if code, resp, _ := e.post(t, "allow", body, "X-API-Key", "s3cret"); code != http.StatusOK || resp.Status != -1 {
		t.Errorf("right key: %d %+v", code, resp)
	}
	if fmt.Sprint(e.h.cfg.APIKey) != "<secret>" {
		t.Errorf("the key prints as %q", fmt.Sprint(e.h.cfg.APIKey))
	}
	if got := counter(t, e.reg, "aupd_policy_requests_total", "dovecot", ResultUnauthorized); got != 4 {
		t.Errorf("unauthorized metric %v", got)
	}
}

// TestPreviousAPIKey: while Dovecot is switched to a new key, the
// previous one is accepted besides it, and each request that sends it is
// counted; any other key is still refused.
func TestPreviousAPIKey(t *testing.T) {
	e := newEnv(t, Config{APIKey: "new-s3cret", PreviousAPIKey: "old-s3cret"}, lockout.Config{})
	body := allowReq("locked@example.test", "imap", "")
	for _, key := range []string{"new-s3cret", "old-s3cret", "old-s3cret"} {
		if code, resp, raw := e.post(t, "allow", body, "X-API-Key", key); code != http.StatusOK || resp.Status != -1 {
			t.Errorf("key %q: %d %s", key, code, raw)
		}
	}
	for _, key := range []string{"", "wrong", "old-s3cre", "new-s3cret old-s3cret"} {
		if code, _, raw := e.post(t, "allow", body, "X-API-Key", key); code != http.StatusUnauthorized {
			t.Errorf("key %q: %d %s, want 401", key, code, raw)
		}
	}
	if got := counter(t, e.reg, "aupd_policy_previous_key_total", "dovecot"); got != 2 {
		t.Errorf("previous key metric %v, want 2", got)
	}
	if fmt.Sprint(e.h.cfg.PreviousAPIKey) != "<secret>" {
		t.Errorf("the previous key prints as %q", fmt.Sprint(e.h.cfg.PreviousAPIKey))
	}
	for _, c := range []Config{{PreviousAPIKey: "old"}, {APIKey: "k", PreviousAPIKey: "k"}, {APIKey: "k", PreviousAPIKey: "a\nb"}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{})
	for _, tc := range []struct {
		method, target, body string
		code                 int
	}{
		{http.MethodGet, "/?command=allow", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "/?command=nope", "{}", http.StatusBadRequest},
		{http.MethodPost, "/", "{}", http.StatusBadRequest},
		{http.MethodPost, "/?command=allow", "not json", http.StatusBadRequest},
		{http.MethodPost, "/?command=allow", `{"login":5}`, http.StatusBadRequest},
		{http.MethodPost, "/?command=allow", `{"login":"a@example.test"} {}`, http.StatusBadRequest},
		{http.MethodPost, "/?command=allow", `{"login":"` + strings.Repeat("a", 70000) + `"}`, http.StatusBadRequest},
		{http.MethodPost, "/?command=allow", `{"login":"locked@example.test","extra":{"nested":[1,2]}}`, http.StatusOK},
	} {
		r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%s %s %.40q: %d %s; want %d", tc.method, tc.target, tc.body, w.Code, w.Body, tc.code)
		}
	}
}

func TestLookupErrorIsHTTPError(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{})
	e.store.err = errors.New("redis down")
	code, resp, _ := e.post(t, "allow", allowReq("active@example.test", "imap", ""))
	if code != http.StatusServiceUnavailable || resp.Status != 0 {
		t.Errorf("got %d %+v; want 503, so that Dovecot applies auth_policy_reject_on_fail", code, resp)
	}
}

// TestLockoutFlow follows Dovecot's requests through N failed logins, the
// lockout, the refusal of the right password and the end of the lockout.
func TestLockoutFlow(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{Threshold: 3, Window: 15 * time.Minute, Duration: 30 * time.Minute})
	const acct = "active@example.test"
	login := func(pwhash string, correct bool) (Response, string) {
		t.Helper()
		_, resp, raw := e.post(t, "allow", allowReq(acct, "imap", pwhash))
		rejected := resp.Status < 0
		success := correct && !rejected
		if !rejected && correct {
			// check_after_auth, without a password hash
			_, resp, raw = e.post(t, "allow", allowReq(acct, "imap", ""))
			rejected = resp.Status < 0
			success = !rejected
		}
		if _, r, raw := e.post(t, "report", reportReq(acct, "imap", pwhash, success, rejected)); r.Status != 0 {
			t.Fatalf("report answered %s", raw)
		}
		return resp, raw
	}
	// A phone retrying an old password counts once.
	for i := 0; i < 5; i++ {
		if resp, raw := login("aaa", false); resp.Status != 0 {
			t.Fatalf("retry %d: %s", i, raw)
		}
	}
	// A success resets the count.
	login("good", true)
	login("bbb", false)
	login("ccc", false)
	if len(e.store.lockouts) != 0 {
		t.Fatal("locked out too early")
	}
	login("ddd", false) // the third distinct failure since the success
	if len(e.store.lockouts) != 1 {
		t.Fatalf("lockouts %v", e.store.lockouts)
	}
	if got := counter(t, e.reg, "aupd_policy_requests_total", "dovecot", ResultLockedOut); got != 1 {
		t.Errorf("locked_out metric %v", got)
	}
	// Now the right password is refused exactly like a wrong one.
	_, right := login("good", true)
	_, wrong := login("eee", false)
	if right != wrong || right != `{"status":-1}`+"\n" {
		t.Errorf("right password answered %q, wrong one %q", right, wrong)
	}
	// Refusals during the lockout do not count again.
	if len(e.store.lockouts) != 1 {
		t.Errorf("lockouts %v", e.store.lockouts)
	}
	// The lockout ends by itself.
	e.clk.add(30*time.Minute + time.Second)
	if resp, raw := login("good", true); resp.Status != 0 {
		t.Errorf("after the lockout: %s", raw)
	}
}

func TestReportIgnored(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{Threshold: 1})
	for _, body := range []map[string]any{
		reportReq("someone@elsewhere.test", "imap", "h", false, false),
		reportReq("not-an-address", "imap", "h", false, false),
		reportReq("active@example.test", "imap", "h", false, true),
		allowReq("active@example.test", "imap", "h"), // no success field
	} {
		if code, resp, raw := e.post(t, "report", body); code != http.StatusOK || resp.Status != 0 {
			t.Errorf("%v: %s", body, raw)
		}
	}
	if len(e.store.lockouts) != 0 {
		t.Errorf("lockouts %v", e.store.lockouts)
	}
}

func counter(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			vals := map[string]bool{}
			for _, lp := range m.GetLabel() {
				vals[lp.GetValue()] = true
			}
			for _, l := range labels {
				if !vals[l] {
					continue next
				}
			}
			return metricValue(m)
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 { return m.GetCounter().GetValue() }

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Listen: "[::1]:1"}, {Listen: "localhost:1"}, {Listen: "0.0.0.0:1", APIKey: "k"}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range []Config{{APIHeader: "X Bad"}, {MaxBodyBytes: 10}, {APIKey: "a\nb"}, {LookupTimeout: -1},
		{Listen: "0.0.0.0:10041"}, {Listen: ":10041"}, {Listen: "192.0.2.1:10041"}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// TestFailuresDuringLockoutDoNotCount: with check_before_auth off, a
// wrong password during a lockout is reported as a plain failure; it must
// neither count nor lock out again (which would extend the lockout).
func TestFailuresDuringLockoutDoNotCount(t *testing.T) {
	e := newEnv(t, Config{}, lockout.Config{Threshold: 1})
	for i := range 3 {
		body := reportReq("lockedout@example.test", "imap", fmt.Sprint("h", i), false, false)
		if _, _, raw := e.post(t, "report", body); raw != `{"status":0}`+"\n" {
			t.Fatalf("report: %s", raw)
		}
	}
	if len(e.store.lockouts) != 0 {
		t.Errorf("failures during a lockout locked out again: %v", e.store.lockouts)
	}
	if got := counter(t, e.reg, "aupd_policy_requests_total", "dovecot", ResultReportIgnored); got != 3 {
		t.Errorf("report_ignored %v; want 3", got)
	}
	// Once it has ended, failures count again.
	if _, _, raw := e.post(t, "report", reportReq("wasout@example.test", "imap", "h", false, false)); raw != `{"status":0}`+"\n" {
		t.Fatal(raw)
	}
	if len(e.store.lockouts) != 1 {
		t.Errorf("lockouts %v; want wasout locked out again", e.store.lockouts)
	}
}

// storeLogins is the app's adapter (dovecot.Logins over store.RecordLogin)
// with the fake store's rule of governance: the domain example.test.
type storeLogins struct{ s *store.Store }

func (l storeLogins) RecordLogin(ctx context.Context, account string, in Login) (bool, error) {
	r := store.LoginReport{Time: in.Time, Result: in.Result, Protocol: in.Protocol, IP: in.Remote}
	return l.s.RecordLogin(ctx, account, r, strings.HasSuffix(account, "@example.test"), store.LoginLimits{Keep: 20, Retention: 7 * 24 * time.Hour})
}

// TestReportRecordsLogins: reports go to the accounts' recent logins: a
// verified login of a governed account starts the record, failures are
// added to it, and nothing is recorded for names that are not governed or
// have no record. The answers are the same with and without recording,
// and whatever was recorded.
func TestReportRecordsLogins(t *testing.T) {
	rdb, prefix := testRedis(t)
	st := store.New(rdb, prefix)
	withLogins := newEnvWith(t, Config{RecentLogins: 20}, lockout.Config{Threshold: 100}, storeLogins{st})
	without := newEnv(t, Config{}, lockout.Config{Threshold: 100})
	ctx := context.Background()
	reports := []map[string]any{
		reportReq("active@example.test", "imap", "", true, false),
		reportReq("active@example.test", "imap", "h1", false, false),
		reportReq("active@example.test", "pop3", "h2", false, false),
		reportReq("locked@example.test", "imap", "", false, true),    // right password, refused by the policy
		reportReq("guess@example.test", "imap", "h3", false, false),  // a guessed name: no record
		reportReq("someone@elsewhere.test", "imap", "", true, false), // not governed
	}
	for _, body := range reports {
		c1, _, a1 := withLogins.post(t, "report", body)
		c2, _, a2 := without.post(t, "report", body)
		if c1 != http.StatusOK || c1 != c2 || a1 != a2 {
			t.Fatalf("%v: answered %d %q with recording, %d %q without", body, c1, a1, c2, a2)
		}
	}
	got, err := st.Logins(ctx, "active@example.test", t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Result != store.LoginFailed || got[0].Protocol != "pop3" || got[0].IP != "192.0.2.9" ||
		got[2].Result != store.LoginOK || got[2].Protocol != "imap" {
		t.Fatalf("active's recent logins %+v", got)
	}
	// A verified but refused login of a governed account starts one.
	if got, _ := st.Logins(ctx, "locked@example.test", t0.Add(-time.Hour)); len(got) != 1 || got[0].Result != store.LoginRefused {
		t.Fatalf("refused login recorded as %+v", got)
	}
	for _, acct := range []string{"guess@example.test", "someone@elsewhere.test"} {
		if n := rdb.Exists(ctx, store.AccountKey(prefix, acct, "li")).Val(); n != 0 {
			t.Errorf("%s: a record of recent logins was created", acct)
		}
	}
	if got := counter(t, withLogins.reg, "aupd_dovecot_logins_recorded_total", "recorded"); got != 4 {
		t.Errorf("recorded %v, want 4", got)
	}
	if got := counter(t, withLogins.reg, "aupd_dovecot_logins_recorded_total", "not_recorded"); got != 2 {
		t.Errorf("not recorded %v, want 2", got)
	}
}

// TestReportRecordingFailureKeepsAnswers: when Redis does not take the
// record, every report is answered exactly as without recording, the
// lockout still counts, and the failure is counted.
func TestReportRecordingFailureKeepsAnswers(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), MaxRetries: -1})
	t.Cleanup(func() { dead.Close() })
	e := newEnvWith(t, Config{RecentLogins: 20}, lockout.Config{Threshold: 2, Window: time.Hour, Duration: time.Hour}, storeLogins{store.New(dead, "x")})
	ref := newEnv(t, Config{}, lockout.Config{Threshold: 2, Window: time.Hour, Duration: time.Hour})
	for _, body := range []map[string]any{
		reportReq("active@example.test", "imap", "", true, false),
		reportReq("active@example.test", "imap", "h1", false, false),
		reportReq("active@example.test", "imap", "h2", false, false), // locks out
	} {
		c1, _, a1 := e.post(t, "report", body)
		c2, _, a2 := ref.post(t, "report", body)
		if c1 != http.StatusOK || c1 != c2 || a1 != a2 {
			t.Fatalf("%v: answered %d %q while recording failed, %d %q without recording", body, c1, a1, c2, a2)
		}
	}
	if len(e.store.lockouts) != 1 {
		t.Fatalf("lockouts %v: the failed recording stopped the count", e.store.lockouts)
	}
	if got := counter(t, e.reg, "aupd_dovecot_logins_recorded_total", "error"); got != 3 {
		t.Errorf("errors %v, want 3", got)
	}
	if got := counter(t, e.reg, "aupd_policy_requests_total", "dovecot", ResultLockedOut); got != 1 {
		t.Errorf("locked_out %v", got)
	}
}

// TestAPIKeyGuessesLimited: wrong API keys count per client address, in
// the counters the API's tokens use; past the limit the client gets 429
// whatever it sends, the right key too, while another client goes on.
func TestAPIKeyGuessesLimited(t *testing.T) {
	rdb, prefix := testRedis(t)
	lim := &authlimit.Limit{Redis: rdb, Prefix: prefix, Max: 3, Window: time.Minute}
	reg := prometheus.NewRegistry()
	h, err := New(Config{APIKey: "s3cret"}, newFakeStore(), nil, Options{Registerer: reg, Limit: lim})
	if err != nil {
		t.Fatal(err)
	}
	post := func(remote, key string) *httptest.ResponseRecorder {
		b, _ := json.Marshal(allowReq("a@example.test", "imap", ""))
		r := httptest.NewRequest(http.MethodPost, "/?command=allow", strings.NewReader(string(b)))
		r.RemoteAddr = remote + ":40000"
		r.Header.Set("X-API-Key", key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 3 {
		if w := post("198.51.100.5", fmt.Sprintf("guess-%d", i)); w.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, w.Code)
		}
	}
	w := post("198.51.100.5", "s3cret")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("the right key past the limit: %d %q, want 429 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	if w := post("198.51.100.6", "s3cret"); w.Code != http.StatusOK {
		t.Fatalf("another client: %d", w.Code)
	}
	if got := counter(t, reg, "aupd_policy_requests_total", "dovecot", ResultLimited); got != 1 {
		t.Errorf("limited metric %v", got)
	}
}
