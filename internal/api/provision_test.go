package api

import (
	"context"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

func TestProvisionAndLicences(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	body := func(items ...map[string]any) map[string]any {
		return map[string]any{"accounts": items, "reason": "directory sync"}
	}
	item := func(addr string, kv ...string) map[string]any {
		m := map[string]any{"address": addr}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	var res ProvisionResponse
	e.must(200, "POST", "/api/v1/provision", tokAdmin, body(
		item("Ann@Acme.Example"), item("bob@acme.example", "type", "forward"),
		item("cat@acme.example"), item("not an address"), item("dan@acme.example", "company", "nope"),
	)).json(t, &res)
	if res.Created != 3 || res.Failed != 2 || res.Updated != 0 || res.Unchanged != 0 || len(res.Results) != 5 {
		t.Fatalf("first import: %+v", res)
	}
	if r := res.Results[0]; r.Address != "ann@acme.example" || r.Result != "created" {
		t.Errorf("result 0: %+v", r)
	}
	if r := res.Results[3]; r.Result != "error" || r.Error == "" {
		t.Errorf("bad address: %+v", r)
	}
	ann, err := e.store.Account(ctx, "ann@acme.example")
	if err != nil || !ann.Provisioned || ann.Company != "acme" || ann.Type != rules.TypeMailbox {
		t.Fatalf("ann: %+v %v", ann, err)
	}

	// Again: idempotent; one change is reported as an update.
	e.must(200, "POST", "/api/v1/provision", tokAdmin, body(
		item("ann@acme.example"), item("bob@acme.example", "type", "mailbox"), item("cat@acme.example"),
	)).json(t, &res)
	if res.Created != 0 || res.Updated != 1 || res.Unchanged != 2 || res.Failed != 0 {
		t.Fatalf("second import: %+v", res)
	}
	hist, _ := e.store.History(ctx, "ann@acme.example", 0, 10)
	if len(hist) != 1 {
		t.Errorf("an unchanged import wrote history: %+v", hist)
	}

	// A company's token provisions only its own domains.
	e.must(200, "POST", "/api/v1/provision", tokAcmeAdmin, body(item("x@globex.example"), item("eve@acme.example"))).json(t, &res)
	if res.Failed != 1 || res.Created != 1 || res.Results[0].Error != "no such account in the token's company" {
		t.Fatalf("scoped import: %+v", res)
	}
	e.must(403, "POST", "/api/v1/provision", tokAbuse, body(item("y@acme.example")))
	e.must(400, "POST", "/api/v1/provision", tokAdmin, body())

	// Licences: the four provisioned mailboxes, plus an account that
	// holds state without being provisioned; not an address that only
	// appeared in verdicts.
	e.must(200, "POST", "/api/v1/accounts/held@acme.example/suspend", tokAdmin, map[string]any{"services": []string{"send"}, "reason": "spam"})
	b := store.Batch{Account: "verdicts-only@acme.example", Company: "acme", Threshold: 100, Cap: 101, Action: rules.ActionSuspend,
		Items: []store.Item{{ID: "v1", Time: e.clock.now().Add(-time.Minute), Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true}}}
	if _, err := e.store.Ingest(ctx, []store.Batch{b}, store.IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute,
		Now: e.clock.now(), NewID: func() string { return store.NewID(e.clock.now()) }}); err != nil {
		t.Fatal(err)
	}
	if a, err := e.store.Account(ctx, "verdicts-only@acme.example"); err != nil || a.Licensed(e.clock.now()) {
		t.Errorf("a verdict-only address is a licence: %+v %v", a, err)
	}
	var lic store.Licences
	e.must(200, "GET", "/api/v1/companies/acme/licences", tokViewer, nil).json(t, &lic)
	if lic.Total != 5 || lic.Provisioned != 4 || lic.Unprovisioned != 1 || lic.Suspended != 1 {
		t.Errorf("licences %+v; want the 4 provisioned mailboxes and the suspended one", lic)
	}
	var acct Account
	e.must(200, "GET", "/api/v1/accounts/held@acme.example", tokViewer, nil).json(t, &acct)
	if acct.Provisioned || !acct.Licensed {
		t.Errorf("held: %+v", acct)
	}
	// Reinstated, it no longer holds state and is not a licence.
	e.must(200, "POST", "/api/v1/accounts/held@acme.example/reinstate", tokAdmin, map[string]any{"reason": "ok"})
	e.must(200, "GET", "/api/v1/companies/acme/licences", tokViewer, nil).json(t, &lic)
	if lic.Total != 4 {
		t.Errorf("licences after reinstatement %+v", lic)
	}
}
