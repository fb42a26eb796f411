package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aupd/aupd/rules"
)

func TestProvisionIsIdempotent(t *testing.T) {
	s, _ := liveStore(t)
	ctx := context.Background()
	by := Actor{Name: "sync", Reason: rules.ReasonAdmin, Note: "directory"}
	res, op, err := s.Provision(ctx, "ann@acme.example", "", "acme", by)
	if err != nil || res != ProvisionCreated || !op.Changed {
		t.Fatalf("first: %s %+v %v", res, op, err)
	}
	if res, op, err = s.Provision(ctx, "ann@acme.example", "", "acme", by); err != nil || res != ProvisionUnchanged || op.Changed {
		t.Fatalf("again: %s %+v %v", res, op, err)
	}
	if res, _, err = s.Provision(ctx, "ann@acme.example", rules.TypeForward, "", by); err != nil || res != ProvisionUpdated {
		t.Fatalf("type change: %s %v", res, err)
	}
	a, _ := s.Account(ctx, "ann@acme.example")
	if !a.Provisioned || a.Type != rules.TypeForward || a.Company != "acme" || !a.Licensed(time.Now()) {
		t.Errorf("account %+v", a)
	}
	hist, _ := s.History(ctx, "ann@acme.example", 0, 10)
	if len(hist) != 2 || hist[0].Action != "update" || hist[1].Action != "provision" {
		t.Errorf("history %+v", hist)
	}
	// A forward cannot keep a sending suspension.
	if _, err := s.Suspend(ctx, "bob@acme.example", []rules.Service{rules.ServiceSend}, by); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Provision(ctx, "bob@acme.example", rules.TypeForward, "acme", by); !errors.Is(err, ErrForwardAccess) {
		t.Errorf("forward with send suspended: %v", err)
	}
}

// TestAutoSuspendedAddressIsALicence: an address never provisioned that
// the AUP rule suspends gets a record with its company and counts while it
// holds the suspension; one that only appeared in a verdict does not.
func TestAutoSuspendedAddressIsALicence(t *testing.T) {
	s, _ := liveStore(t)
	ctx := context.Background()
	now := time.Now()
	spamAt := func(id string) Item {
		return Item{ID: id, Time: now.Add(-time.Minute), Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true}
	}
	batches := []Batch{
		{Account: "spammer@acme.example", Company: "acme", Threshold: 1, Cap: 2, Action: rules.ActionSuspend, Items: []Item{spamAt("a"), spamAt("b")}},
		{Account: "once@acme.example", Company: "acme", Threshold: 1, Cap: 2, Action: rules.ActionSuspend, Items: []Item{spamAt("c")}},
	}
	if _, err := s.Ingest(ctx, batches, IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute, NewID: func() string { return NewID(now) }}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FlushOutbox(ctx, "spammer@acme.example", nopPublisher{}); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Account(ctx, "spammer@acme.example")
	if !a.Exists || a.Company != "acme" || a.Provisioned || len(a.Suspensions) == 0 {
		t.Fatalf("auto-suspended: %+v", a)
	}
	if o, _ := s.Account(ctx, "once@acme.example"); o.Licensed(now) {
		t.Errorf("a verdict-only address is a licence: %+v", o)
	}
	l, err := s.CountLicences(ctx, "acme", now)
	if err != nil {
		t.Fatal(err)
	}
	if l.Total != 1 || l.Unprovisioned != 1 || l.Provisioned != 0 || l.ByService[rules.ServiceSend] != 1 {
		t.Errorf("licences %+v", l)
	}
	page, err := s.List(ctx, ListQuery{Company: "acme", Limit: 10, Now: now})
	if err != nil || len(page.Accounts) != 1 || page.Accounts[0].Address != "spammer@acme.example" {
		t.Errorf("listing: %+v %v", page, err)
	}
}
