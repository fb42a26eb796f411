package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/sessionlock"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

func TestOptionsValidate(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("empty options accepted")
	}
	bad := []AuthConfig{
		{Tokens: []TokenConfig{{Name: "a", Hash: "plain-token", Role: RoleAdmin}}},
		{Tokens: []TokenConfig{{Name: "a", Hash: auth.HashToken("x"), Role: "root"}}},
		{Tokens: []TokenConfig{{Name: "a", Hash: auth.HashToken("x"), Role: RoleAdmin}, {Name: "a", Hash: auth.HashToken("y"), Role: RoleAdmin}}},
		{Tokens: []TokenConfig{{Name: "a", Hash: auth.HashToken("x"), Role: RoleAdmin}, {Name: "b", Hash: auth.HashToken("x"), Role: RoleAdmin}}},
		{Tokens: []TokenConfig{{Name: "", Hash: auth.HashToken("x"), Role: RoleAdmin}}},
	}
	for i, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("bad config %d accepted", i)
		}
	}
	if err := testAuth().Validate(); err != nil {
		t.Fatal(err)
	}
	if h := auth.HashToken("abc"); h != "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("HashToken: %s", h)
	}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	path := "/api/v1/accounts/alice@acme.example/lock"
	for _, tc := range []struct {
		name   string
		header string
		want   int
		code   string
	}{
		{"no token", "", 401, "unauthenticated"},
		{"basic auth", "Basic YWxpY2U6cHc=", 401, "unauthenticated"},
		{"empty bearer", "Bearer ", 401, "unauthenticated"},
		{"wrong token", "Bearer nope", 401, "invalid_token"},
		{"hash instead of token", "Bearer " + auth.HashToken(tokAdmin), 401, "invalid_token"},
		{"viewer cannot lock", "Bearer " + tokViewer, 403, "forbidden"},
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(`{"reason":"x"}`))
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(res.Body)
		res.Body.Close()
		r := resp{status: res.StatusCode, header: res.Header, body: buf.Bytes()}
		if r.status != tc.want || r.errCode(t) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.status, r.body, tc.want, tc.code)
		}
		if r.status == 401 && res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", tc.name)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: content type %q", tc.name, ct)
		}
	}
	// Roles: abuse cannot close, delete or manage companies; a company
	// admin cannot manage companies.
	e.must(403, "POST", "/api/v1/accounts/alice@acme.example/close", tokAbuse, change("x"))
	e.must(403, "POST", "/api/v1/accounts/alice@acme.example/maintenance", tokAbuse, change("x"))
	e.must(403, "DELETE", "/api/v1/accounts/alice@acme.example?reason=x", tokAbuse, nil)
	e.must(403, "PUT", "/api/v1/companies/new", tokAbuse, map[string]any{"domains": []string{"new.example"}, "reason": "x"})
	e.must(403, "PUT", "/api/v1/companies/new", tokAcmeAdmin, map[string]any{"domains": []string{"new.example"}, "reason": "x"})
	e.must(403, "DELETE", "/api/v1/companies/acme?reason=x", tokAcmeAdmin, nil)
	// Nothing was written by refused requests.
	if h := e.historyOf("alice@acme.example"); len(h) != 0 {
		t.Fatalf("history after refused requests: %+v", h)
	}
	// The OpenAPI document needs no token.
	e.must(200, "GET", "/api/v1/openapi.yaml", "", nil)
}

func TestOpenAPIDocument(t *testing.T) {
	e := newEnv(t)
	r := e.must(200, "GET", "/api/v1/openapi.yaml", "", nil)
	if !bytes.Equal(r.body, OpenAPI) {
		t.Fatal("served document differs from the embedded one")
	}
	docs, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, OpenAPI) {
		t.Fatal("docs/openapi.yaml differs from internal/api/openapi.yaml; copy it: cp internal/api/openapi.yaml docs/openapi.yaml")
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	// The real route table, and the session-lock routes served beside it
	// with the API's tokens.
	s := &server{}
	var patterns []string
	for _, rt := range s.routeTable() {
		patterns = append(patterns, rt.pattern)
	}
	patterns = append(patterns, sessionlock.Routes()...)
	n := 0
	for _, pattern := range patterns {
		rt := route{pattern: pattern}
		method, path, _ := strings.Cut(rt.pattern, " ")
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("route %s is not in openapi.yaml", rt.pattern)
			continue
		}
		if _, ok := ops[strings.ToLower(method)]; !ok {
			t.Errorf("route %s: method not in openapi.yaml", rt.pattern)
		}
		n++
	}
	var documented int
	ids := map[string]bool{}
	for path, ops := range doc.Paths {
		for m, op := range ops {
			if m == "parameters" {
				continue
			}
			documented++
			id, _ := op.(map[string]any)["operationId"].(string)
			if id == "" || ids[id] {
				t.Errorf("%s %s: operationId %q missing or used twice", m, path, id)
			}
			ids[id] = true
		}
	}
	if documented != n {
		t.Errorf("openapi.yaml documents %d operations, the API has %d", documented, n)
	}
}

func TestSuspendReinstatePublishesAndRecords(t *testing.T) {
	e := newEnv(t)
	addr := "alice@acme.example"
	var cr ChangeResponse
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAbuse,
		map[string]any{"services": []string{"send", "imap"}, "reason": "spam run, ticket 42"}).json(t, &cr)
	if !cr.Changed || !slices.Equal(cr.Account.Suspended, []string{"send", "imap"}) || cr.Account.Company != "acme" {
		t.Fatalf("suspend: %+v", cr.Account)
	}
	for _, sus := range cr.Account.Suspensions {
		if sus.Actor != "abuse-desk" || sus.Reason != "admin" || sus.Note != "spam run, ticket 42" || sus.ID == "" {
			t.Fatalf("suspension record %+v", sus)
		}
	}
	// Suspending again changes nothing and writes nothing.
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAbuse,
		map[string]any{"services": []string{"send"}, "reason": "again"}).json(t, &cr)
	if cr.Changed {
		t.Fatal("second suspend changed something")
	}
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/reinstate", tokAbuse,
		map[string]any{"services": []string{"imap"}, "reason": "user called", "code": "user_request"}).json(t, &cr)
	if !cr.Changed || !slices.Equal(cr.Account.Suspended, []string{"send"}) {
		t.Fatalf("reinstate imap: %+v", cr.Account)
	}
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/reinstate", tokAbuse, change("all clear")).json(t, &cr)
	if !cr.Changed || len(cr.Account.Suspended) != 0 {
		t.Fatalf("reinstate all: %+v", cr.Account)
	}

	h := e.historyOf(addr)
	var actions []string
	for _, x := range h {
		actions = append(actions, x.Action)
	}
	// Newest first: the company assignment of the new account came first.
	if want := []string{"reinstate", "reinstate", "suspend", "update"}; !slices.Equal(actions, want) {
		t.Fatalf("history actions %v, want %v", actions, want)
	}
	if h[1].Reason != "user_request" || h[1].Note != "user called" || h[1].Actor != "abuse-desk" {
		t.Fatalf("history entry %+v", h[1])
	}

	evs := e.publishedFor(addr)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if want := []string{"updated", "suspended", "reinstated", "reinstated"}; !slices.Equal(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	sus := evs[1]
	if sus.Actor != "abuse-desk" || sus.Reason != "admin" || sus.Note != "spam run, ticket 42" || sus.Company != "acme" {
		t.Fatalf("suspended event %+v", sus)
	}
	if sus.Old == nil || sus.New == nil || len(sus.Old.Suspended) != 0 || !slices.Equal(sus.New.Suspended, []string{"send", "imap"}) || sus.New.Status != "active" {
		t.Fatalf("suspended event states %+v -> %+v", sus.Old, sus.New)
	}
	if last := evs[3]; !slices.Equal(last.Old.Suspended, []string{"send"}) || len(last.New.Suspended) != 0 {
		t.Fatalf("last reinstated event %+v -> %+v", last.Old, last.New)
	}
	// The listing index follows the published events.
	var l AccountList
	e.must(200, "GET", "/api/v1/accounts?suspended=true", tokAdmin, nil).json(t, &l)
	if len(l.Accounts) != 0 {
		t.Fatalf("still listed as suspended: %+v", l.Accounts)
	}
}

func TestReasonAndServicesRequired(t *testing.T) {
	e := newEnv(t)
	p := "/api/v1/accounts/alice@acme.example/"
	for _, tc := range []struct {
		path string
		body any
		code string
	}{
		{"suspend", map[string]any{"services": []string{"send"}}, "reason_required"},
		{"suspend", map[string]any{"services": []string{"send"}, "reason": "   "}, "reason_required"},
		{"suspend", map[string]any{"reason": "x"}, "invalid"},
		{"suspend", map[string]any{"services": []string{"ftp"}, "reason": "x"}, "invalid"},
		{"suspend", map[string]any{"services": []string{"send"}, "reason": "x", "code": "Not A Code"}, "invalid"},
		{"suspend", map[string]any{"services": []string{"send"}, "reason": strings.Repeat("x", 1001)}, "invalid"},
		{"lock", map[string]any{}, "reason_required"},
		{"reinstate", map[string]any{"services": []string{"bogus"}, "reason": "x"}, "invalid"},
	} {
		r := e.must(400, "POST", p+tc.path, tokAdmin, tc.body)
		if got := r.errCode(t); got != tc.code {
			t.Errorf("%s %v: code %s, want %s", tc.path, tc.body, got, tc.code)
		}
	}
	e.must(400, "DELETE", "/api/v1/accounts/alice@acme.example", tokAdmin, nil)
	if len(e.published()) != 0 {
		t.Fatal("refused requests published events")
	}
}

func TestStatusActions(t *testing.T) {
	e := newEnv(t)
	addr := "bob@acme.example"
	post := func(action string, want int) ChangeResponse {
		t.Helper()
		var cr ChangeResponse
		r := e.must(want, "POST", "/api/v1/accounts/"+addr+"/"+action, tokAdmin, change(action+" it"))
		if want == 200 {
			r.json(t, &cr)
		}
		return cr
	}
	// Unlocking an account nobody knows changes nothing and creates nothing.
	if cr := post("unlock", 200); cr.Changed || cr.Account.Exists {
		t.Fatalf("unlock unknown: %+v", cr)
	}
	e.must(404, "GET", "/api/v1/accounts/"+addr, tokAdmin, nil)

	if cr := post("lock", 200); !cr.Changed || cr.Account.Status != rules.StatusLocked || cr.Account.StatusInfo.Actor != "root" {
		t.Fatalf("lock: %+v", cr.Account)
	}
	// Idempotent: locking a locked account writes no second entry.
	if cr := post("lock", 200); cr.Changed {
		t.Fatal("second lock changed")
	}
	n := 0
	for _, h := range e.historyOf(addr) {
		if h.Action == "status" && h.Status == "locked" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d lock entries, want 1", n)
	}
	if r := e.must(409, "POST", "/api/v1/accounts/"+addr+"/end-lockout", tokAdmin, change("x")); r.errCode(t) != "wrong_status" {
		t.Fatal("end-lockout of a locked account")
	}
	post("unlock", 200)
	post("maintenance", 200)
	if r := e.must(409, "POST", "/api/v1/accounts/"+addr+"/unlock", tokAdmin, change("x")); r.errCode(t) != "wrong_status" {
		t.Fatal("unlock during maintenance")
	}
	if cr := post("close", 200); cr.Account.Status != rules.StatusClosed {
		t.Fatalf("close: %+v", cr.Account)
	}
	e.must(409, "POST", "/api/v1/accounts/"+addr+"/lock", tokAdmin, change("x"))
	e.must(409, "POST", "/api/v1/accounts/"+addr+"/maintenance", tokAdmin, change("x"))
	if cr := post("activate", 200); cr.Account.Status != rules.StatusActive || !cr.Changed {
		t.Fatalf("activate: %+v", cr.Account)
	}

	// A lockout (set by the lockout counter) ends by itself or early.
	ctx := context.Background()
	until := e.clock.now().Add(time.Hour)
	if _, err := e.store.SetStatus(ctx, addr, rules.StatusLockout, until, store.Actor{Name: "aupd", Reason: rules.ReasonLockout}); err != nil {
		t.Fatal(err)
	}
	if a := e.account(addr); a.Status != rules.StatusLockout || a.LockoutUntil == nil || !a.LockoutUntil.Equal(until) {
		t.Fatalf("lockout: %+v", a)
	}
	e.clock.add(2 * time.Hour)
	if a := e.account(addr); a.Status != rules.StatusActive {
		t.Fatalf("lockout after its end: %s", a.Status)
	}
	if cr := post("end-lockout", 200); cr.Changed {
		t.Fatal("ending an ended lockout changed something")
	}
	if _, err := e.store.SetStatus(ctx, addr, rules.StatusLockout, e.clock.now().Add(time.Hour), store.Actor{Name: "aupd", Reason: rules.ReasonLockout}); err != nil {
		t.Fatal(err)
	}
	var cr ChangeResponse
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/end-lockout", tokAbuse, change("user verified")).json(t, &cr)
	if !cr.Changed || cr.Account.Status != rules.StatusActive {
		t.Fatalf("end-lockout: %+v", cr)
	}

	// Every status change was published with old and new status.
	var got []string
	for _, ev := range e.publishedFor(addr) {
		if ev.Type == "status_changed" && ev.Actor != "aupd" {
			got = append(got, ev.Old.Status+">"+ev.New.Status)
		}
	}
	want := []string{"active>locked", "locked>active", "active>maintenance", "maintenance>closed", "closed>active", "lockout>active"}
	if !slices.Equal(got, want) {
		t.Fatalf("status events %v, want %v", got, want)
	}
}

func TestDeleteRefusedWhileSuspended(t *testing.T) {
	e := newEnv(t)
	addr := "carol@acme.example"
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAdmin, map[string]any{"services": []string{"receive"}, "reason": "bounce loop"})
	r := e.must(409, "DELETE", "/api/v1/accounts/"+addr, tokAdmin, change("user left"))
	if r.errCode(t) != "suspended" || !strings.Contains(string(r.body), "reinstate") {
		t.Fatalf("delete while suspended: %s", r.body)
	}
	if a := e.account(addr); !a.Exists {
		t.Fatal("deleted anyway")
	}
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/reinstate", tokAdmin, change("fixed"))
	e.must(200, "DELETE", "/api/v1/accounts/"+addr+"?reason=user+left", tokAdmin, nil)
	e.must(404, "GET", "/api/v1/accounts/"+addr, tokAdmin, nil)
	e.must(404, "DELETE", "/api/v1/accounts/"+addr, tokAdmin, change("again"))
	// History outlives the account.
	h := e.historyOf(addr)
	if len(h) == 0 || h[0].Action != "delete" || h[0].Note != "user left" {
		t.Fatalf("history after delete: %+v", h)
	}
	evs := e.publishedFor(addr)
	if last := evs[len(evs)-1]; last.Type != "deleted" || last.New != nil || last.Actor != "root" {
		t.Fatalf("deleted event %+v", last)
	}
	var lic store.Licences
	e.must(200, "GET", "/api/v1/companies/acme/licences", tokAdmin, nil).json(t, &lic)
	if lic.Total != 0 {
		t.Fatalf("deleted account still counts: %+v", lic)
	}
}

func TestCrossCompanyRefused(t *testing.T) {
	e := newEnv(t)
	other, mine := "dave@globex.example", "erin@acme.example"
	e.must(200, "POST", "/api/v1/accounts/"+other+"/suspend", tokAdmin, map[string]any{"services": []string{"send"}, "reason": "x"})
	e.must(200, "POST", "/api/v1/accounts/"+mine+"/lock", tokAdmin, change("x"))
	missing := e.must(404, "GET", "/api/v1/accounts/nobody@acme.example", tokAcmeAbuse, nil)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/api/v1/accounts/" + other},
		{"GET", "/api/v1/accounts/" + other + "/history"},
		{"GET", "/api/v1/accounts/" + other + "/suspensions/abc/evidence.txt"},
		{"POST", "/api/v1/accounts/" + other + "/reinstate"},
		{"POST", "/api/v1/accounts/" + other + "/lock"},
		{"POST", "/api/v1/accounts/unowned@nowhere.example/lock"},
	} {
		r := e.must(404, tc.method, tc.path, tokAcmeAbuse, change("x"))
		if !bytes.Equal(r.body, missing.body) {
			t.Errorf("%s %s: %s differs from a missing account's %s", tc.method, tc.path, r.body, missing.body)
		}
	}
	e.must(404, "DELETE", "/api/v1/accounts/"+other+"?reason=x", tokAcmeAdmin, nil)
	e.must(404, "POST", "/api/v1/decide", tokAcmeViewer, map[string]any{"account": other, "access": "login_imap"})
	e.must(403, "GET", "/api/v1/accounts?company=globex", tokAcmeAbuse, nil)
	e.must(404, "GET", "/api/v1/companies/globex", tokAcmeAbuse, nil)
	e.must(404, "GET", "/api/v1/companies/globex/licences", tokAcmeAbuse, nil)
	e.must(400, "PUT", "/api/v1/accounts/frank@acme.example", tokAcmeAdmin, map[string]any{"company": "globex", "reason": "x"})
	if a := e.account(other); !slices.Equal(a.Suspended, []string{"send"}) || a.Status != rules.StatusActive {
		t.Fatalf("other company's account changed: %+v", a)
	}
	// Within its company the token works.
	var a Account
	e.must(200, "GET", "/api/v1/accounts/"+mine, tokAcmeViewer, nil).json(t, &a)
	e.must(200, "POST", "/api/v1/accounts/"+mine+"/unlock", tokAcmeAbuse, change("verified"))
	var l AccountList
	e.must(200, "GET", "/api/v1/accounts", tokAcmeAbuse, nil).json(t, &l)
	if len(l.Accounts) != 1 || l.Accounts[0].Address != mine {
		t.Fatalf("scoped listing: %+v", l.Accounts)
	}
	var cl CompanyList
	e.must(200, "GET", "/api/v1/companies", tokAcmeViewer, nil).json(t, &cl)
	if len(cl.Companies) != 1 || cl.Companies[0].ID != "acme" {
		t.Fatalf("scoped companies: %+v", cl.Companies)
	}
	if h := e.historyOf(mine); h[0].Actor != "acme-abuse" {
		t.Fatalf("actor %q", h[0].Actor)
	}
}

func TestListPagingAndLicences(t *testing.T) {
	e := newEnv(t)
	var all []string
	for i := range 7 {
		addr := fmt.Sprintf("u%d@acme.example", i)
		all = append(all, addr)
		switch i % 3 {
		case 0:
			e.must(200, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAdmin, map[string]any{"services": []string{"send"}, "reason": "x"})
		case 1:
			e.must(200, "POST", "/api/v1/accounts/"+addr+"/close", tokAdmin, change("x"))
		case 2:
			e.must(200, "PUT", "/api/v1/accounts/"+addr, tokAdmin, map[string]any{"type": "mailbox", "reason": "provisioned"})
		}
	}
	e.must(200, "PUT", "/api/v1/accounts/x@globex.example", tokAdmin, map[string]any{"reason": "provisioned"})
	list := func(query string) []string {
		t.Helper()
		var got []string
		cursor := ""
		for range 20 {
			var l AccountList
			q := query + "&limit=2"
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			e.must(200, "GET", "/api/v1/accounts?"+q, tokViewer, nil).json(t, &l)
			if len(l.Accounts) > 2 {
				t.Fatalf("page of %d", len(l.Accounts))
			}
			for _, a := range l.Accounts {
				got = append(got, a.Address)
			}
			if cursor = l.NextCursor; cursor == "" {
				slices.Sort(got)
				return got
			}
		}
		t.Fatal("paging does not end")
		return nil
	}
	if got := list("company=acme"); !slices.Equal(got, all) {
		t.Fatalf("acme: %v", got)
	}
	if got := list("company=acme&suspended=true"); !slices.Equal(got, []string{all[0], all[3], all[6]}) {
		t.Fatalf("suspended: %v", got)
	}
	if got := list("status=closed"); !slices.Equal(got, []string{all[1], all[4]}) {
		t.Fatalf("closed: %v", got)
	}
	if got := list("status=active&company=acme"); len(got) != 5 {
		t.Fatalf("active: %v", got)
	}
	e.must(400, "GET", "/api/v1/accounts?status=frozen", tokViewer, nil)
	e.must(400, "GET", "/api/v1/accounts?suspend=true", tokViewer, nil)
	e.must(400, "GET", "/api/v1/accounts?limit=0", tokViewer, nil)
	e.must(400, "GET", "/api/v1/accounts?cursor=%21%21", tokViewer, nil)

	var lic store.Licences
	e.must(200, "GET", "/api/v1/companies/acme/licences", tokViewer, nil).json(t, &lic)
	if lic.Total != 7 || lic.ByStatus[rules.StatusClosed] != 2 || lic.Suspended != 3 {
		t.Fatalf("licences %+v", lic)
	}
	e.must(404, "GET", "/api/v1/companies/nope/licences", tokViewer, nil)
}

func TestAccountCountsLastSuspensionEvidence(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	addr := "spammer@acme.example"
	now := e.clock.now()
	var items []store.Item
	for i := range testCap + 5 {
		items = append(items, store.Item{ID: fmt.Sprint("m", i), Time: now.Add(-time.Duration(i) * time.Second), Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true})
	}
	items = append(items, store.Item{ID: "ham", Time: now, Kind: rules.KindOf(rules.Inbound, rules.Ham)})
	res, err := e.store.Ingest(ctx, []store.Batch{{Account: addr, Company: "acme", Threshold: 10, Cap: testCap, Action: rules.ActionSuspend, Items: items}}, store.IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute, Now: now, NewID: func() string { return store.NewID(now) }})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	id := res[0].ID
	e.notices.mu.Lock()
	e.notices.states[addr+"/"+id] = map[string]any{"state": "sent", "to": "abuse@acme.example"}
	e.notices.evidence[addr+"/"+id] = []byte("Sample 1 of 3\n")
	e.notices.mu.Unlock()

	a := e.account(addr)
	if a.Counts == nil || a.Counts.Counting.Total != testCap || !a.Counts.Counting.AtLeast || a.Counts.Counting.ByVerdict[rules.Outbound][rules.Spam] != testCap {
		t.Fatalf("counts %+v", a.Counts)
	}
	if a.Counts.Other.Total != 1 || a.Counts.Other.ByVerdict[rules.Inbound][rules.Ham] != 1 || a.Counts.Other.AtLeast {
		t.Fatalf("other counts %+v", a.Counts.Other)
	}
	ls := a.LastSuspension
	if ls == nil || ls.ID != id || !ls.InForce || ls.Notice == nil || ls.Action != "suspend" {
		t.Fatalf("last suspension %+v", ls)
	}
	if !slices.Equal(a.Suspended, []string{"send", "webmail_send"}) {
		t.Fatalf("suspended %v", a.Suspended)
	}
	r := e.must(200, "GET", "/api/v1/accounts/"+addr+"/suspensions/"+id+"/evidence.txt", tokViewer, nil)
	if string(r.body) != "Sample 1 of 3\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || !strings.Contains(r.header.Get("Content-Disposition"), "evidence.txt") {
		t.Fatalf("evidence %q %v", r.body, r.header)
	}
	e.must(404, "GET", "/api/v1/accounts/"+addr+"/suspensions/nosuchid/evidence.txt", tokViewer, nil)
	e.must(400, "GET", "/api/v1/accounts/"+addr+"/suspensions/bad%20id/evidence.txt", tokViewer, nil)

	// Reinstating lifts the AUP suspension and restarts the count.
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/reinstate", tokAbuse, map[string]any{"services": []string{"send"}, "reason": "password changed"})
	a = e.account(addr)
	if len(a.Suspended) != 0 || a.LastSuspension.InForce || a.Counts.Counting.Total != 0 {
		t.Fatalf("after reinstatement: suspended %v in force %v count %d", a.Suspended, a.LastSuspension.InForce, a.Counts.Counting.Total)
	}
	// The AUP suspension in the worker's outbox was published by the
	// reinstatement's flush, before it.
	var types []string
	for _, ev := range e.publishedFor(addr) {
		types = append(types, ev.Type)
	}
	if !slices.Equal(types, []string{"suspended", "reinstated"}) {
		t.Fatalf("events %v", types)
	}
}

// TestUnprovisionedCountingAddress: an address aupd counts verdicts for
// but holds no record of (never provisioned) is shown with its counts and
// threshold, not as missing; reading it creates neither a record nor a
// licence. A company-scoped token gets a missing account's 404, byte for
// byte, for such an address of another company.
func TestUnprovisionedCountingAddress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := e.clock.now()
	count := func(addr, company string, n int, dir rules.Direction) {
		t.Helper()
		var items []store.Item
		for i := range n {
			items = append(items, store.Item{ID: fmt.Sprint(addr, dir, i), Time: now.Add(-time.Duration(i) * time.Second), Kind: rules.KindOf(dir, rules.Spam), Counting: true})
		}
		res, err := e.store.Ingest(ctx, []store.Batch{{Account: addr, Company: company, Threshold: 10, Cap: testCap, Action: rules.ActionSuspend, Items: items}}, store.IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute, Now: now, NewID: func() string { return store.NewID(now) }})
		if err != nil || res[0].Err != nil || res[0].ID != "" {
			t.Fatal(err, res)
		}
	}
	seven, theirs := "seven@acme.example", "seven@globex.example"
	count(seven, "acme", 5, rules.Outbound)
	count(seven, "acme", 2, rules.Complaint)
	count(theirs, "globex", 1, rules.Outbound)
	var before store.Licences
	e.must(200, "GET", "/api/v1/companies/acme/licences", tokAdmin, nil).json(t, &before)

	for _, tok := range []string{tokViewer, tokAcmeAbuse} {
		var a Account
		e.must(200, "GET", "/api/v1/accounts/"+seven, tok, nil).json(t, &a)
		if a.Exists || a.Provisioned || a.Licensed || a.Company != "acme" || a.Threshold != 10 || a.Counts == nil ||
			a.Counts.Counting.Total != 7 || a.Counts.Counting.ByDirection[rules.Outbound] != 5 || a.Counts.Counting.ByDirection[rules.Complaint] != 2 {
			t.Fatalf("%s: %+v", tok, a)
		}
	}
	if a, err := e.store.Account(ctx, seven); err != nil || a.Exists {
		t.Fatalf("reading made a record: %+v %v", a, err)
	}
	var after store.Licences
	e.must(200, "GET", "/api/v1/companies/acme/licences", tokAdmin, nil).json(t, &after)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("licences %+v, before %+v", after, before)
	}
	// Never seen: missing. Another company's counting address: missing
	// too, for a scoped token, in the same bytes.
	missing := e.must(404, "GET", "/api/v1/accounts/nobody@acme.example", tokAcmeAbuse, nil)
	if r := e.must(404, "GET", "/api/v1/accounts/"+theirs, tokAcmeAbuse, nil); !bytes.Equal(r.body, missing.body) {
		t.Fatalf("another company's counting address: %s, a missing one's %s", r.body, missing.body)
	}
	var g Account
	e.must(200, "GET", "/api/v1/accounts/"+theirs, tokViewer, nil).json(t, &g)
	if g.Exists || g.Threshold != 1 || g.Counts.Counting.Total != 1 {
		t.Fatalf("globex address for the provider: %+v", g)
	}
}

func TestDecideForWebmail(t *testing.T) {
	e := newEnv(t)
	decide := func(addr string, access rules.Access) DecideResponse {
		t.Helper()
		var d DecideResponse
		e.must(200, "POST", "/api/v1/decide", tokViewer, map[string]any{"account": addr, "access": access}).json(t, &d)
		return d
	}
	if d := decide("New.User@ACME.example", rules.LoginWebmail); d.Result != rules.Allow || d.Account != "new.user@acme.example" || d.Message != "" {
		t.Fatalf("unknown account: %+v", d)
	}
	ctx := context.Background()
	if _, err := e.store.SetStatus(ctx, "lo@acme.example", rules.StatusLockout, e.clock.now().Add(time.Hour), store.Actor{Name: "aupd", Reason: rules.ReasonLockout}); err != nil {
		t.Fatal(err)
	}
	d := decide("lo@acme.example", rules.LoginWebmail)
	if d.Result != rules.Deny || !d.Masked || d.Message != InvalidLoginMessage || strings.Contains(strings.ToLower(d.Message), "lock") {
		t.Fatalf("lockout: %+v", d)
	}
	if d := decide("lo@acme.example", rules.Receive); d.Result != rules.Allow {
		t.Fatalf("lockout receive: %+v", d)
	}
	e.must(200, "POST", "/api/v1/accounts/ws@acme.example/suspend", tokAdmin, map[string]any{"services": []string{"webmail_send"}, "reason": "x"})
	if d := decide("ws@acme.example", rules.SendWebmail); d.Result != rules.Deny || d.Code != rules.CodeWebmailSendSusp || d.Masked || d.Message == "" {
		t.Fatalf("webmail_send: %+v", d)
	}
	if d := decide("ws@acme.example", rules.LoginWebmail); d.Result != rules.Allow {
		t.Fatalf("webmail login with webmail_send suspended: %+v", d)
	}
	e.must(200, "POST", "/api/v1/accounts/lk@acme.example/lock", tokAdmin, change("x"))
	if d := decide("lk@acme.example", rules.LoginWebmail); d.Code != rules.CodeLocked || d.Masked {
		t.Fatalf("locked: %+v", d)
	}
	e.must(400, "POST", "/api/v1/decide", tokViewer, map[string]any{"account": "a@acme.example", "access": "login_ftp"})
	e.must(400, "POST", "/api/v1/decide", tokViewer, map[string]any{"account": "not an address", "access": "login_imap"})
}

func TestForwardAccounts(t *testing.T) {
	e := newEnv(t)
	addr := "fwd@acme.example"
	var cr ChangeResponse
	e.must(200, "PUT", "/api/v1/accounts/"+addr, tokAdmin, map[string]any{"type": "forward", "reason": "alias"}).json(t, &cr)
	if cr.Account.Type != rules.TypeForward || cr.Account.Company != "acme" {
		t.Fatalf("put: %+v", cr.Account)
	}
	if r := e.must(409, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAdmin, map[string]any{"services": []string{"send"}, "reason": "x"}); r.errCode(t) != "forward_account" {
		t.Fatal("send suspended on a forward account")
	}
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAdmin, map[string]any{"services": []string{"receive"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/accounts/"+addr, tokAdmin, map[string]any{"type": "alias", "reason": "x"})
	e.must(400, "PUT", "/api/v1/accounts/"+addr, tokAdmin, map[string]any{"company": "nope", "reason": "x"})
}

func TestCompaniesWithoutRestart(t *testing.T) {
	e := newEnv(t)
	body := map[string]any{
		"name": "Initech", "domains": []string{"Initech.example"}, "abuse_contact": "Abuse@initech.example",
		"threshold": 50, "lockout": map[string]any{"max_failures": 5, "window": "10m", "duration": "30m"}, "reason": "new customer",
	}
	body["desk_contacts"] = []string{"Alice@Initech.example", "alice@initech.example", "bob@initech.example"}
	var c Company
	e.must(201, "PUT", "/api/v1/companies/initech", tokAdmin, body).json(t, &c)
	if c.Domains[0] != "initech.example" || c.AbuseContact != "abuse@initech.example" || *c.Threshold != 50 || c.Lockout.Duration != "30m0s" || c.Source != "api" ||
		!slices.Equal(c.DeskContacts, []string{"alice@initech.example", "bob@initech.example"}) {
		t.Fatalf("put: %+v", c)
	}
	body["threshold"] = 75
	e.must(200, "PUT", "/api/v1/companies/initech", tokAdmin, body).json(t, &c)
	if *c.Threshold != 75 {
		t.Fatalf("update: %+v", c)
	}
	// Another aupd process sees it on its next refresh.
	other, err := companies.New(e.rdb, e.prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, ok := other.ByDomain("initech.example"); !ok || *got.Threshold != 75 {
		t.Fatalf("other process: %+v %v", got, ok)
	}
	// Its accounts belong to it at once.
	var cr ChangeResponse
	e.must(200, "POST", "/api/v1/accounts/peter@initech.example/lock", tokAdmin, change("x")).json(t, &cr)
	if cr.Account.Company != "initech" {
		t.Fatalf("company of new account: %q", cr.Account.Company)
	}

	e.must(409, "PUT", "/api/v1/companies/acme", tokAdmin, map[string]any{"domains": []string{"acme.example"}, "reason": "x"})
	e.must(409, "PUT", "/api/v1/companies/thief", tokAdmin, map[string]any{"domains": []string{"acme.example"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/companies/bad", tokAdmin, map[string]any{"domains": []string{"not a domain"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/companies/bad", tokAdmin, map[string]any{"domains": []string{"b.example"}, "desk_contacts": []string{"not an address"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/companies/Bad%20Id", tokAdmin, map[string]any{"domains": []string{"b.example"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/companies/bad", tokAdmin, map[string]any{"domains": []string{"b.example"}, "lockout": map[string]any{"window": "soon"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/companies/bad", tokAdmin, map[string]any{"id": "other", "domains": []string{"b.example"}, "reason": "x"})
	e.must(400, "PUT", "/api/v1/companies/bad", tokAdmin, map[string]any{"domains": []string{"b.example"}})

	for i := range 5 {
		e.must(201, "PUT", fmt.Sprintf("/api/v1/companies/c%d", i), tokAdmin, map[string]any{"domains": []string{fmt.Sprintf("c%d.example", i)}, "reason": "bulk"})
	}
	var ids []string
	cursor := ""
	for range 10 {
		var cl CompanyList
		e.must(200, "GET", "/api/v1/companies?limit=3&cursor="+cursor, tokViewer, nil).json(t, &cl)
		for _, c := range cl.Companies {
			ids = append(ids, c.ID)
		}
		if cursor = cl.NextCursor; cursor == "" {
			break
		}
	}
	if want := []string{"acme", "c0", "c1", "c2", "c3", "c4", "globex", "initech"}; !slices.Equal(ids, want) {
		t.Fatalf("companies %v, want %v", ids, want)
	}
	var cl CompanyList
	e.must(200, "GET", "/api/v1/companies?domain=ACME-mail.example", tokViewer, nil).json(t, &cl)
	if len(cl.Companies) != 1 || cl.Companies[0].ID != "acme" || cl.Companies[0].Source != "config" {
		t.Fatalf("by domain: %+v", cl.Companies)
	}
	e.must(200, "GET", "/api/v1/companies/globex", tokViewer, nil).json(t, &c)
	if *c.Threshold != 1 {
		t.Fatalf("globex: %+v", c)
	}
	e.must(409, "DELETE", "/api/v1/companies/acme?reason=x", tokAdmin, nil)
	e.must(400, "DELETE", "/api/v1/companies/c0", tokAdmin, nil)
	e.must(200, "DELETE", "/api/v1/companies/c0", tokAdmin, change("churned"))
	e.must(404, "GET", "/api/v1/companies/c0", tokAdmin, nil)
	e.must(404, "DELETE", "/api/v1/companies/c0?reason=x", tokAdmin, nil)
}

func TestBadRequestsAre4xx(t *testing.T) {
	e := newEnv(t)
	p := "/api/v1/accounts/alice@acme.example/suspend"
	big := `{"services":["send"],"reason":"` + strings.Repeat("x", 70<<10) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
		code                     string
	}{
		{"bad json", "POST", p, `{"services":`, 400, "bad_json"},
		{"not json", "POST", p, `hello`, 400, "bad_json"},
		{"array", "POST", p, `[1,2]`, 400, "bad_json"},
		{"wrong type", "POST", p, `{"services":"send","reason":"x"}`, 400, "bad_json"},
		{"unknown field", "POST", p, `{"services":["send"],"reason":"x","force":true}`, 400, "unknown_field"},
		{"trailing data", "POST", p, `{"services":["send"],"reason":"x"} {}`, 400, "bad_json"},
		{"empty body", "POST", p, ``, 400, "bad_json"},
		{"oversized", "POST", p, big, 413, "too_large"},
		{"oversized company", "PUT", "/api/v1/companies/x", big, 413, "too_large"},
		{"null", "POST", p, `null`, 400, "reason_required"},
		{"bad account", "POST", "/api/v1/accounts/not-an-address/suspend", `{"services":["send"],"reason":"x"}`, 400, "bad_account"},
		{"bad account get", "GET", "/api/v1/accounts/a@@b", ``, 400, "bad_account"},
		{"unknown route", "GET", "/api/v1/nope", ``, 404, "no_route"},
		{"wrong method", "PATCH", "/api/v1/accounts/alice@acme.example", ``, 405, "method_not_allowed"},
		{"bad limit", "GET", "/api/v1/accounts/alice@acme.example/history?limit=x", ``, 400, "invalid"},
	} {
		r := e.do(tc.method, tc.path, tokAdmin, tc.body)
		if r.status != tc.want || r.errCode(t) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.status, r.body, tc.want, tc.code)
		}
	}
	// Wrong content type.
	req, _ := http.NewRequest("POST", e.srv.URL+p, strings.NewReader(`{"services":["send"],"reason":"x"}`))
	req.Header.Set("Authorization", "Bearer "+tokAdmin)
	req.Header.Set("Content-Type", "text/plain")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 415 {
		t.Fatalf("text/plain body: %d", res.StatusCode)
	}
	if len(e.published()) != 0 {
		t.Fatal("bad requests changed something")
	}
	// Metrics count by route pattern.
	if n := e.requests("POST /api/v1/accounts/{account}/suspend", "400"); n < 5 {
		t.Fatalf("metric: %v", n)
	}
}

// requests reads aupd_api_requests_total of one route and code.
func (e *env) requests(route, code string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "aupd_api_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestConcurrentAdmins(t *testing.T) {
	e := newEnv(t)
	addr := "busy@acme.example"
	ctx := context.Background()
	var wg sync.WaitGroup
	tokens := []string{tokAdmin, tokAbuse, tokAcmeAbuse}
	// Every service suspended by several admins at once, a lock by all of
	// them, and the AUP worker crossing the threshold meanwhile.
	for i, svc := range rules.Services {
		for j, tok := range tokens {
			wg.Go(func() {
				r := e.do("POST", "/api/v1/accounts/"+addr+"/suspend", tok, map[string]any{"services": []string{string(svc)}, "reason": fmt.Sprint("admin ", i, j)})
				if r.status != 200 && r.status != 409 {
					t.Errorf("suspend %s: %d %s", svc, r.status, r.body)
				}
			})
		}
	}
	for range 5 {
		for _, tok := range tokens {
			wg.Go(func() {
				if r := e.do("POST", "/api/v1/accounts/"+addr+"/lock", tok, change("hacked")); r.status != 200 && r.status != 409 {
					t.Errorf("lock: %d %s", r.status, r.body)
				}
			})
		}
	}
	wg.Go(func() {
		now := e.clock.now()
		var items []store.Item
		for i := range 5 {
			items = append(items, store.Item{ID: fmt.Sprint("w", i), Time: now, Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true})
		}
		res, err := e.store.Ingest(ctx, []store.Batch{{Account: addr, Company: "acme", Threshold: 2, Cap: testCap, Action: rules.ActionSuspend, Items: items}}, store.IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute, Now: now, NewID: func() string { return store.NewID(now) }})
		if err != nil || res[0].Err != nil {
			t.Errorf("ingest: %v %v", err, res[0].Err)
		}
		if _, err := e.store.FlushOutbox(ctx, addr, e.pub); err != nil {
			t.Errorf("flush: %v", err)
		}
	})
	wg.Wait()
	// Whatever lost a race was retried (409 conflict is allowed but must
	// not lose a change): finish what the losers meant, idempotently.
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/suspend", tokAdmin, map[string]any{"services": rules.Services, "reason": "settle"})
	e.must(200, "POST", "/api/v1/accounts/"+addr+"/lock", tokAdmin, change("settle"))
	a := e.account(addr)
	if !slices.Equal(a.Suspended, []string{"send", "receive", "imap", "pop3", "webmail", "webmail_send"}) || a.Status != rules.StatusLocked {
		t.Fatalf("final state %+v", a)
	}
	// One history entry per change: each service suspended once by the
	// admins (the AUP entry names the AUP services whatever was already
	// suspended), locked once.
	byAdmin, inAll := map[string]int{}, map[string]int{}
	locks := 0
	for _, h := range e.historyOf(addr) {
		switch h.Action {
		case "suspend":
			for _, s := range h.Services {
				byAdmin[s]++
				inAll[s]++
			}
		case "suspended":
			for _, s := range h.Services {
				inAll[s]++
			}
		case "status":
			locks++
		}
	}
	for _, svc := range rules.Services {
		if byAdmin[string(svc)] > 1 || inAll[string(svc)] < 1 {
			t.Errorf("%s suspended %d times by admins, %d in all", svc, byAdmin[string(svc)], inAll[string(svc)])
		}
	}
	if locks != 1 {
		t.Errorf("%d lock entries", locks)
	}
	// The events form one chain from the first old state to the last new one.
	evs := e.publishedFor(addr)
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	last := evs[len(evs)-1].New
	if last.Status != "locked" || len(last.Suspended) != len(rules.Services) {
		t.Fatalf("last event state %+v", last)
	}
	if want := len(e.historyOf(addr)); len(evs) != want {
		t.Fatalf("%d events for %d history entries", len(evs), want)
	}
}
