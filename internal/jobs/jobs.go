// Package jobs runs aupd's scheduled jobs (the outbox sweep, retention,
// the daily digest) with robfig/cron, on schedules from the config in cron
// syntax. Each tick of a job runs once across all aupd processes: the
// first process to take the tick's Redis lock runs it, the others skip
// it. A panicking job is recovered and logged; the next tick runs again.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// Config is the `jobs:` section of the config. An empty schedule turns a
// job off.
type Config struct {
	// OutboxSweep publishes account events left in outboxes by a crash.
	OutboxSweep string `yaml:"outbox_sweep"`
	// Retention removes history entries older than HistoryRetention,
	// trims the index of failed notices to the notice retention and
	// records ended lockouts as active.
	Retention        string        `yaml:"retention"`
	HistoryRetention time.Duration `yaml:"history_retention"`
	// Timeout bounds one run of any job.
	Timeout time.Duration `yaml:"timeout"`
	Digest  DigestConfig  `yaml:"digest"`
}

// DigestConfig configures the daily digest to each company's abuse
// contact. It is off unless enabled.
type DigestConfig struct {
	Enabled  bool   `yaml:"enabled"`
	Schedule string `yaml:"schedule"`
	// MaxAccounts bounds each list of a digest (suspended, near the
	// threshold, reinstated); the digest says when a list was cut.
	MaxAccounts int `yaml:"max_accounts"`
}

// Defaults returns the default schedules.
func Defaults() Config {
	return Config{
		OutboxSweep:      "@every 1m",
		Retention:        "17 3 * * *",
		HistoryRetention: 400 * 24 * time.Hour,
		Timeout:          10 * time.Minute,
		Digest:           DigestConfig{Schedule: "0 7 * * *", MaxAccounts: 200},
	}
}

// Validate checks every schedule.
func (c Config) Validate() error {
	var errs []error
	for _, js := range [][2]string{{"outbox_sweep", c.OutboxSweep}, {"retention", c.Retention}, {"digest.schedule", c.Digest.Schedule}} {
		name, spec := js[0], js[1]
		if spec == "" {
			continue
		}
		if _, err := Parse(spec); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if c.Digest.Enabled && c.Digest.Schedule == "" {
		errs = append(errs, errors.New("digest.schedule: must be set when the digest is enabled"))
	}
	if c.HistoryRetention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("history_retention: %s is shorter than a day", c.HistoryRetention))
	}
	if c.Timeout < time.Second {
		errs = append(errs, fmt.Errorf("timeout: %s is shorter than a second", c.Timeout))
	}
	if c.Digest.MaxAccounts < 1 || c.Digest.MaxAccounts > 10000 {
		errs = append(errs, fmt.Errorf("digest.max_accounts: %d is not 1 to 10000", c.Digest.MaxAccounts))
	}
	return errors.Join(errs...)
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse parses a schedule: five cron fields ("17 3 * * *"), a descriptor
// (@hourly, @daily) or @every DURATION. CRON_TZ=Zone may start it. An
// @every schedule is aligned to multiples of its period since the Unix
// epoch, so that every process has the same ticks.
func Parse(spec string) (cron.Schedule, error) {
	s, err := parser.Parse(spec)
	if err != nil {
		return nil, err
	}
	if d, ok := s.(cron.ConstantDelaySchedule); ok {
		if d.Delay < time.Second {
			return nil, fmt.Errorf("@every %s: the period must be at least 1s", d.Delay)
		}
		return aligned{d.Delay}, nil
	}
	return s, nil
}

// aligned ticks at multiples of a period.
type aligned struct{ d time.Duration }

func (a aligned) Next(t time.Time) time.Time { return t.Truncate(a.d).Add(a.d) }

// Tick returns the schedule's latest activation at or before now: the
// tick a run started at now belongs to.
func Tick(s cron.Schedule, now time.Time) time.Time {
	back := time.Second
	t := s.Next(now.Add(-back))
	for t.After(now) && back < 400*24*time.Hour {
		back *= 2
		t = s.Next(now.Add(-back))
	}
	if t.After(now) {
		return now.Truncate(time.Second)
	}
	for {
		n := s.Next(t)
		if n.After(now) {
			return t
		}
		t = n
	}
}

// Job is one scheduled job. Local jobs run in every process (for
// per-process state) and take no lock.
type Job struct {
	Name     string
	Schedule string
	Local    bool
	Run      func(ctx context.Context, tick time.Time) error
}

// Locker is what the tick lock needs from Redis.
type Locker interface {
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
}

// Options are what a Runner needs. Redis and Prefix are required for
// jobs that are not Local.
type Options struct {
	Redis      Locker
	Prefix     string
	Owner      string // names this process in the lock; default "aupd"
	Timeout    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
	// StopWait bounds how long Run waits, once its context is done, for
	// running jobs to see their cancelled context and return; default
	// 5s, so that shutdown ends well inside a service manager's stop
	// timeout (systemd's TimeoutStopSec, Kubernetes' grace period).
	StopWait time.Duration
}

// Runner runs jobs on their schedules.
type Runner struct {
	opts Options
	log  *slog.Logger
	cron *cron.Cron
	// base is the context of every run: Run cancels it at shutdown.
	base    context.Context
	stop    context.CancelFunc
	runs    *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	last    *prometheus.GaugeVec
}

// New checks the jobs and returns their runner.
func New(opts Options, jobs []Job) (*Runner, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Owner == "" {
		opts.Owner = "aupd"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.StopWait <= 0 {
		opts.StopWait = 5 * time.Second
	}
	r := &Runner{
		opts: opts, log: opts.Logger.With("component", "jobs"),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_job_runs_total",
			Help: "Runs of scheduled jobs by name and result: ok, error, skipped (another process took the tick).",
		}, []string{"name", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "aupd_job_duration_seconds", Help: "Duration of scheduled job runs.",
			Buckets: []float64{.01, .05, .25, 1, 5, 30, 120, 600},
		}, []string{"name"}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "aupd_job_last_success_timestamp_seconds", Help: "Unix time of the last successful run of each scheduled job in this process.",
		}, []string{"name"}),
	}
	clog := cronLogger{r.log}
	r.base, r.stop = context.WithCancel(context.Background())
	r.cron = cron.New(cron.WithParser(parser), cron.WithLogger(clog), cron.WithChain(cron.Recover(clog)))
	for _, j := range jobs {
		if j.Schedule == "" {
			continue
		}
		if !j.Local && opts.Redis == nil {
			return nil, fmt.Errorf("job %s: no redis for its lock", j.Name)
		}
		s, err := Parse(j.Schedule)
		if err != nil {
			return nil, fmt.Errorf("job %s: schedule %q: %w", j.Name, j.Schedule, err)
		}
		for _, res := range []string{"ok", "error", "skipped"} {
			r.runs.WithLabelValues(j.Name, res)
		}
		r.cron.Schedule(s, cron.FuncJob(func() { _, _ = r.runOnce(r.base, j, s) }))
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.runs, r.seconds, r.last} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("jobs: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Run runs the schedule until ctx is done. Then it starts no more runs,
// cancels the context of those running, and waits for them up to
// StopWait: a job stopped there is as if the process had stopped (each
// job resumes at its next tick), which beats being killed by the service
// manager mid-write.
func (r *Runner) Run(ctx context.Context) error {
	r.cron.Start()
	<-ctx.Done()
	done := r.cron.Stop().Done()
	r.stop()
	t := time.NewTimer(r.opts.StopWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.log.Warn("shutdown: a scheduled job did not stop in time; leaving it", "waited", r.opts.StopWait)
	}
	return nil
}

// RunNow runs one job's current tick as the schedule would (lock
// included), for tests and for `aupd` operators' one-off runs.
func (r *Runner) RunNow(ctx context.Context, j Job) (ran bool, err error) {
	s, err := Parse(j.Schedule)
	if err != nil {
		return false, err
	}
	return r.runOnce(ctx, j, s)
}

// runOnce runs one tick of a job, unless another process has taken it.
func (r *Runner) runOnce(ctx context.Context, j Job, s cron.Schedule) (bool, error) {
	now := r.opts.Now()
	tick := Tick(s, now)
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	log := r.log.With("job", j.Name, "tick", tick)
	if !j.Local {
		// The lock lasts until the next tick: a process whose clock or
		// scheduler lags cannot run the same tick late.
		ttl := max(s.Next(tick).Sub(now), time.Second)
		key := r.opts.Prefix + ":cron:" + j.Name + ":" + strconv.FormatInt(tick.Unix(), 10)
		ok, err := r.opts.Redis.SetNX(ctx, key, r.opts.Owner, ttl).Result()
		if err != nil {
			r.runs.WithLabelValues(j.Name, "error").Inc()
			log.Warn("take job lock", "err", err)
			return false, fmt.Errorf("job %s: lock: %w", j.Name, err)
		}
		if !ok {
			r.runs.WithLabelValues(j.Name, "skipped").Inc()
			log.Debug("tick taken by another process")
			return false, nil
		}
	}
	start := time.Now()
	err := j.Run(ctx, tick)
	r.seconds.WithLabelValues(j.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		r.runs.WithLabelValues(j.Name, "error").Inc()
		log.Warn("job failed", "err", err)
		return true, err
	}
	r.runs.WithLabelValues(j.Name, "ok").Inc()
	r.last.WithLabelValues(j.Name).Set(float64(r.opts.Now().Unix()))
	return true, nil
}

// cronLogger adapts slog to cron.Logger.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
