package app

import (
	"context"
	"errors"
	"time"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

// accounts answers the enforcement servers from the store and the
// company directory.
type accounts struct {
	store *store.Store
	dir   *companies.Directory
	pub   store.Publisher
}

// Lookup implements dovecot.Accounts. aupd governs
// an address whose domain belongs to a company, and any address it holds
// a record of, whatever its domain: a suspension aupd made for an account
// outside every company (notified to the fallback contact) is enforced
// like any other.
func (a accounts) Lookup(ctx context.Context, account string) (rules.AccountView, bool, error) {
	_, local := a.dir.ByAccount(account)
	acct, err := a.store.Account(ctx, account)
	if err != nil {
		return rules.AccountView{}, local, err
	}
	return acct.View(), local || acct.Exists, nil
}

// LookupAll implements postfix.Accounts: the states in one round trip.
func (a accounts) LookupAll(ctx context.Context, names ...string) ([]postfix.Account, error) {
	as, err := a.store.Accounts(ctx, names...)
	if err != nil {
		return nil, err
	}
	out := make([]postfix.Account, len(as))
	for i, acct := range as {
		_, local := a.dir.ByAccount(acct.Address)
		out[i] = postfix.Account{View: acct.View(), Governed: local || acct.Exists, Version: acct.Version, Throttled: acct.Throttled}
	}
	return out, nil
}

// Lockout implements lockout.Locker: the status change of a known account
// is recorded with its reason and published like any other, and the
// account gets its company from its domain; an address aupd has no record
// of is locked out transiently, without creating an account
// (store.Lockout).
func (a accounts) Lockout(ctx context.Context, account string, until time.Time, note string) error {
	company := ""
	if c, ok := a.dir.ByAccount(account); ok {
		company = c.ID
	}
	res, err := a.store.Lockout(ctx, account, company, until, store.Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: note})
	if err != nil {
		return err
	}
	if res.Op != nil && res.Op.Changed {
		// A failed publish stays in the outbox for the sweeper.
		_, _ = a.store.FlushOutbox(ctx, account, a.pub)
	}
	return nil
}

// LockoutPolicy implements lockout.Policies from the company's overrides.
func (a accounts) LockoutPolicy(_ context.Context, account string) (lockout.Policy, error) {
	c, ok := a.dir.ByAccount(account)
	if !ok || c.Lockout == nil {
		return lockout.Policy{}, nil
	}
	return lockout.Policy{Threshold: c.Lockout.MaxFailures, Window: c.Lockout.Window, Duration: c.Lockout.Duration}, nil
}

// logins records the logins of Dovecot's reports (dovecot.Logins) in the
// accounts' recent logins. A verified login may start an account's record
// when its domain belongs to a company; any other login is added only to
// an account that has a record already (store.RecordLogin), so that
// guesses at names that are not mailboxes create nothing.
type logins struct {
	store *store.Store
	dir   *companies.Directory
	lim   store.LoginLimits
}

func (l logins) RecordLogin(ctx context.Context, account string, in dovecot.Login) (bool, error) {
	_, local := l.dir.ByAccount(account)
	r := store.LoginReport{Time: in.Time, Result: in.Result, Protocol: in.Protocol, IP: in.Remote}
	return l.store.RecordLogin(ctx, account, r, local, l.lim)
}

// notices adapts the notifier's store to the admin API.
type notices struct{ s *notifier.Store }

func (n notices) NoticeState(ctx context.Context, account, id string) (any, bool, error) {
	d, err := n.s.Delivery(ctx, account, id)
	if errors.Is(err, notifier.ErrNotFound) {
		return nil, false, nil
	}
	return d, err == nil, err
}

func (n notices) Evidence(ctx context.Context, account, id string) ([]byte, bool, error) {
	b, err := n.s.Evidence(ctx, account, id)
	if errors.Is(err, notifier.ErrNotFound) {
		return nil, false, nil
	}
	return b, err == nil, err
}

// directory adapts the company directory to the notifier.
func directory(dir *companies.Directory) notifier.Directory {
	return notifier.DirectoryFunc(func(id string) (notifier.Company, bool) {
		c, ok := dir.ByID(id)
		if !ok {
			return notifier.Company{}, false
		}
		return notifier.Company{Name: c.Name, AbuseContact: c.AbuseContact}, true
	})
}
