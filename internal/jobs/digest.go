package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

// DigestSender sends one digest (the notifier).
type DigestSender interface {
	SendDigest(ctx context.Context, d notifier.Digest) error
}

// DigestOptions are what the digest job needs.
type DigestOptions struct {
	Store     *store.Store
	Companies func() []companies.Company
	// CompanyOf finds an account's company by its domain (accounts near
	// their threshold may have no record of their own yet).
	CompanyOf func(account string) (*companies.Company, bool)
	Sender    DigestSender
	// JetStream and AccountStream give the reinstatements of the day
	// (the account events of type reinstated).
	JetStream     jetstream.JetStream
	AccountStream string
	// Near lists accounts whose count is at least half their threshold
	// (a hint list, newest first); nil leaves that list out.
	Near func(ctx context.Context, limit int) ([]string, error)
	// Threshold is the AUP threshold of a company's accounts.
	Threshold func(c companies.Company) int
	Window    time.Duration
	Cap       int
	// DeskURL, when set, is linked from every digest.
	DeskURL string
	Max     int
	Logger  *slog.Logger
	Now     func() time.Time
}

// Digest returns the job that sends each company with an abuse contact
// its daily digest. Companies with nothing to report get none.
func Digest(o DigestOptions) func(ctx context.Context, tick time.Time) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Max <= 0 {
		o.Max = 200
	}
	return func(ctx context.Context, _ time.Time) error {
		now := o.Now()
		reinstated, cutR, err := o.reinstated(ctx, now.Add(-24*time.Hour))
		if err != nil {
			return err
		}
		near, nearErr := o.near(ctx, now)
		if nearErr != nil {
			o.Logger.Warn("digest: near-threshold list", "err", nearErr)
		}
		var errs []error
		sent := 0
		for _, c := range o.Companies() {
			if c.AbuseContact == "" {
				continue
			}
			d := notifier.Digest{
				CompanyID: c.ID, Company: notifier.Company{Name: c.Name, AbuseContact: c.AbuseContact},
				Day: now.UTC(), DeskURL: o.DeskURL, NearUnavailable: o.Near == nil || nearErr != nil,
				Reinstated: reinstated[c.ID], Near: near[c.ID], Cut: cutR,
			}
			d.Suspended, d.Cut, err = o.suspended(ctx, c.ID, now)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			d.Cut = d.Cut || cutR || len(d.Near) > o.Max
			if len(d.Near) > o.Max {
				d.Near = d.Near[:o.Max]
			}
			if len(d.Reinstated) > o.Max {
				d.Reinstated, d.Cut = d.Reinstated[:o.Max], true
			}
			if d.Empty() {
				continue
			}
			if err := o.Sender.SendDigest(ctx, d); err != nil {
				errs = append(errs, err)
				continue
			}
			sent++
		}
		o.Logger.Info("digests sent", "companies", sent)
		return errors.Join(errs...)
	}
}

// suspended lists a company's accounts with a suspended service.
func (o DigestOptions) suspended(ctx context.Context, company string, now time.Time) ([]notifier.DigestAccount, bool, error) {
	page, err := o.Store.List(ctx, store.ListQuery{Company: company, Suspended: true, Limit: min(o.Max+1, store.MaxListLimit), Now: now})
	if err != nil {
		return nil, false, fmt.Errorf("digest for %s: %w", company, err)
	}
	var out []notifier.DigestAccount
	for _, a := range page.Accounts {
		line := notifier.DigestAccount{Account: a.Address, Services: a.Suspended()}
		for _, svc := range rules.Services {
			if sus, ok := a.Suspensions[svc]; ok {
				if line.At.IsZero() || sus.At.Before(line.At) {
					line.At, line.Reason, line.Actor = sus.At, sus.Reason, sus.Actor
				}
			}
		}
		out = append(out, line)
	}
	cut := len(out) > o.Max || page.Next != ""
	if len(out) > o.Max {
		out = out[:o.Max]
	}
	return out, cut, nil
}

// near groups the near-threshold hint list by company, re-reading each
// account's count.
func (o DigestOptions) near(ctx context.Context, now time.Time) (map[string][]notifier.DigestAccount, error) {
	out := map[string][]notifier.DigestAccount{}
	if o.Near == nil {
		return out, nil
	}
	list, err := o.Near(ctx, 10*o.Max)
	if err != nil {
		return out, err
	}
	for _, addr := range list {
		c, ok := o.CompanyOf(addr)
		if !ok || c == nil {
			continue
		}
		a, err := o.Store.Account(ctx, addr)
		if err != nil {
			return out, err
		}
		if len(a.Suspensions) > 0 {
			continue
		}
		cnt, err := o.Store.Counts(ctx, addr, store.CountQuery{Window: o.Window, Cap: o.Cap, Floor: a.Floor, Now: now})
		if err != nil {
			return out, err
		}
		th := o.Threshold(*c)
		if th <= 0 || cnt.Counting.Total*2 < th {
			continue
		}
		out[c.ID] = append(out[c.ID], notifier.DigestAccount{Account: addr, Count: cnt.Counting.Total, Threshold: th})
	}
	return out, nil
}

// reinstated reads the reinstatements since a time from the account
// stream, by company. It reads at most 100 times Max events.
func (o DigestOptions) reinstated(ctx context.Context, since time.Time) (map[string][]notifier.DigestAccount, bool, error) {
	out := map[string][]notifier.DigestAccount{}
	if o.JetStream == nil {
		return out, false, nil
	}
	cons, err := o.JetStream.OrderedConsumer(ctx, o.AccountStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AccountSubjectPrefix + events.TypeReinstated},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return nil, false, fmt.Errorf("digest: read reinstatements: %w", err)
	}
	limit := 100 * o.Max
	read := 0
	for read < limit {
		batch, err := cons.FetchNoWait(min(500, limit-read))
		if err != nil {
			return nil, false, fmt.Errorf("digest: read reinstatements: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev events.AccountEvent
			if json.Unmarshal(m.Data(), &ev) != nil || ev.Company == "" {
				continue
			}
			var services []string
			if ev.Old != nil && ev.New != nil {
				for _, s := range ev.Old.Suspended {
					if !slices.Contains(ev.New.Suspended, s) {
						services = append(services, s)
					}
				}
			}
			out[ev.Company] = append(out[ev.Company], notifier.DigestAccount{Account: ev.Account, Services: services, Reason: ev.Reason, Actor: ev.Actor, Note: ev.Note, At: ev.Time})
		}
		read += n
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) {
			return nil, false, fmt.Errorf("digest: read reinstatements: %w", batch.Error())
		}
		if n == 0 {
			break
		}
	}
	return out, read >= limit, nil
}
