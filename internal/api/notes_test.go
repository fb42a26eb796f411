package api

import (
	"strings"
	"testing"

	"github.com/aupd/aupd/rules"
)

// TestNotes: a case note needs role abuse, a company's token notes its
// own company's accounts only, the text is bounded plain text, the note
// is in the history with its author, and an address aupd holds no record
// of gets neither a note nor a record.
func TestNotes(t *testing.T) {
	e := newEnv(t)
	acme, globex := "alice@acme.example", "bob@globex.example"
	e.must(200, "POST", "/api/v1/accounts/"+acme+"/lock", tokAdmin, change("set up"))
	e.must(200, "POST", "/api/v1/accounts/"+globex+"/lock", tokAdmin, change("set up"))
	before := len(e.publishedFor(acme))
	path := func(a string) string { return "/api/v1/accounts/" + a + "/notes" }
	note := func(s string) map[string]any { return map[string]any{"text": s} }

	for _, tc := range []struct {
		name, token, account string
		body                 any
		want                 int
		code                 string
	}{
		{"no token", "", acme, note("x"), 401, "unauthenticated"},
		{"viewer", tokViewer, acme, note("x"), 403, "forbidden"},
		{"company viewer", tokAcmeViewer, acme, note("x"), 403, "forbidden"},
		{"other company's account", tokAcmeAbuse, globex, note("x"), 404, "not_found"},
		{"no record", tokAbuse, "nobody@acme.example", note("x"), 404, "not_found"},
		{"empty", tokAbuse, acme, note(" \n "), 400, "invalid"},
		{"too long", tokAbuse, acme, note(strings.Repeat("é", 1001)), 400, "invalid"},
		{"control character", tokAbuse, acme, note("bell\a"), 400, "invalid"},
		{"unknown field", tokAbuse, acme, map[string]any{"text": "x", "author": "someone else"}, 400, "unknown_field"},
		{"bad address", tokAbuse, "not-an-address", note("x"), 400, "bad_account"},
	} {
		r := e.do("POST", path(tc.account), tc.token, tc.body)
		if r.status != tc.want || r.errCode(t) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.status, r.body, tc.want, tc.code)
		}
	}
	setup := len(e.historyOf(acme))
	for _, a := range []string{acme, globex} {
		for _, x := range e.historyOf(a) {
			if x.Action == "note" {
				t.Fatalf("a refused note was written: %+v", x)
			}
		}
	}
	e.must(404, "GET", "/api/v1/accounts/nobody@acme.example", tokAdmin, nil) // no record was created
	if h := e.historyOf("nobody@acme.example"); len(h) != 0 {
		t.Errorf("history of an unknown address: %+v", h)
	}

	var got NoteResponse
	e.must(201, "POST", path(acme), tokAcmeAbuse, note("  called the user,\r\nnew password set <b>  ")).json(t, &got)
	if got.Entry.Action != "note" || got.Entry.Actor != "acme-abuse" || got.Entry.Note != "called the user,\nnew password set <b>" ||
		got.Entry.Via != "token" || got.Entry.Reason != rules.ReasonAbuseContact || got.Entry.Time.IsZero() {
		t.Errorf("answer %+v", got.Entry)
	}
	e.must(201, "POST", path(globex), tokAbuse, note(strings.Repeat("é", 1000)))
	h := e.historyOf(acme)
	if len(h) != setup+1 || h[0].Action != "note" || h[0].Actor != "acme-abuse" || h[0].Note != got.Entry.Note || !h[0].Time.Equal(got.Entry.Time) {
		t.Errorf("history %+v", h)
	}
	if h := e.historyOf(globex); len(h) != setup+1 || h[0].Actor != "abuse-desk" || h[0].Reason != "admin" {
		t.Errorf("globex history %+v", h)
	}
	if n := len(e.publishedFor(acme)); n != before {
		t.Errorf("a note published %d account events", n-before)
	}
	if a := e.account(acme); a.Status != "locked" {
		t.Errorf("a note changed the status to %s", a.Status)
	}
}
