package app

import (
	"net/http"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
)

// mountDesk serves the abuse desk under /desk/ when it is enabled.
func (a *App) mountDesk(mux *http.ServeMux, cfg *config.Config, pub store.Publisher, ntf *notifier.Notifier) error {
	if !cfg.Desk.Enabled {
		return nil
	}
	d, err := desk.New(desk.Options{
		Config: cfg.Desk, Store: a.store, Companies: a.dir, Publisher: pub, Notices: ntf.Store(),
		Trends: a.store, Tokens: a.tokens, Redis: a.rdb, Prefix: cfg.Redis.Prefix, Threshold: a.threshold,
		Window: cfg.AUP.Window, CapOf: a.capOf, Logger: a.log, Metrics: a.reg, Now: a.opts.Now,
		Clients: a.clients,
	})
	if err != nil {
		return err
	}
	mux.Handle("/desk/", d)
	return nil
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
