package app

import (
	"time"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/ingest"
	"github.com/aupd/aupd/internal/replay"
)

// ingestAndReplay makes the HTTP ingest (verdicts onto the verdict
// stream, for publishers that cannot reach NATS) and the replay (of the
// spam rules over the verdict stream, of a volume limit against the
// volume records) for the admin API. Both only answer tokens that may use them: without a
// publisher token in auth.tokens, nothing can be published over HTTP.
func (a *App) ingestAndReplay(cfg *config.Config) (*ingest.Ingester, *replay.Replayer, error) {
	skew := func() time.Duration { return a.cfg.Load().AUP.FutureSkew }
	ing, err := ingest.New(ingest.Options{JS: a.js, FutureSkew: skew, Logger: a.log, Registerer: a.reg, Now: a.opts.Now})
	if err != nil {
		return nil, nil, err
	}
	rep, err := replay.New(replay.Options{
		JS: a.js, Verdicts: cfg.NATS.Verdicts.Name, Accounts: cfg.NATS.Accounts.Name,
		Directory: a.dir, Policy: a.policy, FutureSkew: skew, Volume: a.store, Now: a.opts.Now,
	})
	if err != nil {
		return nil, nil, err
	}
	return ing, rep, nil
}
