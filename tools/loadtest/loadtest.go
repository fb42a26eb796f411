// Package loadtest is aupload: it measures aupd's end-to-end throughput on
// real NATS and Redis beside the ceilings of its parts, measured in the
// same run, and the Redis memory an account takes.
package loadtest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/app"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// Config is what a run does.
type Config struct {
	Events   int
	Accounts int
	Batch    int
	Workers  int
	// FillWait is nats.consumer.fill_wait (0: aupd's default; negative:
	// none, a fetch waits max_wait to fill its batch).
	FillWait   time.Duration
	Timeout    time.Duration // bound on each wait
	RedisAddr  string
	NATSURL    string // empty: an in-process server in a temporary directory
	Phases     string // any of "abcde"
	Rounds     int    // rounds of phase c, each followed by a ceiling measure when b runs too
	MemAccts   int    // accounts per memory measurement
	CPUProfile string // file for a CPU profile of the end-to-end phase's first round
	// EnforceAccounts accounts cross the threshold in phase e, one every
	// EnforceEvery.
	EnforceAccounts int
	EnforceEvery    time.Duration
	Seed            uint64
	Out             io.Writer
	Log             *slog.Logger
}

type runner struct {
	cfg    Config
	out    io.Writer
	rdb    *redis.Client
	url    string
	prefix string // every key of the run starts with it
	rows   []row
	ceilA  float64
	// ceil[0] is phase b's JetStream ceiling, ceil[i] the one measured
	// right after round i of phase c; e2e[i-1] and e2eConc[i-1] are that
	// round's end-to-end events/s draining a backlog and while publishing
	// concurrently.
	ceil    []float64
	e2e     []float64
	e2eConc []float64
	mem50   float64
	mem3    float64
	enforce *Enforcement // phase e's figures
}

type row struct{ phase, figure, value string }

func (r *runner) add(phase, figure, format string, args ...any) {
	r.rows = append(r.rows, row{phase, figure, fmt.Sprintf(format, args...)})
	fmt.Fprintf(r.out, "  %-34s %s\n", figure, fmt.Sprintf(format, args...))
}

// Run runs the phases and prints the figures.
func Run(ctx context.Context, cfg Config) error {
	_, err := run(ctx, cfg)
	return err
}

// run runs the phases and returns the runner, which holds their figures.
func run(ctx context.Context, cfg Config) (*runner, error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 1
	}
	cfg.EnforceAccounts = cmp.Or(cfg.EnforceAccounts, 200)
	cfg.EnforceEvery = cmp.Or(cfg.EnforceEvery, 50*time.Millisecond)
	if cfg.Events < 1 || cfg.Accounts < 1 || cfg.Batch < 1 || cfg.Workers < 1 || cfg.Rounds < 1 || cfg.EnforceAccounts < 1 || cfg.EnforceEvery < 0 {
		return nil, errors.New("events, accounts, batch, workers, rounds and enforcement accounts must be positive")
	}
	r := &runner{cfg: cfg, out: cfg.Out, prefix: "aupload" + randomHex(4)}
	return r, r.run(ctx)
}

func (r *runner) run(ctx context.Context) error {
	cfg := r.cfg
	r.rdb = redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, Protocol: 2, PoolSize: 4 * runtime.GOMAXPROCS(0)})
	defer r.rdb.Close()
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", cfg.RedisAddr, err)
	}
	defer r.cleanup()

	r.url = cfg.NATSURL
	if r.url == "" {
		dir, err := os.MkdirTemp("", "aupload-nats-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, MaxPayload: 8 << 20})
		if err != nil {
			return fmt.Errorf("nats server: %w", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			return errors.New("nats server did not start")
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		r.url = ns.ClientURL()
	}
	r.header(ctx)

	now := time.Now()
	evs := Generate(cfg.Events, cfg.Accounts, cfg.Seed, "e", now)
	size := 0
	for _, e := range evs {
		size += len(e.Data)
	}
	fmt.Fprintf(r.out, "load: %d events for %d accounts, mean payload %d bytes, batch %d, workers %d, fill wait %s\n\n",
		len(evs), cfg.Accounts, size/len(evs), cfg.Batch, cfg.Workers, r.fillWait())

	type phase struct {
		key, label, title string
		fn                func(context.Context) error
	}
	phases := []phase{
		{"a", "a", "a. Redis script alone (store.Ingest, pipelined, no NATS)", func(ctx context.Context) error { return r.redisAlone(ctx, evs) }},
		{"b", "b", "b. JetStream consume+ack alone (no decoding, no Redis)", func(ctx context.Context) error { return r.jetstreamAlone(ctx, evs) }},
	}
	// Rounds of the end-to-end phase, each with events of its own, and
	// the ceiling measured again after each: a machine whose speed drifts
	// moves the ceilings around a round as it moved the round.
	for i := 1; i <= cfg.Rounds; i++ {
		c, b := "c", "b'"
		if cfg.Rounds > 1 {
			c, b = fmt.Sprintf("c%d", i), fmt.Sprintf("b'%d", i)
		}
		phases = append(phases,
			phase{"c", c, c + ". End to end (aupd in-process via app.Run)", func(ctx context.Context) error {
				round := evs
				if i > 1 { // made when the round starts, so that no round's events wait in memory through the others
					round = Generate(cfg.Events, cfg.Accounts, cfg.Seed+uint64(2*i), fmt.Sprintf("e%d", i), time.Now())
				}
				return r.endToEnd(ctx, round, i, c)
			}},
			phase{"bc", b, b + ". JetStream consume+ack alone again, after that end-to-end round", func(ctx context.Context) error { return r.ceilingAgain(ctx, evs, b) }})
	}
	phases = append(phases, phase{"d", "d", "d. Redis memory per account", func(ctx context.Context) error { return r.memory(ctx) }},
		phase{"e", "e", "e. Time to enforcement: crossing verdict to the policy server's refusal, at about half the drain rate",
			func(ctx context.Context) error {
				all := evs
				evs = nil // the last phase: its events are let go once published (enforcement)
				return r.enforcement(ctx, all)
			}})
	for _, p := range phases {
		if !strings.Contains(cfg.Phases, p.key[:1]) || !strings.Contains(cfg.Phases, p.key[len(p.key)-1:]) {
			continue
		}
		fmt.Fprintln(r.out, p.title)
		if err := p.fn(ctx); err != nil {
			return fmt.Errorf("phase %s: %w", p.label, err)
		}
		fmt.Fprintln(r.out)
	}
	r.summary()
	return nil
}

func (r *runner) header(ctx context.Context) {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	rv := "?"
	if info, err := r.rdb.Info(ctx, "server").Result(); err == nil {
		rv = infoField(info, "redis_version")
	}
	where := "in-process (nats-server/v2 " + server.VERSION + ", JetStream file store in a temp dir)"
	if r.cfg.NATSURL != "" {
		where = r.cfg.NATSURL
	}
	fmt.Fprintf(r.out, "aupload: %s, %d CPUs (GOMAXPROCS %d), %s\n", model, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(r.out, "load average at start: %s", load)
	fmt.Fprintf(r.out, "redis %s at %s (key prefix %s, deleted at the end); nats %s\n", rv, r.cfg.RedisAddr, r.prefix, where)
}

// cleanup deletes every key of the run.
func (r *runner) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	iter := r.rdb.Scan(ctx, 0, r.prefix+"*", 1000).Iterator()
	var keys []string
	n := 0
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			n += int(r.rdb.Unlink(ctx, keys...).Val())
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		n += int(r.rdb.Unlink(ctx, keys...).Val())
	}
	fmt.Fprintf(r.out, "deleted %d keys under %s\n", n, r.prefix)
}

// ---- a. Redis alone ----------------------------------------------------.

// storeBatches shapes events as the worker does: chunks of batch events,
// grouped by account, external inbound left out.
func storeBatches(evs []Event, batch int, pol rules.Policy, maxTracked int) [][]store.Batch {
	var out [][]store.Batch
	for lo := 0; lo < len(evs); lo += batch {
		chunk := evs[lo:min(lo+batch, len(evs))]
		idx := map[string]int{}
		var bs []store.Batch
		for i, e := range chunk {
			if e.Direction == rules.Inbound && !e.Local {
				continue
			}
			j, ok := idx[e.Account]
			if !ok {
				j = len(bs)
				idx[e.Account] = j
				bs = append(bs, store.Batch{Account: e.Account, Company: companyOf(e.Account), Threshold: pol.Threshold,
					Cap: max(maxTracked, pol.Threshold+1), Action: pol.OnCrossing()})
			}
			it := store.Item{ID: e.ID, Time: e.Time, Kind: rules.KindOf(e.Direction, e.Verdict), Counting: pol.Counts(e.Direction, e.Verdict, true)}
			if it.Counting {
				it.Seq, it.Fingerprint = uint64(lo+i+1), uint32(e.Time.UnixNano()%7)+1
			}
			bs[j].Items = append(bs[j].Items, it)
		}
		out = append(out, bs)
	}
	return out
}

func companyOf(account string) string {
	switch {
	case strings.HasSuffix(account, "@"+domainA):
		return "acme"
	case strings.HasSuffix(account, "@"+domainB):
		return "globex"
	}
	return ""
}

// ingestParams are the worker's parameters of an Ingest call, with
// Redis's clock.
func ingestParams(window time.Duration) store.IngestParams {
	return store.IngestParams{Window: window, Skew: config.Default().AUP.FutureSkew}
}

func defaultPolicy() (rules.Policy, int, time.Duration) {
	a := config.Default().AUP
	return rules.Policy{Threshold: a.Threshold, Directions: a.Directions, Verdicts: a.Verdicts, Mode: a.Mode}, a.MaxTracked, a.Window
}

func (r *runner) redisAlone(ctx context.Context, evs []Event) error {
	pol, maxTracked, window := defaultPolicy()
	chunks := storeBatches(evs, r.cfg.Batch, pol, maxTracked)
	st := store.New(r.rdb, r.prefix+"a")
	work := make(chan []store.Batch, len(chunks))
	for _, c := range chunks {
		work <- c
	}
	close(work)
	var lat []time.Duration
	var mu sync.Mutex
	var calls, failed atomic.Int64
	// statistics-only events are gathered and written once a second, as
	// the worker does, and at the end
	params := ingestParams(window)
	params.Stats = st.NewStats(0)
	var statsErr atomic.Pointer[error]
	flush := func() {
		if err := params.Stats.Flush(ctx); err != nil {
			statsErr.Store(&err)
		}
	}
	cpu0 := r.cpuNow(ctx)
	start := time.Now()
	stop := make(chan struct{})
	var flusher sync.WaitGroup
	flusher.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				flush()
			case <-stop:
				return
			}
		}
	})
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for bs := range work {
				t := time.Now()
				res, err := st.Ingest(ctx, bs, params)
				d := time.Since(t)
				calls.Add(int64(len(bs)))
				if err != nil {
					failed.Add(int64(len(bs)))
				}
				for _, x := range res {
					if x.Err != nil {
						failed.Add(1)
					}
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	flusher.Wait()
	flush()
	el := time.Since(start)
	cpu1 := r.cpuNow(ctx)
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d script calls failed", f)
	}
	if err := statsErr.Load(); err != nil {
		return fmt.Errorf("write statistics: %w", *err)
	}
	r.ceilA = float64(len(evs)) / el.Seconds()
	r.add("a", "events/s", "%.0f  (%d events in %s, %d concurrent callers)", r.ceilA, len(evs), el.Round(time.Millisecond), r.cfg.Workers)
	r.add("a", "accounts (per batch)", "%d (%.1f per batch of %d; those with only statistics-only events make no script call)", calls.Load(), float64(calls.Load())/float64(len(chunks)), r.cfg.Batch)
	r.add("a", "CPU per event", "%s", cpuPerEvent(cpu0, cpu1, len(evs)))
	p := percentiles(lat)
	r.add("a", "Ingest call latency p50/p90/p99", "%s / %s / %s (measured per call)", ms(p[0]), ms(p[1]), ms(p[2]))
	return nil
}

// ---- b. JetStream alone -------------------------------------------------.

// ceiling measures JetStream's fetch+ack alone: evs published into a
// stream of their own, then consumed by aupd's own fetch loop with nothing
// but the acks in it. It stops at the last ack, whose time ends the
// measurement (the loops' fetches still waiting then are not the
// server's work). It returns events/s and adds the phase's rows.
func (r *runner) ceiling(ctx context.Context, evs []Event, phase, tag string) (float64, error) {
	nc, js, err := r.connect()
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	name := "AUPLOAD_" + strings.ToUpper(r.prefix) + tag
	subj := "aupload." + r.prefix + tag + "."
	cfg := config.Default().NATS
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Duplicates: cfg.Verdicts.Duplicate, MaxMsgSize: events.MaxPayload})
	if err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	pub, err := r.publish(ctx, js, evs, func(e Event) string { return subj + string(e.Direction) })
	if err != nil {
		return 0, err
	}
	r.add(phase, "publish (async, into the stream)", "%.0f events/s", float64(len(evs))/pub.Seconds())
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "aupload", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.Consumer.AckWait, MaxAckPending: max(cfg.Consumer.MaxAckPending, r.cfg.Batch*r.cfg.Workers), MaxDeliver: -1})
	if err != nil {
		return 0, err
	}
	var acked atomic.Int64
	var last atomic.Int64 // when the last event was acked (UnixNano)
	n := int64(len(evs))
	cctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	cpu0 := r.cpuNow(ctx)
	start := time.Now()
	pull := consumers.Pull{Consumer: cons, Batch: r.cfg.Batch, MaxWait: cfg.Consumer.MaxWait, FillWait: r.fillWait(),
		Handle: func(msgs []jetstream.Msg) {
			for _, m := range msgs {
				_, _ = consumers.StreamSeq(m.Reply()) // aupd reads each stream sequence so
				_ = m.Ack()
				if acked.Add(1) == n {
					last.Store(time.Now().UnixNano())
					cancel()
				}
			}
		}}
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() { pull.Run(cctx) })
	}
	wg.Wait()
	el := time.Duration(last.Load() - start.UnixNano())
	if acked.Load() < n {
		return 0, fmt.Errorf("acked %d of %d within %s", acked.Load(), n, r.cfg.Timeout)
	}
	rate := float64(n) / el.Seconds()
	r.add(phase, "events/s (Fetch+Ack)", "%.0f  (%d events in %s, %d fetch loops)", rate, n, el.Round(time.Millisecond), r.cfg.Workers)
	r.add(phase, "CPU per event (Fetch+Ack)", "%s", cpuPerEvent(cpu0, r.cpuNow(ctx), int(n)))
	return rate, nil
}

func (r *runner) jetstreamAlone(ctx context.Context, evs []Event) error {
	if r.cfg.NATSURL != "" {
		nc, js, err := r.connect()
		if err != nil {
			return err
		}
		_, err = js.StreamNameBySubject(ctx, events.SubjectPrefix+"outbound")
		nc.Close()
		if err == nil {
			return fmt.Errorf("the NATS server already has a stream on %s>; aupload needs a server with no aupd streams", events.SubjectPrefix)
		}
	}
	rate, err := r.ceiling(ctx, evs, "b", "")
	if err != nil {
		return err
	}
	r.ceil = append(r.ceil, rate)

	// Decoding and validating is CPU work the end-to-end path adds.
	start := time.Now()
	for _, e := range evs {
		if _, err := events.ParseVerdict(e.Subject, e.Data, time.Now(), 5*time.Minute); err != nil {
			return fmt.Errorf("generated event is invalid: %w", err)
		}
	}
	el := time.Since(start)
	r.add("b", "events.ParseVerdict, one core", "%.0f events/s (%.1f µs each)", float64(len(evs))/el.Seconds(), float64(el.Microseconds())/float64(len(evs)))
	return nil
}

func (r *runner) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(r.url, nats.Name("aupload"))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// publish publishes evs asynchronously and waits for every ack.
func (r *runner) publish(ctx context.Context, js jetstream.JetStream, evs []Event, subject func(Event) string) (time.Duration, error) {
	start := time.Now()
	for _, e := range evs {
		for {
			_, err := js.PublishAsync(subject(e), e.Data)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return 0, fmt.Errorf("publish: %w", err)
			}
			// the server is behind: let the outstanding acks come
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(r.cfg.Timeout):
				return 0, errors.New("publish acks did not arrive")
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(r.cfg.Timeout):
		return 0, errors.New("publish acks did not arrive")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

// ---- c. End to end -------------------------------------------------------.

// fillWait is the run's nats.consumer.fill_wait.
func (r *runner) fillWait() time.Duration {
	switch {
	case r.cfg.FillWait < 0:
		return 0
	case r.cfg.FillWait == 0:
		return config.Default().NATS.Consumer.FillWait
	}
	return r.cfg.FillWait
}

// appConfig is the config of an in-process aupd whose data is in dir and
// whose Redis keys are under r.prefix+keys.
func (r *runner) appConfig(dir, keys string) (*config.Config, error) {
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.URL = r.url
	cfg.NATS.Consumer.Batch = r.cfg.Batch
	cfg.NATS.Consumer.Workers = r.cfg.Workers
	cfg.NATS.Consumer.FillWait = r.fillWait()
	cfg.NATS.Consumer.MaxAckPending = max(cfg.NATS.Consumer.MaxAckPending, r.cfg.Batch*r.cfg.Workers)
	cfg.Redis.Addrs = []string{r.cfg.RedisAddr}
	cfg.Redis.Prefix = r.prefix + keys // each phase's and round's accounts start empty
	cfg.Redis.Autostart = false
	cfg.Notifier.EMLDir = filepath.Join(dir, "notices")
	if err := os.MkdirAll(cfg.Notifier.EMLDir, 0o750); err != nil {
		return nil, err
	}
	cfg.Policy.Postfix.Listen = ""
	cfg.Policy.Postfix.UnixSocket = ""
	cfg.Policy.Dovecot.Listen = ""
	cfg.Companies = []companies.Company{
		{ID: "acme", Name: "Acme", Domains: []string{domainA}, AbuseContact: "abuse@" + domainA},
		{ID: "globex", Name: "Globex", Domains: []string{domainB}, AbuseContact: "abuse@" + domainB},
	}
	return cfg, cfg.Validate()
}

// aupdSetup is what an in-process aupd of a phase needs: its config,
// with a data directory of its own, and a connection to NATS, where the
// verdict stream is created and no other aupd stream is.
type aupdSetup struct {
	cfg *config.Config
	nc  *nats.Conn
	js  jetstream.JetStream
	dir string
}

// setup prepares an in-process aupd whose Redis keys are under
// r.prefix+keys; edit, if it must, its config before it starts.
func (r *runner) setup(ctx context.Context, keys string) (*aupdSetup, error) {
	dir, err := os.MkdirTemp("", "aupload-aupd-")
	if err != nil {
		return nil, err
	}
	s := &aupdSetup{dir: dir}
	if s.cfg, err = r.appConfig(dir, keys); err != nil {
		s.close()
		return nil, err
	}
	nc, js, err := r.connect()
	if err != nil {
		s.close()
		return nil, err
	}
	s.nc = nc
	if name, err := js.StreamNameBySubject(ctx, events.SubjectPrefix+"outbound"); err == nil {
		s.close()
		return nil, fmt.Errorf("the NATS server already has stream %s on %s>; aupload needs a server with no aupd streams", name, events.SubjectPrefix)
	}
	s.js = js // from here on, close deletes aupd's streams
	if _, err := app.EnsureStream(ctx, s.js, s.cfg.NATS.Verdicts, []string{events.SubjectPrefix + ">"}); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// close deletes aupd's streams, so that the next phase or round starts
// from none as this one did, closes the connection and removes the
// directory.
func (s *aupdSetup) close() {
	if s.js != nil {
		for _, name := range []string{s.cfg.NATS.Verdicts.Name, s.cfg.NATS.Accounts.Name, s.cfg.NATS.Dead.Name} {
			_ = s.js.DeleteStream(context.Background(), name)
		}
	}
	if s.nc != nil {
		s.nc.Close()
	}
	_ = os.RemoveAll(s.dir)
}

// startAupd runs aupd in-process with cfg and returns once it is ready,
// with what it listens on and the function that stops it (and returns
// what app.Run returned; calling it again returns the same).
func (r *runner) startAupd(ctx context.Context, cfg *config.Config) (app.Info, func() error, error) {
	actx, cancel := context.WithCancel(ctx)
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(actx, app.Options{Config: cfg, Logger: r.cfg.Log, OnReady: func(i app.Info) { ready <- i }})
	}()
	var stopped bool
	var stopErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	select {
	case info := <-ready:
		return info, stop, nil
	case err := <-done:
		cancel()
		return app.Info{}, nil, fmt.Errorf("aupd exited: %w", err)
	case <-time.After(30 * time.Second):
		_ = stop()
		return app.Info{}, nil, errors.New("aupd did not start")
	}
}

func (r *runner) endToEnd(ctx context.Context, evs []Event, round int, label string) error {
	s, err := r.setup(ctx, "c"+strconv.Itoa(round))
	if err != nil {
		return err
	}
	defer s.close()
	cfg, js := s.cfg, s.js
	pub, err := r.publish(ctx, js, evs, func(e Event) string { return e.Subject })
	if err != nil {
		return err
	}
	r.add(label, "backlog published", "%d events in %s (%.0f events/s)", len(evs), pub.Round(time.Millisecond), float64(len(evs))/pub.Seconds())

	if r.cfg.CPUProfile != "" && round == 1 {
		f, err := os.Create(r.cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	info, stop, err := r.startAupd(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = stop() }()

	cons, err := js.Consumer(ctx, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable)
	if err != nil {
		return err
	}
	// Backlog drain: from the first delivery to nothing pending or unacked.
	cpu0 := r.cpuNow(ctx)
	first, last, err := r.waitDrained(ctx, cons, uint64(len(evs)))
	if err != nil {
		return err
	}
	cpu1 := r.cpuNow(ctx)
	m1, err := Scrape(ctx, info.HTTPAddr)
	if err != nil {
		return err
	}
	el := last.Sub(first)
	drain := float64(len(evs)) / el.Seconds()
	r.e2e = append(r.e2e, drain)
	r.add(label, "events/s, backlog drain", "%.0f  (%d events, first delivery to last ack %s)", drain, len(evs), el.Round(time.Millisecond))
	r.batchFigures(label, "backlog", m1, nil)
	r.add(label, "CPU per event (backlog drain)", "%s", cpuPerEvent(cpu0, cpu1, len(evs)))

	// The same volume again, published while aupd consumes.
	evs2 := Generate(len(evs), r.cfg.Accounts, r.cfg.Seed+uint64(2*round-1), fmt.Sprintf("f%d", round), time.Now())
	start := time.Now()
	pub2, err := r.publish(ctx, js, evs2, func(e Event) string { return e.Subject })
	if err != nil {
		return err
	}
	_, last2, err := r.waitDrained(ctx, cons, uint64(2*len(evs)))
	if err != nil {
		return err
	}
	m2, err := Scrape(ctx, info.HTTPAddr)
	if err != nil {
		return err
	}
	el2 := last2.Sub(start)
	conc := float64(len(evs2)) / el2.Seconds()
	r.e2eConc = append(r.e2eConc, conc)
	r.add(label, "events/s, publishing concurrently", "%.0f  (%d events, publish start to last ack %s; publishing alone took %s)",
		conc, len(evs2), el2.Round(time.Millisecond), pub2.Round(time.Millisecond))
	r.batchFigures(label, "concurrent", m2, m1)

	var susp, dead float64
	for k, v := range m2 {
		switch {
		case strings.HasPrefix(k, "aupd_suspensions_total{") && Label(k, "action") == "suspend":
			susp += v
		case strings.HasPrefix(k, "aupd_dead_letters_total"):
			dead += v
		}
	}
	outcome := func(o string) float64 {
		var s float64
		for k, v := range m2 {
			if strings.HasPrefix(k, "aupd_events_total{") && strings.Contains(k, `outcome="`+o+`"`) {
				s += v
			}
		}
		return s
	}
	r.add(label, "outcomes (both runs)", "counted %.0f, stats %.0f, duplicate %.0f, late %.0f, capped %.0f, external %.0f",
		outcome("counted"), outcome("stats"), outcome("duplicate"), outcome("late"), outcome("capped"), outcome("external"))
	r.add(label, "suspensions, dead letters", "%.0f, %.0f", susp, dead)
	if err := stop(); err != nil {
		return fmt.Errorf("aupd: %w", err)
	}
	return nil
}

// waitDrained polls the consumer until every one of want messages is
// delivered and acked; first is when the first delivery was seen.
func (r *runner) waitDrained(ctx context.Context, cons jetstream.Consumer, want uint64) (first, last time.Time, err error) {
	deadline := time.Now().Add(r.cfg.Timeout)
	for time.Now().Before(deadline) {
		info, err := cons.Info(ctx)
		if err != nil {
			return first, last, err
		}
		t := time.Now()
		if first.IsZero() && info.Delivered.Stream > 0 {
			first = t
		}
		if info.AckFloor.Stream >= want && info.NumPending == 0 && info.NumAckPending == 0 {
			return first, t, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return first, last, fmt.Errorf("consumer did not drain within %s", r.cfg.Timeout)
}

// Scrape reads an aupd process's /metrics into name{labels} -> value.
func Scrape(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, nil
}

// batchFigures prints the batch latency percentiles estimated from the
// aupd_batch_seconds buckets (the difference since base when given).
func (r *runner) batchFigures(label, what string, m, base map[string]float64) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range m {
		le, ok := strings.CutPrefix(k, `aupd_batch_seconds_bucket{le="`)
		if !ok {
			continue
		}
		le = strings.TrimSuffix(le, `"}`)
		f, err := strconv.ParseFloat(le, 64)
		if err != nil {
			f = math.Inf(1)
		}
		bs = append(bs, bucket{f, v - base[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	total := m["aupd_batch_seconds_count"] - base["aupd_batch_seconds_count"]
	if total == 0 || len(bs) == 0 {
		return
	}
	q := func(p float64) string {
		rank := p * total
		prevLE, prevN := 0.0, 0.0
		for _, b := range bs {
			if b.n >= rank {
				if math.IsInf(b.le, 1) {
					return fmt.Sprintf("> %s", ms(time.Duration(prevLE*float64(time.Second))))
				}
				frac := 0.0
				if b.n > prevN {
					frac = (rank - prevN) / (b.n - prevN)
				}
				return ms(time.Duration((prevLE + frac*(b.le-prevLE)) * float64(time.Second)))
			}
			prevLE, prevN = b.le, b.n
		}
		return "?"
	}
	sum := m["aupd_batch_seconds_sum"] - base["aupd_batch_seconds_sum"]
	sizeSum := m["aupd_batch_size_sum"] - base["aupd_batch_size_sum"]
	sizeN := m["aupd_batch_size_count"] - base["aupd_batch_size_count"]
	r.add(label, "batch latency p50/p90/p99 ("+what+")", "%s / %s / %s, mean %s over %.0f batches of %.0f events on average",
		q(0.5), q(0.9), q(0.99), ms(time.Duration(sum/total*float64(time.Second))), total, sizeSum/max(sizeN, 1))
}

// ---- d. Memory -------------------------------------------------------------.

func (r *runner) memory(ctx context.Context) error {
	for _, n := range []int{50, 3} {
		per, delta, err := r.memoryOf(ctx, n)
		if err != nil {
			return err
		}
		if n == 50 {
			r.mem50 = per
		} else {
			r.mem3 = per
		}
		r.add("d", fmt.Sprintf("%d counted events: bytes/account", n), "%.0f by MEMORY USAGE of its keys; %.0f by INFO used_memory delta (index sets included)", per, delta)
	}
	return nil
}

// memoryOf fills MemAccts accounts with n counted events each, as the
// worker would (samples offered, company set, indexed), and returns the
// mean MEMORY USAGE summed over each account's keys and the used_memory
// delta per account.
func (r *runner) memoryOf(ctx context.Context, n int) (float64, float64, error) {
	prefix := fmt.Sprintf("%sd%d", r.prefix, n)
	st := store.New(r.rdb, prefix)
	pol, maxTracked, window := defaultPolicy()
	pol.Threshold = max(pol.Threshold, n) // exactly n, never a crossing
	now := time.Now()
	accts := MemoryAccounts(r.cfg.MemAccts)
	before, err := usedMemory(ctx, r.rdb)
	if err != nil {
		return 0, 0, err
	}
	for lo := 0; lo < len(accts); lo += 100 {
		var bs []store.Batch
		for _, a := range accts[lo:min(lo+100, len(accts))] {
			bs = append(bs, MemoryBatch(a, n, now, pol, maxTracked))
		}
		res, err := st.Ingest(ctx, bs, ingestParams(window))
		if err != nil {
			return 0, 0, err
		}
		for _, x := range res {
			if x.Err != nil || x.Count != n {
				return 0, 0, fmt.Errorf("ingest: count %d err %w", x.Count, x.Err)
			}
		}
	}
	after, err := usedMemory(ctx, r.rdb)
	if err != nil {
		return 0, 0, err
	}
	total, err := AccountMemory(ctx, r.rdb, prefix, accts)
	if err != nil {
		return 0, 0, err
	}
	return float64(total) / float64(len(accts)), float64(after-before) / float64(len(accts)), nil
}

// MemoryAccounts returns n account names like the load's.
func MemoryAccounts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("mem%06d@%s", i, domainA)
	}
	return out
}

// MemoryBatch is one account's batch of n counted events with samples, as
// the worker makes it.
func MemoryBatch(account string, n int, now time.Time, pol rules.Policy, maxTracked int) store.Batch {
	b := store.Batch{Account: account, Company: "acme", Threshold: pol.Threshold, Cap: max(maxTracked, pol.Threshold+1), Action: pol.OnCrossing()}
	for i := range n {
		b.Items = append(b.Items, store.Item{
			ID: fmt.Sprintf("%s-%d-%x", account, i, now.UnixNano()), Time: now.Add(-time.Duration(i) * time.Minute),
			Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true,
			Fingerprint: uint32(i%5) + 1, Seq: uint64(1_000_000 + i),
		})
	}
	return b
}

// AccountMemory sums MEMORY USAGE (SAMPLES 0: exact) over every
// account's keys.
func AccountMemory(ctx context.Context, rdb *redis.Client, prefix string, accounts []string) (int64, error) {
	var total int64
	for lo := 0; lo < len(accounts); lo += 200 {
		pipe := rdb.Pipeline()
		var cmds []*redis.IntCmd
		for _, a := range accounts[lo:min(lo+200, len(accounts))] {
			for _, suf := range []string{"s", "w", "t", "o", "h"} {
				cmds = append(cmds, pipe.MemoryUsage(ctx, store.AccountKey(prefix, a, suf), 0))
			}
		}
		_, _ = pipe.Exec(ctx)
		for _, c := range cmds {
			v, err := c.Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return 0, err
			}
			total += v
		}
	}
	return total, nil
}

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
}

func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// ---- summary ---------------------------------------------------------------.

// ceilingAgain measures the ceiling again, right after an end-to-end
// round: a round's ratios use the mean of the measures before and after
// it, so that a machine whose speed drifts during the run (a virtual one,
// say) moves the ceiling as it moved the round in between.
func (r *runner) ceilingAgain(ctx context.Context, evs []Event, label string) error {
	rate, err := r.ceiling(ctx, evs, label, fmt.Sprintf("B%d", len(r.ceil)))
	if err != nil {
		return err
	}
	r.ceil = append(r.ceil, rate)
	return nil
}

// median of xs (the mean of the middle two when even); it sorts xs in
// place.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func (r *runner) summary() {
	fmt.Fprintln(r.out, "summary")
	fmt.Fprintf(r.out, "  %-6s %-34s %s\n", "phase", "figure", "value")
	for _, x := range r.rows {
		fmt.Fprintf(r.out, "  %-6s %-34s %s\n", x.phase, x.figure, x.value)
	}
	fmt.Fprintln(r.out)
	if len(r.e2e) > 0 && len(r.ceil) > 0 {
		// The targets are ratios to the JetStream ceiling measured in the
		// same run, so that they hold on any machine: each round against
		// the mean of the measures before and after it, and the verdict on
		// the median round, so that one round at a slow or a fast moment
		// of the machine does not decide it.
		var drain, conc []float64
		for i := range r.e2e {
			ceil := r.ceil[i]
			if i+1 < len(r.ceil) {
				ceil = (r.ceil[i] + r.ceil[i+1]) / 2
				fmt.Fprintf(r.out, "round %d: JetStream fetch+ack ceiling %.0f events/s before, %.0f after, mean %.0f; ", i+1, r.ceil[i], r.ceil[i+1], ceil)
			} else {
				fmt.Fprintf(r.out, "round %d: JetStream fetch+ack ceiling %.0f events/s before; ", i+1, ceil)
			}
			drain, conc = append(drain, r.e2e[i]/ceil), append(conc, r.e2eConc[i]/ceil)
			fmt.Fprintf(r.out, "draining %.0f events/s = %.2fx, publishing concurrently %.0f = %.2fx\n", r.e2e[i], drain[i], r.e2eConc[i], conc[i])
		}
		for _, x := range []struct {
			what   string
			ratios []float64
			target float64
		}{{"draining a backlog", drain, 0.45}, {"publishing concurrently", conc, 0.30}} {
			each := make([]string, len(x.ratios))
			for i, v := range x.ratios {
				each[i] = fmt.Sprintf("%.3fx", v)
			}
			m := median(x.ratios)
			verdict := "meets"
			if m < x.target {
				verdict = "FALLS SHORT of"
			}
			if len(x.ratios) == 1 {
				fmt.Fprintf(r.out, "ratio: end to end %s = %.3fx the JetStream fetch+ack ceiling: %s the %.2fx target\n", x.what, m, verdict, x.target)
				continue
			}
			fmt.Fprintf(r.out, "ratio: end to end %s = %.3fx the JetStream fetch+ack ceiling, the median of %d rounds (%s): %s the %.2fx target\n",
				x.what, m, len(x.ratios), strings.Join(each, ", "), verdict, x.target)
		}
	}
	if r.ceilA > 0 && len(r.ceil) > 0 {
		var sum float64
		for _, c := range r.ceil {
			sum += c
		}
		ceil := sum / float64(len(r.ceil))
		fmt.Fprintf(r.out, "ratio: the Redis script alone %.0f events/s = %.2fx the JetStream ceiling (the mean of its %d measures, %.0f)\n", r.ceilA, r.ceilA/ceil, len(r.ceil), ceil)
	}
	if r.mem50 > 0 {
		verdict := "within"
		if r.mem50 > 1024 {
			verdict = "OVER"
		}
		fmt.Fprintf(r.out, "memory: %.0f bytes for an account with 50 counted events (%s the 1024-byte budget); %.0f bytes with 3.\n", r.mem50, verdict, r.mem3)
	}
	r.enforcementSummary()
}

// ---- helpers ---------------------------------------------------------------.

func percentiles(d []time.Duration) [3]time.Duration {
	if len(d) == 0 {
		return [3]time.Duration{}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return [3]time.Duration{at(0.5), at(0.9), at(0.99)}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Label is the value of one label of a series name{a="x",b="y"}, as
// Scrape names it.
func Label(series, name string) string {
	_, rest, ok := strings.Cut(series, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}
