package store

import (
	"errors"
	"slices"
	"testing"

	"github.com/aupd/aupd/rules"
)

// TestWhoMayLift: a company-scoped actor lifts its own company's
// suspensions, not the provider's; a refusal changes nothing; the
// history records the door; ReinstateIf's guard refuses atomically.
func TestWhoMayLift(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	addr := "lift@example.com"
	provider := Actor{Name: "root", Reason: rules.ReasonAdmin, Note: "provider hold", Via: ViaToken}
	acme := Actor{Name: "acme-abuse", Reason: "abuse_contact", Note: "acme", Scope: "acme", Via: ViaDesk}
	if _, err := s.Suspend(ctx, addr, []rules.Service{rules.ServiceReceive}, provider); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Suspend(ctx, addr, []rules.Service{rules.ServiceIMAP}, acme); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Account(ctx, addr)
	if a.Suspensions[rules.ServiceIMAP].Scope != "acme" || a.Suspensions[rules.ServiceReceive].Scope != "" {
		t.Fatalf("scopes %+v", a.Suspensions)
	}
	for _, svcs := range [][]rules.Service{{rules.ServiceReceive}, nil, {rules.ServiceIMAP, rules.ServiceReceive}} {
		_, err := s.Reinstate(ctx, addr, svcs, acme)
		var le *LiftError
		if !errors.As(err, &le) || !errors.Is(err, ErrProviderSuspension) || le.Service != rules.ServiceReceive {
			t.Errorf("acme lifts %v: %v", svcs, err)
		}
	}
	if a, _ := s.Account(ctx, addr); !slices.Equal(a.Suspended(), []string{"receive", "imap"}) {
		t.Fatalf("refusals changed the account: %v", a.Suspended())
	}
	other := Actor{Name: "globex", Reason: "abuse_contact", Note: "x", Scope: "globex", Via: ViaToken}
	if _, err := s.Reinstate(ctx, addr, []rules.Service{rules.ServiceIMAP}, other); !errors.Is(err, ErrProviderSuspension) {
		t.Errorf("another company lifts acme's: %v", err)
	}
	guard := errors.New("no")
	if _, err := s.ReinstateIf(ctx, addr, []rules.Service{rules.ServiceIMAP}, acme, func(*Account) error { return guard }); !errors.Is(err, guard) {
		t.Errorf("guard: %v", err)
	}
	op, err := s.Reinstate(ctx, addr, []rules.Service{rules.ServiceIMAP}, acme)
	if err != nil || !op.Changed {
		t.Fatalf("acme lifts its own: %v %+v", err, op)
	}
	if op, err = s.Reinstate(ctx, addr, nil, provider); err != nil || !op.Changed {
		t.Fatalf("provider lifts: %v", err)
	}
	h, _ := s.History(ctx, addr, 0, 2)
	if h[0].Via != ViaToken || h[0].Actor != "root" || h[1].Via != ViaDesk || h[1].Reason != "abuse_contact" {
		t.Errorf("history %+v", h)
	}
}
