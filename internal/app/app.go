// Package app wires aupd together: config, Redis, NATS (embedded or
// remote), the streams, the worker and its consumer, the HTTP listener,
// and the periodic jobs, as one run group with an orderly shutdown.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/buildinfo"
	"github.com/aupd/aupd/internal/clientaddr"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/sessionlock"
	"github.com/aupd/aupd/notifier"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/replsync"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/worker"
)

// Options are what Run needs. Config is required; ConfigPath, when set,
// is re-read on SIGHUP and POST /-/reload.
type Options struct {
	Config     *config.Config
	ConfigPath string
	Logger     *slog.Logger
	// OnReady, when set, is called once everything listens.
	OnReady func(Info)
	Now     func() time.Time
	// Registry receives every metric and is served at /metrics; nil: a
	// new one (tests pass their own to inspect it).
	Registry *prometheus.Registry
}

// Info tells where a running aupd listens.
type Info struct {
	HTTPAddr    string
	NATSURL     string
	PostfixAddr string // empty: the Postfix policy server is off
	DovecotAddr string // empty: the Dovecot policy server is off
	// PostfixTransportAddr is where the Postfix transport map (socketmap)
	// listens; empty: off.
	PostfixTransportAddr string
}

// App is a running aupd.
type App struct {
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	cfg     atomic.Pointer[config.Config]
	rdb     redis.UniversalClient
	nc      *nats.Conn
	js      jetstream.JetStream
	store   *store.Store
	dir     *companies.Directory
	tokens  *api.Tokens
	clients *clientaddr.Resolver // http.trusted_proxies
	ready   atomic.Bool
	reloads *prometheus.CounterVec
	// waiting says what start-up waits for (a string), for /readyz.
	waiting atomic.Value
	// pinned: Options.Now was given, and decides windows too (tests).
	pinned bool

	reloadMu sync.Mutex
}

// Run runs aupd until ctx is cancelled, then shuts down in order: stop
// fetching, finish and ack the batches in hand, stop the listeners, close
// the connections.
func Run(ctx context.Context, opts Options) error {
	if opts.Config == nil {
		return errors.New("app: no config")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	pinned := opts.Now != nil // a pinned clock also decides windows (tests); else Redis's TIME does
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	a := &App{opts: opts, log: opts.Logger, reg: opts.Registry, pinned: pinned}
	defer installRedisLog(opts.Logger)()
	a.cfg.Store(opts.Config)
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aupd_config_reloads_total",
		Help: "Config reloads (SIGHUP or POST /-/reload) by result: ok, error (the running config stays).",
	}, []string{"result"})
	a.reloads.WithLabelValues("ok")
	a.reloads.WithLabelValues("error")
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector(buildinfo.Read()), a.reloads)
	return a.run(ctx)
}

func (a *App) run(ctx context.Context) (err error) {
	cfg := a.cfg.Load()

	// HTTP first, so that /healthz and /readyz answer while aupd waits
	// for Redis and NATS; the full routes take over once everything runs.
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	sh := &startupHandler{app: a}
	srv := newHTTPServer(sh)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	handedOver := false
	defer func() {
		if !handedOver {
			_ = srv.Close()
			<-serveErr
		}
	}()
	a.waiting.Store("redis")

	// Redis: wait until it answers and has loaded its data.
	a.rdb, err = newRedis(cfg.Redis)
	if err != nil {
		return err
	}
	defer a.rdb.Close()
	local, err := ensureRedis(ctx, cfg, a.rdb, a.log)
	if err != nil {
		return err
	}
	defer local.stop()
	if err := a.waitFor(ctx, "redis", func(ctx context.Context) error { return pingRedis(ctx, a.rdb) }); err != nil {
		return err
	}
	checkDurability(ctx, a.rdb, cfg.Redis.WaitReplicas, a.log)

	// NATS: the configured servers, or the embedded one.
	url := cfg.NATS.URL
	if url == "" {
		var (
			ns     *server.Server
			nsOpts *server.Options
		)
		ns, nsOpts, err = startEmbedded(cfg)
		if err != nil {
			return err
		}
		// Runs after the run group has drained aupd's consumers and
		// a.nc is closed (defers run last first).
		defer stopEmbedded(ns, nsOpts, 30*time.Second, a.log.With("component", "nats"))
		url = ns.ClientURL()
		a.log.Info("embedded NATS server with JetStream", "url", url)
	}
	a.log.Info("connecting to NATS", "url", config.RedactURL(url))
	if err := a.waitFor(ctx, "nats", func(context.Context) error {
		nc, err := connect(cfg.NATS, url, "aupd", a.log.With("component", "nats"))
		a.nc = nc
		return err
	}); err != nil {
		return err
	}
	defer a.nc.Close()
	a.js, err = jetstream.New(a.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	var (
		verdicts jetstream.Stream
		cons     jetstream.Consumer
	)
	if err := a.waitFor(ctx, "jetstream", func(sctx context.Context) error {
		var err error
		if verdicts, err = EnsureStream(sctx, a.js, cfg.NATS.Verdicts, verdictSubjects); err != nil {
			return err
		}
		if _, err = EnsureStream(sctx, a.js, cfg.NATS.Accounts, accountSubjects); err != nil {
			return err
		}
		if _, err = EnsureStream(sctx, a.js, cfg.NATS.Dead, deadSubjects); err != nil {
			return err
		}
		cons, err = VerdictConsumer(sctx, a.js, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer)
		return err
	}); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	// State.
	var storeOpts []store.Option
	var workerNow func() time.Time
	if a.pinned {
		storeOpts = append(storeOpts, store.WithClock(a.opts.Now))
		workerNow = a.opts.Now
	}
	repl := replsync.New(a.rdb, cfg.Redis.Prefix, cfg.Redis.WaitReplicas, cfg.Redis.WaitTimeout)
	if repl != nil {
		storeOpts = append(storeOpts, store.WithBarrier(repl))
	}
	a.store = store.New(a.rdb, cfg.Redis.Prefix, storeOpts...)
	a.dir, err = companies.New(a.rdb, cfg.Redis.Prefix, cfg.Companies)
	if err != nil {
		return err
	}
	if err = a.dir.Refresh(sctx); err != nil {
		return err
	}
	pub := jsPublisher{js: a.js}
	w, err := worker.New(worker.Options{
		Store: a.store, Directory: a.dir, Publisher: pub,
		Policy: a.policy, Logger: a.log, Registerer: a.reg, Now: workerNow,
	})
	if err != nil {
		return err
	}
	vc, err := consumers.NewVerdicts(consumers.VerdictOptions{
		JS: a.js, Consumer: cons, Processor: w,
		Batch: cfg.NATS.Consumer.Batch, MaxWait: cfg.NATS.Consumer.MaxWait, Workers: cfg.NATS.Consumer.Workers,
		RetryMin: cfg.NATS.Consumer.RetryMin, RetryMax: cfg.NATS.Consumer.RetryMax,
		MaxDeliver:    cfg.NATS.Consumer.MaxDeliver,
		Probe:         func(ctx context.Context) error { return pingRedis(ctx, a.rdb) },
		MaxDeadLetter: int(min(a.nc.MaxPayload(), int64(events.MaxPayload))),
		FutureSkew:    func() time.Duration { return a.cfg.Load().AUP.FutureSkew },
		Logger:        a.log, Registerer: a.reg, Now: a.opts.Now,
	})
	if err != nil {
		return err
	}
	maxDel, err := watchMaxDeliveries(a.nc, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable, a.reg, a.log)
	if err != nil {
		return err
	}
	defer func() { _ = maxDel.Unsubscribe() }()

	// Abuse notices.
	ntf, err := notifier.New(cfg.Notifier, notifier.Options{
		Redis: a.rdb, KeyPrefix: cfg.Redis.Prefix, JetStream: a.js,
		Samples: notifier.StreamSamples{Stream: verdicts}, Directory: directory(a.dir),
		Registerer: a.reg, Logger: a.log, Now: a.opts.Now, Links: desk.NewLinks(cfg.Desk).URL,
		Replicated: repl, // a nil *Barrier waits for nothing
	})
	if err != nil {
		return err
	}
	// The notifier's consumer exists before aupd is ready, so that its
	// backlog shows in aupd_notices_pending from the first scrape.
	if err := a.waitFor(ctx, "jetstream", ntf.EnsureConsumer); err != nil {
		return err
	}
	if cfg.Notifier.EMLDir != "" {
		a.log.Info("abuse notices are written as .eml files, not sent", "transport", "eml", "dir", cfg.Notifier.EMLDir)
	} else {
		a.log.Info("abuse notices are sent by SMTP", "transport", "smtp", "host", cfg.Notifier.SMTP.Host, "port", cfg.Notifier.SMTP.Port, "tls", cfg.Notifier.SMTP.TLS)
	}
	a.reg.MustRegister(newStateCollector(&stateCollector{
		rdb: a.rdb, prefix: cfg.Redis.Prefix, verdicts: cons,
		noticeConsumer: func(ctx context.Context) (jetstream.Consumer, error) {
			return a.js.Consumer(ctx, cfg.NATS.Accounts.Name, cfg.Notifier.Durable)
		},
		notices: ntf.Store(), retention: cfg.Notifier.Retention, log: a.log, now: a.opts.Now,
		outboxPending: a.store.OutboxPending,
		ready:         func(ctx context.Context) bool { ok, _ := a.readiness(ctx); return ok },
	}))

	// Admin API, session locks and the enforcement servers.
	a.tokens, err = api.NewTokens(cfg.Auth)
	if err != nil {
		return err
	}
	a.clients, err = clientaddr.New(cfg.HTTP.TrustedProxies)
	if err != nil {
		return err
	}
	a.tokens.SetFailureLimit(&api.FailureLimit{Redis: a.rdb, Prefix: cfg.Redis.Prefix,
		Max: cfg.HTTP.AuthFailures, Window: cfg.HTTP.AuthFailureWindow, Client: a.clients})
	mux := a.routes(a.tokens)
	ing, rep, err := a.ingestAndReplay(cfg)
	if err != nil {
		return err
	}
	apiHandler, err := api.New(api.Options{
		Store: a.store, Companies: a.dir, Publisher: pub, Notices: notices{ntf.Store()},
		Tokens: a.tokens, Logger: a.log, Metrics: a.reg, Now: a.opts.Now,
		Window: cfg.AUP.Window, CapOf: a.capOf, Ingest: ing, Replay: rep,
		Threshold: a.threshold,
	})
	if err != nil {
		return err
	}
	mux.Handle("/api/v1/", apiHandler)
	if err = a.mountDesk(mux, cfg, pub, ntf); err != nil {
		return err
	}
	sessCfg := cfg.Sessions
	sessCfg.KeyPrefix = cfg.Redis.Prefix
	locks, err := sessionlock.New(a.rdb, sessCfg, sessionlock.Options{Logger: a.log, Registerer: a.reg, Now: a.opts.Now})
	if err != nil {
		return err
	}
	guarded := api.GuardTokens(a.tokens, api.PermSessionLock, sessionlock.NewHandler(locks, a.log))
	for _, route := range sessionlock.Routes() {
		mux.Handle(route, guarded)
	}
	accts := accounts{store: a.store, dir: a.dir, pub: pub}

	info := Info{HTTPAddr: ln.Addr().String(), NATSURL: url}

	// Scheduled jobs.
	runner, err := a.jobs(cfg, pub, ntf)
	if err != nil {
		return err
	}

	var g run.Group
	{
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error {
			err := vc.Run(cctx)
			// the statistics-only events of the last second
			fctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer stop()
			w.Close(fctx)
			return err
		}, func(error) { cancel() })
	}
	{
		nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error { return ntf.Run(nctx) }, func(error) { cancel() })
	}
	if pc := cfg.Policy.Postfix; pc.Listen != "" || pc.UnixSocket != "" {
		pf, err := postfix.New(pc, accts, postfix.Options{Logger: a.log, Registerer: a.reg, Now: a.opts.Now})
		if err != nil {
			return err
		}
		serve := pf.Run // TCP and the unix socket
		info.PostfixAddr = pc.Listen
		if pc.UnixSocket == "" {
			pln, err := net.Listen("tcp", pc.Listen)
			if err != nil {
				return fmt.Errorf("postfix policy listen: %w", err)
			}
			info.PostfixAddr = pln.Addr().String()
			serve = func(ctx context.Context) error { return pf.Serve(ctx, pln) }
		}
		if pc.TransportListen != "" && pc.UnixSocket == "" {
			// The transport map (docs/postfix.md), beside the policy server.
			tln, err := net.Listen("tcp", pc.TransportListen)
			if err != nil {
				return fmt.Errorf("postfix transport map listen: %w", err)
			}
			info.PostfixTransportAddr = tln.Addr().String()
			policyOnly := serve
			serve = func(ctx context.Context) error {
				ctx, stop := context.WithCancel(ctx)
				errs := make(chan error, 2)
				go func() { errs <- policyOnly(ctx) }()
				go func() { errs <- pf.ServeTransport(ctx, tln) }()
				first := <-errs
				stop() // one ended: end the other
				return errors.Join(first, <-errs)
			}
		} else if pc.TransportListen != "" {
			info.PostfixTransportAddr = pc.TransportListen // served by pf.Run
		}
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error { return serve(pctx) }, func(error) { cancel() })
	}
	if dc := cfg.Policy.Dovecot; dc.Listen != "" {
		lcfg := cfg.Policy.Lockout
		lcfg.KeyPrefix = cfg.Redis.Prefix
		ctr, err := lockout.New(a.rdb, lcfg, accts, lockout.Options{Policies: accts, Logger: a.log, Registerer: a.reg, Now: a.opts.Now})
		if err != nil {
			return err
		}
		dopts := dovecot.Options{Logger: a.log, Registerer: a.reg, Now: a.opts.Now}
		if keep, ret := dc.RecentLoginLimits(); keep > 0 {
			dopts.Logins = logins{store: a.store, dir: a.dir, lim: store.LoginLimits{Keep: keep, Retention: ret}}
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
	{
		handedOver = true
		g.Add(func() error {
			if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
	}
	{
		jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error { return runner.Run(jctx) }, func(error) { cancel() })
	}
	{
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
				case <-ctx.Done():
					return nil
				case <-done:
					return nil
				}
			}
		}, func(error) { signal.Stop(hup); close(done) })
	}
	sh.set(mux)
	a.ready.Store(true)
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
	if a.opts.OnReady != nil {
		a.opts.OnReady(info)
	}
	err = g.Run()
	a.ready.Store(false)
	a.log.Info("aupd stopped")
	return err
}

// policy is the current provider policy for the worker.
func (a *App) policy() worker.Policy {
	c := a.cfg.Load().AUP
	return worker.Policy{
		Window: c.Window, FutureSkew: c.FutureSkew, Threshold: c.Threshold, MaxTracked: c.MaxTracked,
		Directions: c.Directions, Verdicts: c.Verdicts, Mode: c.Mode, Allowlist: c.Allowlist,
	}
}

// capOf is the per-account cap the worker uses for account.
func (a *App) capOf(account string) int {
	c, _ := a.dir.ByAccount(account)
	return worker.Cap(a.policy(), c, account)
}

// reload re-reads the config file. The AUP rule, the companies and the
// API tokens change at once; connection settings need a restart.
func (a *App) reload() error {
	err := a.reloadConfig()
	result := "ok"
	if err != nil {
		result = "error"
	}
	a.reloads.WithLabelValues(result).Inc()
	return err
}

func (a *App) reloadConfig() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.opts.ConfigPath == "" {
		return errors.New("no config file to reload")
	}
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		return err
	}
	if err := a.tokens.Set(cfg.Auth); err != nil {
		return err
	}
	if err := a.dir.SetStatic(cfg.Companies); err != nil {
		return err
	}
	a.cfg.Store(cfg)
	a.log.Info("config reloaded", "threshold", cfg.AUP.Threshold, "mode", cfg.AUP.Mode, "companies", len(cfg.Companies), "tokens", len(cfg.Auth.Tokens))
	return nil
}
