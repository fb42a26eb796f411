package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/ingest"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

const (
	tokPublisher     = "publisher-secret"
	tokAcmePublisher = "acme-publisher-secret"
)

// fakeJS stands in for JetStream: it stores each id once, as JetStream's
// duplicate window does.
type fakeJS struct {
	mu   sync.Mutex
	seen map[string]bool
	msgs []*nats.Msg
}

func (f *fakeJS) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := m.Header.Get(nats.MsgIdHdr)
	if f.seen[id] {
		return &jetstream.PubAck{Stream: "T", Sequence: uint64(len(f.msgs)), Duplicate: true}, nil
	}
	f.seen[id] = true
	f.msgs = append(f.msgs, m)
	return &jetstream.PubAck{Stream: "T", Sequence: uint64(len(f.msgs))}, nil
}

func (f *fakeJS) stored() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.msgs)
}

// newIngestServer is an API with the HTTP ingest over a fake JetStream,
// an ingest body limit of maxBytes, and publisher tokens (one scoped to
// acme).
func newIngestServer(t *testing.T, maxBytes int64) (*httptest.Server, *fakeJS) {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	dir, err := companies.New(rdb, prefix, []companies.Company{
		{ID: "acme", Name: "Acme", Domains: []string{"acme.example"}, AbuseContact: "abuse@acme.example"},
		{ID: "globex", Name: "Globex", Domains: []string{"globex.example"}, AbuseContact: "abuse@globex.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	js := &fakeJS{seen: map[string]bool{}}
	ing, err := ingest.New(ingest.Options{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	ac := testAuth()
	ac.Tokens = append(ac.Tokens,
		TokenConfig{Name: "filters", Hash: auth.HashToken(tokPublisher), Role: RolePublisher},
		TokenConfig{Name: "acme-fbl", Hash: auth.HashToken(tokAcmePublisher), Role: RolePublisher, Company: "acme"})
	h, err := New(Options{Store: store.New(rdb, prefix), Companies: dir, Publisher: noPublisher{}, Notices: &fakeNotices{},
		Auth: ac, Ingest: ing, IngestMaxBytes: maxBytes, Window: 24 * time.Hour, Cap: testCap})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, js
}

type noPublisher struct{}

func (noPublisher) PublishAccountEvent(context.Context, *events.AccountEvent, []byte) error {
	return nil
}

func post(t *testing.T, srv *httptest.Server, path, token string, header http.Header, body io.Reader) resp {
	t.Helper()
	req, err := http.NewRequest("POST", srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

type ingestAnswerT struct {
	Accepted, Duplicates, Rejected int
	Results                        []struct {
		ID, Result, Reason, Field string
		Line                      int
	}
}

func event(id, account string) string {
	return fmt.Sprintf(`{"id":%q,"time":%q,"direction":"outbound","account":%q,"verdict":"spam"}`, id, time.Now().UTC().Format(time.RFC3339), account)
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestIngestNDJSONLines: each result names its line, blank lines
// counted, so that result i is not mistaken for line i.
func TestIngestNDJSONLines(t *testing.T) {
	srv, _ := newIngestServer(t, 0)
	body := "\n" + event("l2", "alice@globex.example") + "\n\n  \nnot json\r\n\n" + event("l7", "bob@globex.example") + "\n"
	r := post(t, srv, "/api/v1/ingest/verdicts", tokPublisher, http.Header{"Content-Type": {"application/x-ndjson"}}, strings.NewReader(body))
	var a ingestAnswerT
	r.json(t, &a)
	if r.status != 422 || len(a.Results) != 3 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for i, want := range []int{2, 5, 7} {
		if a.Results[i].Line != want {
			t.Errorf("result %d: line %d, want %d (%s)", i, a.Results[i].Line, want, r.body)
		}
	}
	if a.Results[1].Reason != "invalid_json" || a.Results[2].ID != "l7" {
		t.Errorf("results: %s", r.body)
	}
}

// TestIngestContentEncoding: gzip is decoded, within the body limit
// (a zip bomb is cut, never inflated); other encodings answer 415.
func TestIngestContentEncoding(t *testing.T) {
	const limit = 64 << 10
	srv, js := newIngestServer(t, limit)
	nd := []byte(event("gz1", "alice@globex.example") + "\n" + event("gz2", "bob@globex.example") + "\n")
	r := post(t, srv, "/api/v1/ingest/verdicts", tokPublisher, http.Header{"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}}, bytes.NewReader(gz(t, nd)))
	var a ingestAnswerT
	r.json(t, &a)
	if r.status != 202 || a.Accepted != 2 || js.stored() != 2 {
		t.Fatalf("gzip: %d %s", r.status, r.body)
	}
	// 64 MiB of zeros in 64 KiB of gzip: cut at the limit.
	bomb := gz(t, make([]byte, 64<<20))
	if len(bomb) > limit {
		t.Fatalf("the bomb is %d bytes", len(bomb))
	}
	r = post(t, srv, "/api/v1/ingest/verdicts", tokPublisher, http.Header{"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}}, bytes.NewReader(bomb))
	if r.status != 413 || r.errCode(t) != "payload_too_large" {
		t.Fatalf("zip bomb: %d %s", r.status, r.body)
	}
	r = post(t, srv, "/api/v1/ingest/verdicts", tokPublisher, http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"br"}}, strings.NewReader(event("br", "alice@globex.example")))
	if r.status != 415 || r.errCode(t) != "unsupported_encoding" {
		t.Fatalf("br: %d %s", r.status, r.body)
	}
	r = post(t, srv, "/api/v1/ingest/verdicts", tokPublisher, http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}, strings.NewReader(event("plain", "alice@globex.example")))
	if r.status != 400 || r.errCode(t) != "bad_body" {
		t.Fatalf("not gzip: %d %s", r.status, r.body)
	}
	if js.stored() != 2 {
		t.Fatalf("stored %d", js.stored())
	}
}

// countingReader counts what the server read of a request body.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestIngestRspamdReadsToEnd: a post of rspamd larger than the body limit
// is read to its end (rspamd, cut off, would defer the message) and
// answered 200 on a connection that stays open; the next scan of the
// same message (another queue id) is a duplicate.
func TestIngestRspamdReadsToEnd(t *testing.T) {
	const limit = 64 << 10
	srv, js := newIngestServer(t, limit)
	msg := "Received: by mx id %s\r\nFrom: alice@globex.example\r\nSubject: big\r\nMessage-ID: <big@globex.example>\r\n\r\n" + strings.Repeat("x", 3<<20)
	var reused []bool
	for i, qid := range []string{"Q1", "Q2", "Q3"} {
		body := &countingReader{r: strings.NewReader(fmt.Sprintf(msg, qid))}
		total := int64(len(fmt.Sprintf(msg, qid)))
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/ingest/rspamd", body)
		req.ContentLength = total
		req.Header = http.Header{"Content-Type": {"message/rfc822"}, "X-Rspamd-Action": {"reject"}, "X-Rspamd-User": {"alice@globex.example"},
			"X-Rspamd-Qid": {qid}, "X-Rspamd-From": {"alice@globex.example"}, "X-Rspamd-Rcpt": {`["bob@example.net"]`}}
		req.SetBasicAuth("rspamd", tokPublisher)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(c httptrace.GotConnInfo) { reused = append(reused, c.Reused) },
		}))
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		want := "accepted"
		if i > 0 {
			want = "duplicate"
		}
		var a ingestAnswerT
		_ = json.Unmarshal(b, &a)
		if res.StatusCode != 200 || len(a.Results) != 1 || a.Results[0].Result != want || body.n != total {
			t.Fatalf("post %d: %d %s; read %d of %d bytes", i, res.StatusCode, b, body.n, total)
		}
	}
	if js.stored() != 1 || len(reused) != 3 || !reused[1] || !reused[2] {
		t.Fatalf("stored %d; connection reused %v", js.stored(), reused)
	}
}

// TestIngestARFOutOfScope: a company-scoped publisher reporting another
// company's sender is told out_of_scope, not no_local_account.
func TestIngestARFOutOfScope(t *testing.T) {
	srv, js := newIngestServer(t, 0)
	report, err := os.ReadFile("../arf/testdata/rfc5965-b1.eml")
	if err != nil {
		t.Fatal(err)
	}
	arf := func(sender, token string) (int, ingestAnswerT) {
		r := post(t, srv, "/api/v1/ingest/arf", token, http.Header{"Content-Type": {"message/rfc822"}},
			bytes.NewReader(bytes.ReplaceAll(report, []byte("somespammer@example.net"), []byte(sender))))
		var a ingestAnswerT
		r.json(t, &a)
		return r.status, a
	}
	for _, tc := range []struct {
		sender, token, result, reason string
	}{
		{"alice@globex.example", tokAcmePublisher, "refused", "out_of_scope"},
		{"someone@nowhere.example", tokAcmePublisher, "refused", "no_local_account"},
		{"alice@acme.example", tokAcmePublisher, "accepted", ""},
		{"alice@globex.example", tokPublisher, "accepted", ""},
	} {
		status, a := arf(tc.sender, tc.token)
		if len(a.Results) != 1 || a.Results[0].Result != tc.result || a.Results[0].Reason != tc.reason {
			t.Errorf("%s with %s: %d %+v", tc.sender, tc.token, status, a)
		}
	}
	if js.stored() != 2 {
		t.Errorf("stored %d", js.stored())
	}
}

// TestIngestRspamdRedacted: a scan whose sender is a redacted address is
// answered 200 (a refusal must not make rspamd defer mail), as invalid
// with reason redacted_account, and stores nothing.
func TestIngestRspamdRedacted(t *testing.T) {
	srv, js := newIngestServer(t, 0)
	h := http.Header{"Content-Type": {"message/rfc822"}, "X-Rspamd-Action": {"reject"}, "X-Rspamd-Qid": {"Q1"},
		"X-Rspamd-From": {"xxxxxxx@globex.example"}, "X-Rspamd-Rcpt": {`["bob@example.net"]`}}
	r := post(t, srv, "/api/v1/ingest/rspamd", tokPublisher, h, strings.NewReader("Subject: s\r\nMessage-ID: <r1@x>\r\n\r\nbody\r\n"))
	var a ingestAnswerT
	r.json(t, &a)
	if r.status != 200 || len(a.Results) != 1 || a.Results[0].Result != "invalid" || a.Results[0].Reason != "redacted_account" || js.stored() != 0 {
		t.Fatalf("%d %s; stored %d", r.status, r.body, js.stored())
	}
}
