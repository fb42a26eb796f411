package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Actor says who makes a change and why. Reason is a code (admin,
// abuse_contact, aup_violation, failed_logins, ...); Note is free text.
// Scope is the company the actor is limited to ("" for the provider): a
// suspension records it, and Reinstate lets a scoped actor lift only what
// it may (MayLift). Via is the door it came through (ViaToken, ViaDesk,
// ViaLink; "" for aupd itself), recorded in the history.
type Actor struct {
	Name   string
	Reason string
	Note   string
	Scope  string
	Via    string
}

// Errors of account operations; the admin API maps them to 4xx answers.
var (
	ErrSuspended     = errors.New("the account has suspended services; reinstate them before deleting it")
	ErrNotFound      = errors.New("no such account")
	ErrInvalid       = errors.New("invalid request")
	ErrForwardAccess = errors.New("a forward account can only have receive suspended")
)

// Op is the result of an operation: what it changed, if anything.
type Op struct {
	Before  *Account
	Changed bool
	Events  []events.AccountEvent
}

func (s *Store) op(ctx context.Context, address string, fn func(a *Account, now time.Time) (*Change, error)) (*Op, error) {
	before, ch, err := s.Update(ctx, address, func(a *Account) (*Change, error) { return fn(a, s.now().UTC()) })
	if err != nil {
		return nil, err
	}
	op := &Op{Before: before, Changed: ch != nil}
	if ch != nil {
		op.Events = ch.Events
	}
	return op, nil
}

func (s *Store) event(a *Account, typ string, by Actor, now time.Time, after *Account) events.AccountEvent {
	return events.AccountEvent{
		ID: NewID(now), Type: typ, Time: now, Account: a.Address, Company: a.Company,
		Actor: by.Name, Reason: by.Reason, Note: by.Note, Old: a.state(), New: after.state(),
	}
}

func suspensionJSON(sus Suspension) string {
	b, _ := json.Marshal(sus)
	return string(b)
}

// Suspend suspends services. Services already suspended keep their record;
// suspending nothing new changes nothing and writes no history.
func (s *Store) Suspend(ctx context.Context, address string, services []rules.Service, by Actor) (*Op, error) {
	return s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		after := a.clone()
		ch := &Change{Set: map[string]string{}}
		var added []string
		id := NewID(now)
		for _, svc := range services {
			if !svc.Valid() {
				return nil, fmt.Errorf("%w: unknown service %q", ErrInvalid, svc)
			}
			if a.Type == rules.TypeForward && svc != rules.ServiceReceive {
				return nil, ErrForwardAccess
			}
			if _, ok := a.Suspensions[svc]; ok {
				continue
			}
			sus := Suspension{ID: id, Reason: by.Reason, Actor: by.Name, Note: by.Note, At: now, Scope: by.Scope}
			after.Suspensions[svc] = sus
			ch.Set["sus:"+string(svc)] = suspensionJSON(sus)
			added = append(added, string(svc))
		}
		if len(added) == 0 {
			return nil, nil
		}
		ch.History = []HistoryEntry{{Time: now, Actor: by.Name, Action: "suspend", Reason: by.Reason, Services: added, ID: id, Note: by.Note, Via: by.Via}}
		ch.Events = []events.AccountEvent{s.event(a, events.TypeSuspended, by, now, after)}
		return ch, nil
	})
}

// Reinstate lifts suspensions; no services means all of them. Lifting a
// service of the AUP suspension in force lifts the whole AUP suspension
// (send and webmail_send) and resets the AUP window: messages counted
// before now no longer count toward the next suspension. An actor with a
// company scope may lift only what MayLift allows; anything else refuses
// the whole change with a *LiftError.
func (s *Store) Reinstate(ctx context.Context, address string, services []rules.Service, by Actor) (*Op, error) {
	return s.ReinstateIf(ctx, address, services, by, nil)
}

// ReinstateIf is Reinstate with a guard asked atomically with the change
// (inside the compare-and-set), on the account as it is then: an error
// refuses the change and is returned. The abuse desk's signed link uses
// it to lift only the suspension it is bound to.
func (s *Store) ReinstateIf(ctx context.Context, address string, services []rules.Service, by Actor, guard func(a *Account) error) (*Op, error) {
	return s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		if guard != nil {
			if err := guard(a); err != nil {
				return nil, err
			}
		}
		if len(services) == 0 {
			services = rules.Services
		}
		lift := map[rules.Service]bool{}
		for _, svc := range services {
			if !svc.Valid() {
				return nil, fmt.Errorf("%w: unknown service %q", ErrInvalid, svc)
			}
			sus, ok := a.Suspensions[svc]
			if !ok {
				continue
			}
			lift[svc] = true
			if a.AUP != "" && sus.ID == a.AUP {
				for other, o := range a.Suspensions {
					if o.ID == a.AUP {
						lift[other] = true
					}
				}
			}
		}
		if len(lift) == 0 {
			return nil, nil
		}
		for _, svc := range rules.Services {
			if sus := a.Suspensions[svc]; lift[svc] && !MayLift(by.Scope, a, sus) {
				return nil, &LiftError{Service: svc, Suspension: sus}
			}
		}
		after := a.clone()
		ch := &Change{}
		var lifted []string
		for _, svc := range rules.Services {
			if lift[svc] {
				delete(after.Suspensions, svc)
				ch.Del = append(ch.Del, "sus:"+string(svc))
				lifted = append(lifted, string(svc))
			}
		}
		if a.AUP != "" && !slices.ContainsFunc(rules.Services, func(svc rules.Service) bool {
			sus, ok := after.Suspensions[svc]
			return ok && sus.ID == a.AUP
		}) {
			ch.ResetWindow = true
		}
		ch.History = []HistoryEntry{{Time: now, Actor: by.Name, Action: "reinstate", Reason: by.Reason, Services: lifted, Note: by.Note, Via: by.Via}}
		ch.Events = []events.AccountEvent{s.event(a, events.TypeReinstated, by, now, after)}
		return ch, nil
	})
}

// SetStatus sets the account's status. until is the end of a lockout and
// is ignored for other statuses. Setting the status it already has changes
// nothing (a lockout's end is updated, though).
func (s *Store) SetStatus(ctx context.Context, address string, status rules.Status, until time.Time, by Actor) (*Op, error) {
	return s.SetStatusIf(ctx, address, status, until, by, nil)
}

// SetAccount creates an account or changes its type and company. Empty
// values leave a field as it is.
func (s *Store) SetAccount(ctx context.Context, address string, typ rules.AccountType, company string, by Actor) (*Op, error) {
	if typ != "" && !typ.Valid() {
		return nil, fmt.Errorf("%w: unknown account type %q", ErrInvalid, typ)
	}
	return s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		ch := &Change{Set: map[string]string{}}
		if typ != "" && (typ != a.Type || !a.Exists) {
			if typ == rules.TypeForward && slices.ContainsFunc(a.Suspended(), func(s string) bool { return s != string(rules.ServiceReceive) }) {
				return nil, ErrForwardAccess
			}
			ch.Set["type"] = string(typ)
		}
		if company != "" && company != a.Company {
			ch.Set["company"] = company
		}
		if len(ch.Set) == 0 && a.Exists {
			return nil, nil
		}
		after := a.clone()
		if typ != "" {
			after.Type = typ
		}
		if company != "" {
			after.Company = company
		}
		ch.History = []HistoryEntry{{Time: now, Actor: by.Name, Action: "update", Reason: by.Reason, Note: by.Note, Via: by.Via}}
		ev := s.event(a, events.TypeUpdated, by, now, after)
		ev.Company = after.Company
		ch.Events = []events.AccountEvent{ev}
		return ch, nil
	})
}

// Delete removes an account. It is refused while any service is suspended.
func (s *Store) Delete(ctx context.Context, address string, by Actor) (*Op, error) {
	return s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		if !a.Exists {
			return nil, ErrNotFound
		}
		if len(a.Suspensions) > 0 {
			return nil, ErrSuspended
		}
		ev := s.event(a, events.TypeDeleted, by, now, a)
		ev.New = nil
		return &Change{
			Delete:  true,
			History: []HistoryEntry{{Time: now, Actor: by.Name, Action: "delete", Reason: by.Reason, Note: by.Note, Via: by.Via}},
			Events:  []events.AccountEvent{ev},
		}, nil
	})
}

// MaxNote is the longest case note, in characters.
const MaxNote = 1000

// AddNote adds a case note to an account's history: an entry with action
// "note", the author (by.Name), the door (by.Via) and the text (by.Note),
// which it returns. It changes no state and publishes no event. An
// address aupd holds no record of gets no note and no record:
// ErrNotFound.
func (s *Store) AddNote(ctx context.Context, address string, by Actor) (HistoryEntry, error) {
	var e HistoryEntry
	_, err := s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		if !a.Exists {
			return nil, ErrNotFound
		}
		e = HistoryEntry{Time: now, Actor: by.Name, Action: "note", Reason: by.Reason, Note: by.Note, Via: by.Via}
		return &Change{History: []HistoryEntry{e}}, nil
	})
	if err != nil {
		return HistoryEntry{}, err
	}
	return e, nil
}

// CheckNote returns a case note's text as stored: trimmed, line ends as
// "\n". It refuses an empty note, one longer than MaxNote characters and
// one with control characters other than newlines and tabs (a note is
// plain text; every page shows it escaped).
func CheckNote(text string) (string, error) {
	text = strings.TrimSpace(strings.ReplaceAll(text, "\r\n", "\n"))
	switch {
	case text == "":
		return "", fmt.Errorf("%w: the note is empty", ErrInvalid)
	case !utf8.ValidString(text):
		return "", fmt.Errorf("%w: the note is not UTF-8", ErrInvalid)
	case utf8.RuneCountInString(text) > MaxNote:
		return "", fmt.Errorf("%w: the note is longer than %d characters", ErrInvalid, MaxNote)
	}
	for _, r := range text {
		if r != '\n' && r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029') {
			return "", fmt.Errorf("%w: the note has a control character (%U); write plain text", ErrInvalid, r)
		}
	}
	return text, nil
}
