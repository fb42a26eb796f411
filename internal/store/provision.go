package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// fieldProvisioned marks a mailbox the provider provisioned (Provision):
// one of its licences, whatever its state.
const fieldProvisioned = "prov"

// Licensed reports whether the account counts as a licence at now: a
// mailbox the provider provisioned, or any account that holds state (a
// status other than active, or a suspended service), such as an address
// aupd suspended automatically without it ever being provisioned.
// Addresses that only appeared in verdicts or failed logins are not
// licences.
func (a *Account) Licensed(now time.Time) bool {
	if !a.Exists {
		return false
	}
	return a.Provisioned || a.HoldsState(now)
}

// HoldsState reports whether the account has a status other than active
// at now, or a suspended service.
func (a *Account) HoldsState(now time.Time) bool {
	return a.View().EffectiveStatus(now) != rules.StatusActive || len(a.Suspensions) > 0
}

// ProvisionResult says what Provision did.
type ProvisionResult string

// The results of Provision.
const (
	ProvisionCreated   ProvisionResult = "created"   // no record, or not provisioned before
	ProvisionUpdated   ProvisionResult = "updated"   // provisioned; type or company changed
	ProvisionUnchanged ProvisionResult = "unchanged" // provisioned as it was
)

// Provision records a mailbox (or forward) the provider provisioned, with
// its type (empty: as it is, mailbox for a new one) and company (empty: as
// it is). It is idempotent: provisioning an account again as it is changes
// nothing and writes no history. An account that held state before keeps
// it.
func (s *Store) Provision(ctx context.Context, address string, typ rules.AccountType, company string, by Actor) (ProvisionResult, *Op, error) {
	if typ != "" && !typ.Valid() {
		return "", nil, fmt.Errorf("%w: unknown account type %q", ErrInvalid, typ)
	}
	var result ProvisionResult
	op, err := s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		ch := &Change{Set: map[string]string{}}
		after := a.clone()
		result = ProvisionUpdated
		if !a.Exists || !a.Provisioned {
			result = ProvisionCreated
			ch.Set[fieldProvisioned] = "1"
			after.Provisioned = true
		}
		if typ != "" && (typ != a.Type || !a.Exists) {
			if typ == rules.TypeForward && len(a.Suspensions) > 0 {
				if _, onlyReceive := a.Suspensions[rules.ServiceReceive]; !onlyReceive || len(a.Suspensions) > 1 {
					return nil, ErrForwardAccess
				}
			}
			ch.Set["type"] = string(typ)
			after.Type = typ
		} else if !a.Exists {
			ch.Set["type"] = string(rules.TypeMailbox)
		}
		if company != "" && company != a.Company {
			ch.Set["company"] = company
			after.Company = company
		}
		if len(ch.Set) == 0 {
			result = ProvisionUnchanged
			return nil, nil
		}
		action := "provision"
		if result == ProvisionUpdated {
			action = "update"
		}
		ch.History = []HistoryEntry{{Time: now, Actor: by.Name, Action: action, Reason: by.Reason, Note: by.Note}}
		ev := s.event(a, events.TypeUpdated, by, now, after)
		ev.Company = after.Company
		ch.Events = []events.AccountEvent{ev}
		return ch, nil
	})
	if err != nil {
		return "", nil, err
	}
	return result, op, nil
}
