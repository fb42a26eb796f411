package app

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/jobs"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
)

// jobs builds the scheduled jobs: the company refresh (in every process),
// and, once per tick across all processes, the outbox sweep, retention and
// the opt-in daily digest.
func (a *App) jobs(cfg *config.Config, pub store.Publisher, ntf *notifier.Notifier) (*jobs.Runner, error) {
	host, _ := os.Hostname()
	list := []jobs.Job{
		{Name: "companies", Schedule: "@every 10s", Local: true, Run: func(ctx context.Context, _ time.Time) error {
			return a.dir.Refresh(ctx)
		}},
		{Name: "outbox_sweep", Schedule: cfg.Jobs.OutboxSweep, Run: func(ctx context.Context, _ time.Time) error {
			n, err := a.store.SweepOutboxes(ctx, pub)
			if n > 0 {
				a.log.Info("outbox sweep published left-over account events", "events", n)
			}
			return err
		}},
		{Name: "retention", Schedule: cfg.Jobs.Retention, Run: func(ctx context.Context, _ time.Time) error {
			now := a.opts.Now()
			c := a.cfg.Load()
			hist, err := a.store.TrimHistory(ctx, now.Add(-c.Jobs.HistoryRetention))
			if err != nil {
				return err
			}
			failed, err := ntf.Store().TrimFailed(ctx, now.Add(-c.Notifier.Retention))
			if err != nil {
				return err
			}
			ended, err := a.store.ClearEndedLockouts(ctx, pub)
			if err != nil {
				return err
			}
			a.log.Info("retention", "history_entries_removed", hist, "failed_notices_unindexed", failed, "ended_lockouts_cleared", ended)
			return nil
		}},
	}
	if cfg.Jobs.Digest.Enabled {
		list = append(list, jobs.Job{Name: "digest", Schedule: cfg.Jobs.Digest.Schedule, Run: jobs.Digest(jobs.DigestOptions{
			Store: a.store, Companies: a.dir.All, CompanyOf: a.dir.ByAccount, Sender: ntf,
			JetStream: a.js, AccountStream: cfg.NATS.Accounts.Name,
			Near: a.nearThreshold(),
			Threshold: func(c companies.Company) int {
				if c.Threshold != nil {
					return *c.Threshold
				}
				return a.cfg.Load().AUP.Threshold
			},
			Window: cfg.AUP.Window, Cap: cfg.AUP.MaxTracked, DeskURL: a.deskURL(),
			Max: cfg.Jobs.Digest.MaxAccounts, Logger: a.log, Now: a.opts.Now,
		})})
	}
	r, err := jobs.New(jobs.Options{
		Redis: a.rdb, Prefix: cfg.Redis.Prefix, Owner: fmt.Sprintf("%s-%d", host, os.Getpid()),
		Timeout: cfg.Jobs.Timeout, Logger: a.log, Registerer: a.reg, Now: a.opts.Now,
	}, list)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	return r, nil
}

// nearThreshold is the digest's near-threshold hint list.
func (a *App) nearThreshold() func(ctx context.Context, limit int) ([]string, error) {
	return a.store.NearThreshold
}

// deskURL is the abuse desk's public URL, linked from digests; "" when no
// desk is configured.
func (a *App) deskURL() string { return a.cfg.Load().Desk.PublicURL }
