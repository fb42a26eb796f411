package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/ingest"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// Tokens of the ingest tests.
const (
	tokPublisher     = "publisher-token-0123456789"
	tokAcmePublisher = "acme-publisher-token-0123456789"
	tokAdminIngest   = "admin-token-0123456789"
	tokAcmeAbuse     = "acme-abuse-token-0123456789"
)

func withIngestTokens(t *testing.T, cfg *config.Config) *config.Config {
	t.Helper()
	cfg.Auth.Tokens = append(cfg.Auth.Tokens,
		auth.TokenConfig{Name: "filters", Hash: auth.HashToken(tokPublisher), Role: auth.RolePublisher},
		auth.TokenConfig{Name: "acme-fbl", Hash: auth.HashToken(tokAcmePublisher), Role: auth.RolePublisher, Company: "acme"},
		auth.TokenConfig{Name: "ops", Hash: auth.HashToken(tokAdminIngest), Role: auth.RoleAdmin},
		auth.TokenConfig{Name: "acme-abuse", Hash: auth.HashToken(tokAcmeAbuse), Role: auth.RoleAbuse, Company: "acme"},
	)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) ingest(t *testing.T) ingestResult {
	t.Helper()
	var r ingestResult
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
	return r
}

type ingestResult struct {
	Accepted, Duplicates, Rejected int
	Results                        []struct {
		ID, Result, Reason, Field, Account, Stream string
		Seq                                        uint64
	}
	Error struct{ Code string }
}

func (h *harness) post(path, token, ctype string, body []byte) answer {
	h.t.Helper()
	req, _ := http.NewRequest("POST", "http://"+h.info.HTTPAddr+path, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return h.do(req)
}

func (h *harness) do(req *http.Request) answer {
	h.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, body: b}
}

func TestIngestVerdictsOverHTTP(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	h := start(t, withIngestTokens(t, testConfig(t, ns.ClientURL(), prefix)))
	now := time.Now()
	const path = "/api/v1/ingest/verdicts"

	// One event: stored, with its id as Nats-Msg-Id, answered with its id.
	ev := verdict("http-1", "outbound", "Alice@globex.test", "spam", now)
	a := h.post(path, tokPublisher, "application/json", ev)
	r := a.ingest(t)
	if a.status != 202 || r.Accepted != 1 || r.Results[0].ID != "http-1" || r.Results[0].Seq == 0 || r.Results[0].Account != "alice@globex.test" {
		t.Fatalf("one event: %d %s", a.status, a.body)
	}
	msgs := h.streamMsgs(h.cfg.NATS.Verdicts.Name)
	if len(msgs) != 1 || msgs[0].Header.Get(nats.MsgIdHdr) != "http-1" || !bytes.Equal(msgs[0].Data, ev) || msgs[0].Subject != "aup.verdict.outbound" {
		t.Fatalf("stream: %+v", msgs)
	}

	// The same event twice is counted once.
	a = h.post(path, tokPublisher, "application/json", ev)
	if r := a.ingest(t); a.status != 202 || r.Duplicates != 1 || r.Results[0].Result != "duplicate" {
		t.Fatalf("again: %d %s", a.status, a.body)
	}
	h.drained()
	if n := h.count("alice@globex.test"); n != 1 {
		t.Fatalf("count after the same event twice: %d", n)
	}

	// NDJSON: per event, the dead-letter reasons; the valid ones stored.
	nd := bytes.Join([][]byte{
		verdict("http-2", "outbound", "alice@globex.test", "spam", now),
		[]byte(`{"time":"` + now.UTC().Format(time.RFC3339) + `","direction":"outbound","account":"alice@globex.test","verdict":"spam"}`),
		[]byte(`not json`),
		verdict("http-3", "sideways", "alice@globex.test", "spam", now),
		verdict("http-4", "complaint", "alice@globex.test", "spam", now.Add(time.Hour)),
		verdict("http-5", "inbound", "bob@example.com", "phish", now),
		{},
		verdict("http-6", "outbound", "not-an-address", "spam", now),
	}, []byte("\n"))
	a = h.post(path, tokPublisher, "application/x-ndjson", nd)
	r = a.ingest(t)
	want := []struct{ result, reason, field string }{
		{"accepted", "", ""}, {"invalid", "missing_field", "id"}, {"invalid", "invalid_json", ""},
		{"invalid", "invalid_field", "direction"}, {"invalid", "time_in_future", "time"}, {"accepted", "", ""},
		{"invalid", "invalid_field", "account"},
	}
	if a.status != 422 || len(r.Results) != len(want) || r.Accepted != 2 || r.Rejected != 5 {
		t.Fatalf("ndjson: %d %s", a.status, a.body)
	}
	for i, w := range want {
		if g := r.Results[i]; g.Result != w.result || g.Reason != w.reason || g.Field != w.field {
			t.Errorf("line %d: %+v, want %+v", i+1, g, w)
		}
	}

	// Bad bodies.
	big := verdict("http-big", "outbound", "alice@globex.test", "spam", now)
	big = append(big[:len(big)-1], []byte(`,"pad":"`+strings.Repeat("x", 1<<20)+`"}`)...)
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		status      int
		code        string
	}{
		{"empty", "application/json", nil, 422, ""},
		{"empty ndjson", "application/x-ndjson", []byte("\n\n"), 400, "no_events"},
		{"xml", "application/xml", []byte("<a/>"), 415, "unsupported_media_type"},
		{"array", "application/json", []byte(`[1,2]`), 422, ""},
		{"too large", "application/json", big, 422, ""},
	} {
		a := h.post(path, tokPublisher, tc.ctype, tc.body)
		r := a.ingest(t)
		if a.status != tc.status || (tc.code != "" && r.Error.Code != tc.code) {
			t.Errorf("%s: %d %s", tc.name, a.status, a.body)
		}
		if tc.name == "too large" && (len(r.Results) != 1 || r.Results[0].Reason != "payload_too_large") {
			t.Errorf("too large: %s", a.body)
		}
	}

	// Roles: a publisher reads nothing, an admin publishes nothing, no
	// token is 401; rspamd's Basic authentication carries the token.
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/api/v1/accounts/alice@globex.test", tokPublisher, 403},
		{"GET", "/api/v1/accounts", tokPublisher, 403},
		{"GET", "/api/v1/companies", tokPublisher, 403},
		{"GET", "/api/v1/replay?threshold=3", tokPublisher, 403},
		{"POST", path, tokAdminIngest, 403},
		{"POST", "/api/v1/ingest/arf", tokAdminIngest, 403},
		{"POST", path, "", 401},
		{"POST", path, "wrong", 401},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+h.info.HTTPAddr+tc.path, bytes.NewReader(verdict("http-x", "outbound", "alice@globex.test", "spam", now)))
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		if a := h.do(req); a.status != tc.status {
			t.Errorf("%s %s with %q: %d %s, want %d", tc.method, tc.path, tc.token, a.status, a.body, tc.status)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+h.info.HTTPAddr+path, bytes.NewReader(verdict("http-7", "outbound", "alice@globex.test", "spam", now)))
	req.SetBasicAuth("rspamd", tokPublisher)
	if a := h.do(req); a.status != 202 {
		t.Fatalf("basic auth: %d %s", a.status, a.body)
	}
	req, _ = http.NewRequest("GET", "http://"+h.info.HTTPAddr+"/api/v1/accounts", nil)
	req.SetBasicAuth("x", tokAdminIngest)
	if a := h.do(req); a.status != 401 {
		t.Fatalf("basic auth outside ingest: %d %s", a.status, a.body)
	}

	// A company's publisher publishes for its own accounts only.
	a = h.post(path, tokAcmePublisher, "application/json", verdict("http-8", "outbound", "alice@globex.test", "spam", now))
	if r := a.ingest(t); a.status != 422 || r.Results[0].Reason != "out_of_scope" {
		t.Fatalf("scoped publisher, other company: %d %s", a.status, a.body)
	}
	a = h.post(path, tokAcmePublisher, "application/json", verdict("http-9", "outbound", "carol@example.com", "spam", now))
	if a.status != 202 {
		t.Fatalf("scoped publisher, own company: %d %s", a.status, a.body)
	}

	// rspamd's json formatter over HTTP; refusals answer 200 (so that
	// rspamd with defer = true never delays mail for them) with a reason.
	const rspamdPath = "/api/v1/ingest/rspamd"
	for _, tc := range []struct {
		ctype, body, result, reason string
	}{
		{"text/plain", `{"user":"erin@globex.test","qid":"Q9","action":"reject","score":20.5,"rcpt":["x@example.net"],"from":"erin@globex.test","symbols":[{"name":"GTUBE","score":0}],"message_id":"m9@globex.test","subject":"hi"}`, "accepted", ""},
		{"application/json", `{"user":"unknown","qid":"Q10","action":"reject","score":20,"rcpt":["x@elsewhere.example"],"symbols":[]}`, "refused", "no_local_account"},
		{"application/json", `{"user":"erin","qid":"Q11","action":"reject","score":20,"rcpt":["x@example.net"],"symbols":[]}`, "refused", "user_not_an_address"},
		{"text/html", `<p>hello</p>`, "refused", "not_rspamd"},
		// "soft reject" (a deferred post's): the retry is scanned again;
		// a phish is a phish whatever the action.
		{"application/json", `{"user":"erin@globex.test","qid":"Q12","action":"soft reject","score":20.5,"rcpt":["x@example.net"],"from":"erin@globex.test","symbols":[{"name":"GTUBE","score":0}],"message_id":"m12@globex.test","subject":"hi"}`, "refused", "soft_reject"},
		{"application/json", `{"user":"erin@globex.test","qid":"Q13","action":"soft reject","score":20.5,"rcpt":["x@example.net"],"from":"erin@globex.test","symbols":[{"name":"PHISHING","score":4}],"message_id":"m13@globex.test","subject":"hi"}`, "accepted", ""},
	} {
		a := h.post(rspamdPath, tokPublisher, tc.ctype, []byte(tc.body))
		r := a.ingest(t)
		if a.status != 200 || len(r.Results) != 1 || r.Results[0].Result != tc.result || r.Results[0].Reason != tc.reason {
			t.Errorf("rspamd %s: %d %s", tc.body, a.status, a.body)
		}
	}
	if a := h.post(rspamdPath, tokAdminIngest, "application/json", []byte(`{}`)); a.status != 403 {
		t.Errorf("rspamd with an admin token: %d", a.status)
	}
	if a := h.post("/api/v1/ingest/arf", tokPublisher, "message/rfc822", []byte("From: a@globex.test\r\n\r\nhello\r\n")); a.status != 422 || a.ingest(t).Results[0].Reason != "not_arf" {
		t.Errorf("arf, not a report: %d %s", a.status, a.body)
	}

	h.drained()
	if n := h.count("erin@globex.test"); n != 2 { // Q9's spam, Q13's phish
		t.Fatalf("erin (rspamd json) counted %d", n)
	}
	if n := h.count("alice@globex.test"); n != 3 { // http-1, http-2, http-7
		t.Fatalf("alice counted %d", n)
	}
	if n := h.count("carol@example.com"); n != 1 {
		t.Fatalf("carol counted %d", n)
	}
	m := h.metrics()
	for _, line := range []string{
		`aupd_ingest_events_total{result="accepted",source="verdicts"} 5`,
		`aupd_ingest_events_total{result="duplicate",source="verdicts"} 1`,
		`aupd_ingest_events_total{result="refused",source="verdicts"} 1`,
		`aupd_ingest_events_total{result="accepted",source="rspamd"} 2`,
		`aupd_ingest_events_total{result="refused",source="rspamd"} 4`,
		`aupd_ingest_events_total{result="refused",source="arf"} 1`,
		`aupd_ingest_refusals_total{reason="not_arf",source="arf"} 1`,
		`aupd_ingest_refusals_total{reason="no_local_account",source="rspamd"} 1`,
		`aupd_ingest_refusals_total{reason="not_rspamd",source="rspamd"} 1`,
		`aupd_ingest_refusals_total{reason="soft_reject",source="rspamd"} 1`,
	} {
		if !strings.Contains(m, line) {
			t.Errorf("metrics lack %s", line)
		}
	}
}

// TestIngestJetStreamDown: while NATS is down the ingest answers 503 and
// stores nothing; the publisher's retry once it is back is stored once.
// The API runs on its own here (real HTTP, NATS and Redis), since the
// whole aupd stops when NATS stays away (the notifier gives up).
func TestIngestJetStreamDown(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true}
	ns := runNATS(t, opts)
	opts.Port = ns.Addr().(*net.TCPAddr).Port
	rdb, prefix := testutil.Redis(t)
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cfg := withIngestTokens(t, testConfig(t, ns.ClientURL(), prefix))
	if _, err := EnsureStream(context.Background(), js, cfg.NATS.Verdicts, verdictSubjects); err != nil {
		t.Fatal(err)
	}
	dir, err := companies.New(rdb, prefix, cfg.Companies)
	if err != nil {
		t.Fatal(err)
	}
	ing, err := ingest.New(ingest.Options{JS: js, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hdl, err := api.New(api.Options{Store: store.New(rdb, prefix), Companies: dir, Publisher: jsPublisher{js}, Cap: 100, Auth: cfg.Auth, Ingest: ing})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hdl)
	defer srv.Close()
	post := func() answer {
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/ingest/verdicts", bytes.NewReader(verdict("down-1", "outbound", "dave@globex.test", "spam", time.Now())))
		req.Header.Set("Authorization", "Bearer "+tokPublisher)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return answer{status: res.StatusCode, header: res.Header, body: b}
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	a := post()
	if r := a.ingest(t); a.status != 503 || a.header.Get("Retry-After") == "" || r.Results[0].Result != "unavailable" {
		t.Fatalf("nats down: %d %s", a.status, a.body)
	}

	// NATS back, on the same port and store: the retry is stored, once.
	runNATS(t, opts)
	testutil.Eventually(t, 30*time.Second, func() bool { a = post(); return a.status == 202 }, "ingest did not recover: %d %s", a.status, a.body)
	if a := post(); a.status != 202 || a.ingest(t).Duplicates != 1 {
		t.Fatalf("second retry: %d %s", a.status, a.body)
	}
	st, _ := js.Stream(context.Background(), cfg.NATS.Verdicts.Name)
	info, _ := st.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func runNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	o := *opts
	ns, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
