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

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
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
}

// Info tells where a running aupd listens.
type Info struct {
	HTTPAddr string
	NATSURL  string
}

// App is a running aupd.
type App struct {
	opts  Options
	log   *slog.Logger
	reg   *prometheus.Registry
	cfg   atomic.Pointer[config.Config]
	rdb   redis.UniversalClient
	nc    *nats.Conn
	js    jetstream.JetStream
	store *store.Store
	dir   *companies.Directory
	ready atomic.Bool

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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &App{opts: opts, log: opts.Logger, reg: prometheus.NewRegistry()}
	a.cfg.Store(opts.Config)
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a.run(ctx)
}

func (a *App) run(ctx context.Context) (err error) {
	cfg := a.cfg.Load()

	// Redis.
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

	// NATS: the configured servers, or the embedded one.
	url := cfg.NATS.URL
	if url == "" {
		var ns *server.Server
		ns, err = startEmbedded(cfg)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		url = ns.ClientURL()
		a.log.Info("embedded NATS server with JetStream", "url", url)
	}
	a.nc, err = connect(cfg.NATS, url, "aupd")
	if err != nil {
		return err
	}
	defer a.nc.Close()
	a.js, err = jetstream.New(a.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err = EnsureStream(sctx, a.js, cfg.NATS.Verdicts, verdictSubjects); err != nil {
		return err
	}
	if _, err = EnsureStream(sctx, a.js, cfg.NATS.Accounts, accountSubjects); err != nil {
		return err
	}
	if _, err = EnsureStream(sctx, a.js, cfg.NATS.Dead, deadSubjects); err != nil {
		return err
	}
	cons, err := VerdictConsumer(sctx, a.js, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer)
	if err != nil {
		return err
	}

	// State.
	a.store = store.New(a.rdb, cfg.Redis.Prefix, store.WithClock(a.opts.Now))
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
		Policy: a.policy, Logger: a.log, Registerer: a.reg, Now: a.opts.Now,
	})
	if err != nil {
		return err
	}
	vc, err := consumers.NewVerdicts(consumers.VerdictOptions{
		JS: a.js, Consumer: cons, Processor: w,
		Batch: cfg.NATS.Consumer.Batch, MaxWait: cfg.NATS.Consumer.MaxWait, Workers: cfg.NATS.Consumer.Workers,
		RetryMin: cfg.NATS.Consumer.RetryMin, RetryMax: cfg.NATS.Consumer.RetryMax,
		FutureSkew: func() time.Duration { return a.cfg.Load().AUP.FutureSkew },
		Logger:     a.log, Registerer: a.reg, Now: a.opts.Now,
	})
	if err != nil {
		return err
	}
	lag := newLagGauge(a.reg, cons)

	// HTTP.
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}

	// Periodic jobs.
	jobs := cron.New()
	every := func(spec string, name string, fn func(context.Context) error) {
		_, _ = jobs.AddFunc(spec, func() {
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := fn(jctx); err != nil {
				a.log.Warn("periodic job", "job", name, "err", err)
			}
		})
	}
	every("@every 10s", "companies", a.dir.Refresh)
	every("@every 15s", "consumer_lag", lag.update)
	every("@every 1m", "outbox_sweep", func(ctx context.Context) error {
		_, err := a.store.SweepOutboxes(ctx, pub)
		return err
	})

	var g run.Group
	{
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error { return vc.Run(cctx) }, func(error) { cancel() })
	}
	{
		g.Add(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
		g.Add(func() error { jobs.Run(); return nil }, func(error) { <-jobs.Stop().Done() })
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
	a.ready.Store(true)
	a.log.Info("aupd running", "http", ln.Addr().String(), "nats", url, "stream", cfg.NATS.Verdicts.Name,
		"threshold", cfg.AUP.Threshold, "mode", cfg.AUP.Mode, "companies", len(a.dir.All()))
	if a.opts.OnReady != nil {
		a.opts.OnReady(Info{HTTPAddr: ln.Addr().String(), NATSURL: url})
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
		Window: c.Window, Threshold: c.Threshold, MaxTracked: c.MaxTracked,
		Directions: c.Directions, Verdicts: c.Verdicts, Mode: c.Mode, Allowlist: c.Allowlist,
	}
}

// reload re-reads the config file. The AUP rule and the companies change
// at once; connection settings need a restart.
func (a *App) reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.opts.ConfigPath == "" {
		return errors.New("no config file to reload")
	}
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		return err
	}
	if err := a.dir.SetStatic(cfg.Companies); err != nil {
		return err
	}
	a.cfg.Store(cfg)
	a.log.Info("config reloaded", "threshold", cfg.AUP.Threshold, "mode", cfg.AUP.Mode, "companies", len(cfg.Companies))
	return nil
}
