// Package app wires aupd together: config, Redis, NATS (embedded or
// remote), the streams, the worker and its consumer, the HTTP listener,
// and the periodic jobs, as one run group with an orderly shutdown.
package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/buildinfo"
	"github.com/aupd/aupd/internal/clientaddr"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/desk"
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
	desk    *desk.Desk           // nil: the desk is off
	ready   atomic.Bool
	checker *readinessChecker // what /readyz and aupd_ready answer from
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
		buildInfoCollector(buildinfo.Read()), a.reloads)
	return a.run(ctx)
}

// run starts aupd in named steps, then runs its actors as one group until
// ctx ends or an actor fails. Each step that holds a resource registers
// its release on td, which releases them in reverse order when run
// returns: the run group first drains what uses a resource, then the
// resource goes (NATS connection before the embedded server, Redis last).
func (a *App) run(ctx context.Context) error {
	cfg := a.cfg.Load()
	var td teardown
	defer td.run()

	early, err := a.listenHTTP(cfg, &td)
	if err != nil {
		return err
	}
	if err := a.openRedis(ctx, cfg, &td); err != nil {
		return err
	}
	url, err := a.openNATS(ctx, cfg, &td)
	if err != nil {
		return err
	}
	p, err := a.buildPipeline(ctx, cfg, &td)
	if err != nil {
		return err
	}
	a.startChecks(ctx, cfg, p)
	ntf, err := a.buildNotifier(ctx, cfg, p)
	if err != nil {
		return err
	}
	mux, err := a.buildRoutes(cfg, p.pub, ntf)
	if err != nil {
		return err
	}
	runner, err := a.jobs(cfg, p.pub, ntf)
	if err != nil {
		return err
	}

	var g run.Group
	addShutdown(ctx, &g, a.log)
	a.addPipeline(ctx, &g, p)
	addContext(ctx, &g, a.checker.Run)
	addContext(ctx, &g, ntf.Run)
	info := Info{HTTPAddr: early.addr(), NATSURL: url}
	if err := a.addPolicyServers(ctx, &g, cfg, accounts{store: a.store, dir: a.dir, pub: p.pub}, &info); err != nil {
		return err
	}
	early.handOver(&g)
	addContext(ctx, &g, runner.Run)
	if a.desk != nil {
		addContext(ctx, &g, a.desk.Run) // sign-in link mail and session sweeps
	}
	a.addReload(&g)

	early.serve(mux)
	a.ready.Store(true)
	a.logStarted(cfg, info, url)
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
		Volume: c.Volume, VolumeAllowlist: c.VolumeAllowlist,
		SpamRate: c.SpamRate.Rule(),
	}
}

// capOf is the per-account cap the worker uses for account.
func (a *App) capOf(account string) int {
	c, _ := a.dir.ByAccount(account)
	p := a.policy()
	return p.Cap(companies.Policy(p, c, account))
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
	if err := cfg.Auth.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.recordTokens(ctx, cfg) // before the new tokens take effect
	if err := a.tokens.Set(cfg.Auth); err != nil {
		return err
	}
	if err := a.dir.SetStatic(cfg.Companies); err != nil {
		return err
	}
	if a.desk != nil {
		// End for good the sessions of contacts the reload removed.
		if err := a.desk.Sweep(ctx); err != nil {
			a.log.Warn("sweep desk sessions after the reload", "err", err)
		}
	}
	a.cfg.Store(cfg)
	a.log.Info("config reloaded", "threshold", cfg.AUP.Threshold, "mode", cfg.AUP.Mode, "companies", len(cfg.Companies), "tokens", len(cfg.Auth.Tokens))
	return nil
}
