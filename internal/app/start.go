package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/authlimit"
	"github.com/aupd/aupd/internal/clientaddr"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/policy/volume"
	"github.com/aupd/aupd/internal/replsync"
	"github.com/aupd/aupd/internal/sessionlock"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/worker"
)

// teardown releases what the start-up steps took, last taken first.
type teardown []func()

func (t *teardown) add(f func()) { *t = append(*t, f) }

func (t *teardown) run() {
	for i := len(*t) - 1; i >= 0; i-- {
		(*t)[i]()
	}
}

// earlyHTTP is the HTTP listener started first, so that /healthz and
// /readyz answer while aupd waits for Redis and NATS; the full routes
// take over once everything runs (serve), and the run group shuts it
// down from then on (handOver).
type earlyHTTP struct {
	ln      net.Listener
	srv     *http.Server
	sh      *startupHandler
	errc    chan error
	handed  bool
	timeout time.Duration
}

func (a *App) listenHTTP(cfg *config.Config, td *teardown) (*earlyHTTP, error) {
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	e := &earlyHTTP{ln: ln, sh: &startupHandler{app: a}, errc: make(chan error, 1), timeout: 10 * time.Second}
	e.srv = newHTTPServer(e.sh)
	go func() { e.errc <- e.srv.Serve(ln) }()
	td.add(func() {
		if !e.handed {
			_ = e.srv.Close()
			if err := <-e.errc; !errors.Is(err, http.ErrServerClosed) {
				a.log.Warn("http listener", "err", err)
			}
		}
	})
	a.waiting.Store("redis")
	return e, nil
}

func (e *earlyHTTP) addr() string { return e.ln.Addr().String() }

func (e *earlyHTTP) serve(full http.Handler) { e.sh.set(full) }

func (e *earlyHTTP) handOver(g *run.Group) {
	e.handed = true
	g.Add(func() error {
		if err := <-e.errc; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	}, func(error) {
		sctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		defer cancel()
		_ = e.srv.Shutdown(sctx)
	})
}

// openRedis connects to Redis (starting a local one when asked) and
// waits until it answers and has loaded its data.
func (a *App) openRedis(ctx context.Context, cfg *config.Config, td *teardown) error {
	var err error
	a.rdb, err = newRedis(cfg.Redis)
	if err != nil {
		return err
	}
	td.add(func() { _ = a.rdb.Close() })
	local, err := ensureRedis(ctx, cfg, a.rdb, a.log)
	if err != nil {
		return err
	}
	td.add(local.stop)
	if err := a.waitFor(ctx, "redis", func(ctx context.Context) error { return pingRedis(ctx, a.rdb) }); err != nil {
		return err
	}
	checkDurability(ctx, a.rdb, cfg.Redis.WaitReplicas, a.log)
	return nil
}

// openNATS connects to the configured NATS servers, or starts the
// embedded one, and returns the URL it connected to.
func (a *App) openNATS(ctx context.Context, cfg *config.Config, td *teardown) (string, error) {
	url := cfg.NATS.URL
	if url == "" {
		ns, nsOpts, err := startEmbedded(cfg)
		if err != nil {
			return "", err
		}
		// Released after the run group has drained aupd's consumers and
		// the connection is closed.
		td.add(func() { stopEmbedded(ns, nsOpts, 30*time.Second, a.log.With("component", "nats")) })
		url = ns.ClientURL()
		a.log.Info("embedded NATS server with JetStream", "url", url)
	}
	a.log.Info("connecting to NATS", "url", config.RedactURL(url))
	if err := a.waitFor(ctx, "nats", func(context.Context) error {
		nc, err := connect(cfg.NATS, url, "aupd", a.log.With("component", "nats"))
		a.nc = nc
		return err
	}); err != nil {
		return "", err
	}
	td.add(a.nc.Close)
	var err error
	if a.js, err = jetstream.New(a.nc); err != nil {
		return "", fmt.Errorf("jetstream: %w", err)
	}
	return url, nil
}

// pipeline is the path of a verdict: the stream, its consumer, the worker
// and the store it writes to.
type pipeline struct {
	verdicts jetstream.Stream
	cons     jetstream.Consumer
	repl     *replsync.Barrier
	pub      jsPublisher
	worker   *worker.Worker
	consumer *consumers.Verdicts
}

// buildPipeline makes the streams and the consumer (waiting for
// JetStream), the store, the company directory, the worker and the
// verdict consumer.
func (a *App) buildPipeline(ctx context.Context, cfg *config.Config, td *teardown) (*pipeline, error) {
	p := &pipeline{pub: jsPublisher{js: a.js}}
	if err := a.waitFor(ctx, "jetstream", func(sctx context.Context) error {
		var err error
		if p.verdicts, err = EnsureStream(sctx, a.js, cfg.NATS.Verdicts, verdictSubjects); err != nil {
			return err
		}
		if _, err = EnsureStream(sctx, a.js, cfg.NATS.Accounts, accountSubjects); err != nil {
			return err
		}
		if _, err = EnsureStream(sctx, a.js, cfg.NATS.Dead, deadSubjects); err != nil {
			return err
		}
		p.cons, err = VerdictConsumer(sctx, a.js, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer)
		return err
	}); err != nil {
		return nil, err
	}

	var storeOpts []store.Option
	var workerNow func() time.Time
	if a.pinned {
		storeOpts = append(storeOpts, store.WithClock(a.opts.Now))
		workerNow = a.opts.Now
	}
	replMetrics, err := replsync.NewMetrics(a.reg)
	if err != nil {
		return nil, err
	}
	p.repl = replsync.New(a.rdb, cfg.Redis.Prefix, cfg.Redis.WaitReplicas, cfg.Redis.WaitTimeout,
		replsync.WithLoss(replsync.Loss(cfg.Redis.ReplicaLoss), cfg.Redis.ReplicaLossAfter),
		replsync.WithLogger(a.log.With("component", "redis")), replsync.WithMetrics(replMetrics),
		replsync.WithMasterName(cfg.Redis.MasterName))
	if p.repl != nil {
		storeOpts = append(storeOpts, store.WithBarrier(p.repl))
	}
	a.store = store.New(a.rdb, cfg.Redis.Prefix, storeOpts...)
	if a.dir, err = companies.New(a.rdb, cfg.Redis.Prefix, cfg.Companies); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err = a.dir.Refresh(sctx); err != nil {
		return nil, err
	}
	a.pruneLibraries(ctx)
	p.worker, err = worker.New(worker.Options{
		Store: a.store, Directory: a.dir, Publisher: p.pub,
		Policy: a.policy, Logger: a.log, Registerer: a.reg, Now: workerNow,
	})
	if err != nil {
		return nil, err
	}
	p.consumer, err = consumers.NewVerdicts(consumers.VerdictOptions{
		JS: a.js, Consumer: p.cons, Processor: p.worker,
		Batch: cfg.NATS.Consumer.Batch, MaxWait: cfg.NATS.Consumer.MaxWait, FillWait: cfg.NATS.Consumer.FillWait, Workers: cfg.NATS.Consumer.Workers,
		RetryMin: cfg.NATS.Consumer.RetryMin, RetryMax: cfg.NATS.Consumer.RetryMax,
		MaxDeliver:    cfg.NATS.Consumer.MaxDeliver,
		Probe:         func(ctx context.Context) error { return probeStore(ctx, a.rdb) },
		MaxDeadLetter: int(min(a.nc.MaxPayload(), int64(events.MaxPayload))),
		FutureSkew:    func() time.Duration { return a.cfg.Load().AUP.FutureSkew },
		Logger:        a.log, Registerer: a.reg, Now: a.opts.Now,
	})
	if err != nil {
		return nil, err
	}
	maxDel, err := watchMaxDeliveries(a.nc, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable, a.reg, a.log)
	if err != nil {
		return nil, err
	}
	td.add(func() { _ = maxDel.Unsubscribe() })
	return p, nil
}

// startChecks makes the readiness checker and runs its first round, so
// that /readyz and the metrics answer from real probes from the start.
func (a *App) startChecks(ctx context.Context, cfg *config.Config, p *pipeline) {
	a.checker = newReadinessChecker(&readinessChecker{nc: a.nc, verdicts: p.cons, rdb: a.rdb, prefix: cfg.Redis.Prefix,
		log: a.log.With("component", "readiness"), running: a.ready.Load})
	a.checker.round(ctx)
	a.reg.MustRegister(a.checker)
}

// buildNotifier makes the abuse notices' sender and its consumer, and the
// state gauges that read them.
func (a *App) buildNotifier(ctx context.Context, cfg *config.Config, p *pipeline) (*notifier.Notifier, error) {
	ntf, err := notifier.New(cfg.Notifier, notifier.Options{
		Redis: a.rdb, KeyPrefix: cfg.Redis.Prefix, JetStream: a.js,
		Samples: notifier.StreamSamples{Stream: p.verdicts}, Directory: directory(a.dir),
		Registerer: a.reg, Logger: a.log, Now: a.opts.Now, Links: desk.NewLinks(cfg.Desk).URL,
		Replicated: p.repl, // a nil *Barrier waits for nothing
	})
	if err != nil {
		return nil, err
	}
	// The notifier's consumer exists before aupd is ready, so that its
	// backlog shows in aupd_notices_pending from the first scrape.
	if err := a.waitFor(ctx, "jetstream", ntf.EnsureConsumer); err != nil {
		return nil, err
	}
	if cfg.Notifier.EMLDir != "" {
		a.log.Info("abuse notices are written as .eml files, not sent", "transport", "eml", "dir", cfg.Notifier.EMLDir)
	} else {
		a.log.Info("abuse notices are sent by SMTP", "transport", "smtp", "host", cfg.Notifier.SMTP.Host, "port", cfg.Notifier.SMTP.Port, "tls", cfg.Notifier.SMTP.TLS)
	}
	a.reg.MustRegister(newStateCollector(&stateCollector{
		rdb: a.rdb, prefix: cfg.Redis.Prefix, lag: a.checker.lag,
		noticeConsumer: func(ctx context.Context) (jetstream.Consumer, error) {
			return a.js.Consumer(ctx, cfg.NATS.Accounts.Name, cfg.Notifier.Durable)
		},
		notices: ntf.Store(), retention: cfg.Notifier.Retention, log: a.log, now: a.opts.Now,
		outboxPending: a.store.OutboxPending,
	}))
	return ntf, nil
}

// buildRoutes makes the HTTP listener's routes: the admin API, the desk,
// the session locks and the control endpoints, behind the API's tokens.
func (a *App) buildRoutes(cfg *config.Config, pub jsPublisher, ntf *notifier.Notifier) (*http.ServeMux, error) {
	var err error
	if a.tokens, err = api.NewTokens(cfg.Auth); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	a.recordTokens(rctx, cfg)
	cancel()
	if a.clients, err = clientaddr.New(cfg.HTTP.TrustedProxies); err != nil {
		return nil, err
	}
	a.tokens.SetFailureLimit(&api.FailureLimit{Redis: a.rdb, Prefix: cfg.Redis.Prefix,
		Max: cfg.HTTP.AuthFailures, Window: cfg.HTTP.AuthFailureWindow, Client: a.clients})
	mux := a.routes(a.tokens)
	ing, rep, err := a.ingestAndReplay(cfg)
	if err != nil {
		return nil, err
	}
	apiHandler, err := api.New(api.Options{
		Store: a.store, Companies: a.dir, Publisher: pub, Notices: notices{ntf.Store()},
		Tokens: a.tokens, Logger: a.log, Metrics: a.reg, Now: a.opts.Now,
		Window: cfg.AUP.Window, CapOf: a.capOf, Ingest: ing, Replay: rep,
		Threshold: a.threshold,
	})
	if err != nil {
		return nil, err
	}
	mux.Handle("/api/v1/", apiHandler)
	if err = a.mountDesk(mux, cfg, pub, ntf); err != nil {
		return nil, err
	}
	sessCfg := cfg.Sessions
	sessCfg.KeyPrefix = cfg.Redis.Prefix
	locks, err := sessionlock.New(a.rdb, sessCfg, sessionlock.Options{Logger: a.log, Registerer: a.reg, Now: a.opts.Now})
	if err != nil {
		return nil, err
	}
	guarded := api.GuardTokens(a.tokens, auth.PermSessionLock, sessionlock.NewHandler(locks, a.log))
	for _, route := range sessionlock.Routes() {
		mux.Handle(route, guarded)
	}
	return mux, nil
}

// addShutdown is the actor that ends the group when ctx ends (SIGTERM and
// SIGINT in cmd/aupd): shutdown does not depend on any other actor
// watching ctx.
func addShutdown(ctx context.Context, g *run.Group, log *slog.Logger) {
	stop := make(chan struct{})
	g.Add(func() error {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "cause", context.Cause(ctx))
		case <-stop:
		}
		return nil
	}, func(error) { close(stop) })
}

// addContext runs fn as an actor on a context of its own, which the
// group's interrupt cancels: each actor drains on its own schedule
// rather than all at once when ctx ends.
func addContext(ctx context.Context, g *run.Group, fn func(context.Context) error) {
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.Add(func() error { return fn(actx) }, func(error) { cancel() })
}

// addPipeline runs the verdict consumer; when it has stopped, the worker
// writes the statistics-only events of its last second.
func (a *App) addPipeline(ctx context.Context, g *run.Group, p *pipeline) {
	addContext(ctx, g, func(cctx context.Context) error {
		err := p.consumer.Run(cctx)
		fctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer stop()
		p.worker.Close(fctx)
		return err
	})
}

// addPolicyServers runs the Postfix policy server (and its transport map)
// and the Dovecot auth policy server that the config turns on, and says
// in info where they listen.
func (a *App) addPolicyServers(ctx context.Context, g *run.Group, cfg *config.Config, accts accounts, info *Info) error {
	if pc := cfg.Policy.Postfix; pc.Listen != "" || pc.UnixSocket != "" {
		// The volume limits (aup.volume) are counted whether or not any
		// are configured now: a reload may set some.
		vol, err := volume.New(volume.Options{Store: accts.store, Directory: accts.dir, Policy: a.policy,
			Publisher: accts.pub, Logger: a.log, Registerer: a.reg})
		if err != nil {
			return err
		}
		serve, err := a.postfixServer(pc, accts, vol, info)
		if err != nil {
			return err
		}
		addContext(ctx, g, serve)
		addContext(ctx, g, vol.Run)
	}
	if dc := cfg.Policy.Dovecot; dc.Listen != "" {
		lcfg := cfg.Policy.Lockout
		lcfg.KeyPrefix = cfg.Redis.Prefix
		ctr, err := lockout.New(a.rdb, lcfg, accts, lockout.Options{Policies: accts, Logger: a.log, Registerer: a.reg, Now: a.opts.Now})
		if err != nil {
			return err
		}
		dopts := dovecot.Options{Logger: a.log, Registerer: a.reg, Now: a.opts.Now,
			// Dovecot connects itself: its peer address is the client's.
			Limit: &authlimit.Limit{Redis: a.rdb, Prefix: cfg.Redis.Prefix, Max: cfg.HTTP.AuthFailures, Window: cfg.HTTP.AuthFailureWindow}}
		if keep, ret := dc.RecentLoginLimits(); keep > 0 {
			dopts.Logins = logins{store: accts.store, dir: accts.dir, lim: store.LoginLimits{Keep: keep, Retention: ret}}
		}
		dh, err := dovecot.New(dc, accts, ctr, dopts)
		if err != nil {
			return err
		}
		dln, err := net.Listen("tcp", dc.Listen)
		if err != nil {
			return fmt.Errorf("dovecot policy listen: %w", err)
		}
		info.DovecotAddr = dln.Addr().String()
		dsrv := newHTTPServer(dh)
		g.Add(func() error {
			if err := dsrv.Serve(dln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("dovecot policy: %w", err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = dsrv.Shutdown(sctx)
		})
	}
	return nil
}

// postfixServer makes the Postfix policy server and returns what serves
// it: TCP and the unix socket, and the transport map beside them.
func (a *App) postfixServer(pc postfix.Config, accts accounts, vol postfix.Volume, info *Info) (func(context.Context) error, error) {
	pf, err := postfix.New(pc, accts, postfix.Options{Logger: a.log, Registerer: a.reg, Now: a.opts.Now, Volume: vol})
	if err != nil {
		return nil, err
	}
	serve := pf.Run // TCP and the unix socket
	info.PostfixAddr = pc.Listen
	if pc.UnixSocket != "" {
		if pc.TransportListen != "" {
			info.PostfixTransportAddr = pc.TransportListen // served by pf.Run
		}
		return serve, nil
	}
	pln, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		return nil, fmt.Errorf("postfix policy listen: %w", err)
	}
	info.PostfixAddr = pln.Addr().String()
	serve = func(ctx context.Context) error { return pf.Serve(ctx, pln) }
	if pc.TransportListen == "" {
		return serve, nil
	}
	// The transport map (docs/postfix.md), beside the policy server.
	tln, err := net.Listen("tcp", pc.TransportListen)
	if err != nil {
		_ = pln.Close()
		return nil, fmt.Errorf("postfix transport map listen: %w", err)
	}
	info.PostfixTransportAddr = tln.Addr().String()
	policyOnly := serve
	return func(ctx context.Context) error {
		ctx, stop := context.WithCancel(ctx)
		errs := make(chan error, 2)
		go func() { errs <- policyOnly(ctx) }()
		go func() { errs <- pf.ServeTransport(ctx, tln) }()
		first := <-errs
		stop() // one ended: end the other
		return errors.Join(first, <-errs)
	}, nil
}

// addReload re-reads the config on SIGHUP. It does not end the group on
// its own: shutdown is addShutdown's.
func (a *App) addReload(g *run.Group) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	g.Add(func() error {
		for {
			select {
			case <-hup:
				if err := a.reload(); err != nil {
					a.log.Error("reload config", "err", err)
				}
			case <-done:
				return nil
			}
		}
	}, func(error) { signal.Stop(hup); close(done) })
}

// logStarted says once what runs and where, and what the config leaves
// to the operator's attention.
func (a *App) logStarted(cfg *config.Config, info Info, url string) {
	a.log.Info("aupd running", "http", info.HTTPAddr, "nats", config.RedactURL(url), "stream", cfg.NATS.Verdicts.Name,
		"postfix_policy", info.PostfixAddr, "dovecot_policy", info.DovecotAddr,
		"threshold", cfg.AUP.Threshold, "mode", cfg.AUP.Mode, "companies", len(a.dir.All()))
	if n := len(a.dir.All()); n == 0 {
		a.log.Warn(cfg.OutsideCompanies(n))
	} else {
		a.log.Info(cfg.OutsideCompanies(n))
	}
	for _, w := range cfg.NoticeWarnings() {
		a.log.Warn(w)
	}
}

// pruneLibraries deletes the Redis function libraries of other aupd
// versions (store.PruneLibraries). A failure (a master down, an ACL
// without FUNCTION DELETE) is logged and changes nothing else.
func (a *App) pruneLibraries(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := a.store.PruneLibraries(pctx)
	switch {
	case err != nil:
		a.log.Warn("could not delete other aupd versions' function libraries from Redis", "component", "redis", "deleted", n, "err", err)
	case n > 0:
		a.log.Info("deleted other aupd versions' function libraries from Redis", "component", "redis", "deleted", n)
	}
}
