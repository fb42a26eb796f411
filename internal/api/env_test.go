package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// Test tokens; each one's hash is in the test config.
const (
	tokAdmin      = "admin-secret"
	tokViewer     = "viewer-secret"
	tokAbuse      = "abuse-secret"
	tokAcmeAbuse  = "acme-abuse-secret"
	tokAcmeAdmin  = "acme-admin-secret"
	tokAcmeViewer = "acme-viewer-secret"
)

func testAuth() AuthConfig {
	return AuthConfig{Tokens: []TokenConfig{
		{Name: "root", Hash: auth.HashToken(tokAdmin), Role: RoleAdmin},
		{Name: "webmail", Hash: auth.HashToken(tokViewer), Role: RoleViewer},
		{Name: "abuse-desk", Hash: auth.HashToken(tokAbuse), Role: RoleAbuse},
		{Name: "acme-abuse", Hash: auth.HashToken(tokAcmeAbuse), Role: RoleAbuse, Company: "acme"},
		{Name: "acme-admin", Hash: auth.HashToken(tokAcmeAdmin), Role: RoleAdmin, Company: "acme"},
		{Name: "acme-viewer", Hash: auth.HashToken(tokAcmeViewer), Role: RoleViewer, Company: "acme"},
	}}
}

// clock is a settable clock shared by the store and the API.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jsPublisher publishes account events on JetStream, with the event id as
// message id, as aupd does.
type jsPublisher struct{ js jetstream.JetStream }

func (p jsPublisher) PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error {
	_, err := p.js.Publish(ctx, events.AccountSubjectPrefix+ev.Type, data, jetstream.WithMsgID(ev.ID))
	return err
}

// fakeNotices stands in for the notifier.
type fakeNotices struct {
	mu       sync.Mutex
	states   map[string]any
	evidence map[string][]byte
}

func (n *fakeNotices) NoticeState(_ context.Context, account, id string) (any, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.states[account+"/"+id]
	return st, ok, nil
}

func (n *fakeNotices) Evidence(_ context.Context, account, id string) ([]byte, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, ok := n.evidence[account+"/"+id]
	return b, ok, nil
}

type env struct {
	t       testing.TB
	srv     *httptest.Server
	store   *store.Store
	dir     *companies.Directory
	stream  jetstream.Stream
	clock   *clock
	notices *fakeNotices
	reg     *prometheus.Registry
	prefix  string
	rdb     companies.Redis
	pub     store.Publisher
}

const testCap = 20

func newEnv(t testing.TB) *env {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	ns := testutil.NATSServer(t, "")
	nc := testutil.NATS(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUP_ACCOUNT", Subjects: []string{"aup.account.>"}, Duplicates: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now().UTC().Truncate(time.Millisecond)}
	s := store.New(rdb, prefix, store.WithClock(clk.now))
	one := 1
	dir, err := companies.New(rdb, prefix, []companies.Company{
		{ID: "acme", Name: "Acme", Domains: []string{"acme.example", "acme-mail.example"}, AbuseContact: "abuse@acme.example"},
		{ID: "globex", Name: "Globex", Domains: []string{"globex.example"}, AbuseContact: "abuse@globex.example", Threshold: &one},
	})
	if err != nil {
		t.Fatal(err)
	}
	notices := &fakeNotices{states: map[string]any{}, evidence: map[string][]byte{}}
	reg := prometheus.NewRegistry()
	h, err := New(Options{
		Store: s, Companies: dir, Publisher: jsPublisher{js}, Notices: notices, Auth: testAuth(),
		Metrics: reg, Now: clk.now, Window: 24 * time.Hour, Cap: testCap,
		Threshold: func(account string) int {
			if c, ok := dir.ByAccount(account); ok && c.Threshold != nil {
				return *c.Threshold
			}
			return 10
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, store: s, dir: dir, stream: st, clock: clk, notices: notices, reg: reg, prefix: prefix, rdb: rdb, pub: jsPublisher{js}}
}

// resp is an answer: status, raw body and the decoded JSON, if any.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r resp) errCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	r.json(t, &e)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not a JSON error: %s", r.body)
	}
	return e.Error.Code
}

// do sends a request; body may be nil, a string (sent as is) or a value
// (sent as JSON).
func (e *env) do(method, path, token string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode >= 500 {
		e.t.Errorf("%s %s: %d %s", method, path, res.StatusCode, data)
	}
	return resp{status: res.StatusCode, header: res.Header, body: data}
}

// must sends a request and fails unless the answer has status want.
func (e *env) must(want int, method, path, token string, body any) resp {
	e.t.Helper()
	r := e.do(method, path, token, body)
	if r.status != want {
		e.t.Fatalf("%s %s: got %d %s, want %d", method, path, r.status, r.body, want)
	}
	return r
}

func (e *env) account(addr string) Account {
	e.t.Helper()
	var a Account
	e.must(200, "GET", "/api/v1/accounts/"+addr, tokAdmin, nil).json(e.t, &a)
	return a
}

func (e *env) historyOf(addr string) []store.HistoryEntry {
	e.t.Helper()
	var h HistoryPage
	e.must(200, "GET", "/api/v1/accounts/"+addr+"/history?limit=1000", tokAdmin, nil).json(e.t, &h)
	return h.Entries
}

// published returns every account event in the stream, in order. The API
// publishes before it answers, so nothing needs waiting for.
func (e *env) published() []events.AccountEvent {
	e.t.Helper()
	ctx := context.Background()
	info, err := e.stream.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []events.AccountEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := e.stream.GetMsg(ctx, seq)
		if err != nil {
			e.t.Fatal(err)
		}
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			e.t.Fatal(err)
		}
		if m.Subject != events.AccountSubjectPrefix+ev.Type {
			e.t.Fatalf("event %s on subject %s", ev.Type, m.Subject)
		}
		out = append(out, ev)
	}
	return out
}

func (e *env) publishedFor(addr string) []events.AccountEvent {
	var out []events.AccountEvent
	for _, ev := range e.published() {
		if ev.Account == addr {
			out = append(out, ev)
		}
	}
	return out
}

func change(reason string) map[string]any { return map[string]any{"reason": reason} }
