package app

import (
	"context"
	"net/http"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
)

// mountDesk serves the abuse desk under /desk/ when it is enabled; its
// sign-in links go out through the notifier's transport. The run group
// runs a.desk.Run.
func (a *App) mountDesk(mux *http.ServeMux, cfg *config.Config, pub store.Publisher, ntf *notifier.Notifier) error {
	if !cfg.Desk.Enabled {
		return nil
	}
	d, err := desk.New(desk.Options{
		Config: cfg.Desk, Store: a.store, Companies: a.dir, Publisher: pub, Notices: ntf.Store(),
		Trends: a.store, Tokens: a.tokens, Redis: a.rdb, Prefix: cfg.Redis.Prefix, Threshold: a.threshold,
		Window: cfg.AUP.Window, CapOf: a.capOf, Logger: a.log, Metrics: a.reg, Now: a.opts.Now,
		Clients: a.clients, Mailer: ntf, Limit: a.tokens.FailureLimit(),
	})
	if err != nil {
		return err
	}
	for _, n := range cfg.Desk.Notes() {
		a.log.Info(n)
	}
	a.desk = d
	mux.Handle("/desk/", d)
	return nil
}

// recordTokens ends the desk sessions of the tokens removed or changed
// since the last start or reload of any aupd on this Redis
// (desk.RecordTokens). A Redis that refuses the write stops neither the
// start nor the reload (a revoked token must leave at once): those
// sessions still end at the reload, only a token that comes back later
// could find its old sessions again, which the log says.
func (a *App) recordTokens(ctx context.Context, cfg *config.Config) {
	n, err := desk.RecordTokens(ctx, a.rdb, cfg.Redis.Prefix, cfg.Auth, a.opts.Now())
	if err != nil {
		a.log.Warn("desk: the token set could not be recorded; a token removed now and added back later with the same secret would find its old desk sessions", "err", err)
		return
	}
	if n > 0 {
		a.log.Info("desk sessions of removed or changed tokens ended", "tokens", n)
	}
}

// threshold is an account's AUP threshold now: its company's override or
// the provider's.
func (a *App) threshold(account string) int {
	t := a.cfg.Load().AUP.Threshold
	if c, ok := a.dir.ByAccount(account); ok && c.Threshold != nil {
		t = *c.Threshold
	}
	return t
}
