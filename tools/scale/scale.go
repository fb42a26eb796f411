// Package scale measures how aupd scales out on the loopback cluster of
// internal/cluster (3 NATS nodes with R3 streams, a Redis Cluster of 3
// masters with a replica each, aupd with redis.wait_replicas: 1): the
// events/s a backlog drains at with 1, 2 and 3 aupd processes, and the CPU
// each component spends per event (aupd, nats-server, redis-server, each
// summed over its processes; and every Redis master on its own, with the
// ceiling that implies). On one machine every process shares the same
// cores, so events/s does not grow with processes as it would on separate
// hosts; the CPU per event of each component is the figure a capacity
// model is built from (docs/scaling.md, "Scaling figures and a capacity
// model"). With Config.Standalone it drains the backlog once more with
// one aupd on a standalone Redis with a replica, to set the Redis CPU an
// event costs on a Cluster master beside what it costs there. Run it
// from the repository root with `go -C tools run ./cmd/aupload scale`.
package scale

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
	"github.com/aupd/aupd/tools/loadtest"
)

// prefix is the Redis key prefix internal/cluster gives aupd.
const prefix = "aup"

// Config is what a measurement does.
type Config struct {
	Dir        string // the cluster's directory
	AupdBinary string // default: built into Dir
	Events     int    // events of the backlog each run drains
	Accounts   int    // accounts the events are for
	Procs      []int  // aupd processes of each run, in order (default 1, 2, 3)
	Seed       uint64 // seed of the generated events
	// MaxWait is nats.consumer.max_wait of every aupd (0: aupd's default,
	// 100 ms).
	MaxWait time.Duration
	// Timeout bounds each wait: a publish, a drain (default 10m).
	Timeout time.Duration
	// Standalone adds, after the Cluster's runs, a drain of the same
	// backlog by one aupd process on a standalone Redis with a replica
	// (the Cluster nodes' persistence, the same NATS, the same
	// wait_replicas): the Redis CPU an event costs on a Cluster master is
	// printed beside what it costs there.
	Standalone bool
	Log        io.Writer // progress lines (nil: none)
}

func (c *Config) validate() error {
	if c.Dir == "" {
		return errors.New("scale: no directory")
	}
	if c.Events < 1 || c.Accounts < 1 {
		return errors.New("scale: events and accounts must be positive")
	}
	if len(c.Procs) == 0 {
		c.Procs = []int{1, 2, 3}
	}
	for _, n := range c.Procs {
		if n < 1 || n > 16 {
			return fmt.Errorf("scale: %d aupd processes: want 1 to 16", n)
		}
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// Result is what a measurement found.
type Result struct {
	Machine     Machine
	Events      int // events of each backlog
	Accounts    int
	Seed        uint64
	MeanPayload int           // bytes
	Batch       int           // nats.consumer.batch of every aupd
	Workers     int           // nats.consumer.workers
	Threshold   int           // aup.threshold
	Cap         int           // window cap (threshold + 1 by default)
	MaxWait     time.Duration // nats.consumer.max_wait of every aupd
	Runs        []Drain
	Standalone  *Drain // the standalone phase's drain; nil when it did not run
}

// Drain is one drain of the backlog with Procs aupd processes.
type Drain struct {
	Procs int
	// Standalone: aupd counted in the standalone Redis, not the Cluster.
	Standalone bool

	// Publish: the backlog published while no aupd ran, and the NATS CPU
	// that took (storing every event on 3 nodes).
	Published   time.Duration
	PublishNATS time.Duration
	StoredBytes uint64 // the verdict stream's bytes once published (one replica's)

	// The measured window: from the moment every aupd process, started
	// once the backlog was published, was ready, to the moment the
	// consumer had nothing pending or unacknowledged.
	Window       time.Duration
	WindowEvents int64         // events applied in the window (aupd_events_total)
	Batches      int64         // batches applied in the window (aupd_batch_size_count)
	BatchEvents  int64         // their events (aupd_batch_size_sum)
	BatchTime    time.Duration // their time summed (aupd_batch_seconds_sum)
	Aupd         time.Duration // CPU in the window, summed over processes
	NATS         time.Duration
	RedisMasters time.Duration
	RedisRepls   time.Duration
	Shards       []Shard
	NATSNodes    []NATSNode

	// What aupd did with the whole backlog (summed over its processes).
	Outcomes    map[string]int64 // aupd_events_total by outcome
	Suspensions int64
	Notices     int // notices the SMTP sink received
	DeadLetters int64
	RedisErrors int64

	// Redis memory after the run: used_memory over masters less what it
	// was after the reset, the accounts it holds, and the notice hashes.
	RedisBytes   int64
	RedisAccts   int
	AccountBytes int64   // MEMORY USAGE summed over the accounts' keys
	NoticeBytes  []int64 // MEMORY USAGE of each {account}:n:<id> hash

	// Idle is the CPU each component spends per second with the n aupd
	// processes running and nothing to consume (their pull requests, the
	// clusters' heartbeats): part of every window's CPU, whatever its
	// events.
	IdleAupd, IdleNATS, IdleRedis time.Duration

	Problems []string // checks that failed; none when the run is sound
}

// Shard is one Redis master in a run's window.
type Shard struct {
	Master, Replica string
	Share           float64       // share of the backlog's events on its slots
	CPU, ReplicaCPU time.Duration // in the window, every thread
	MainCPU         time.Duration // the master's main thread: commands and scripts
}

// NATSNode is one NATS node's CPU in a run.
type NATSNode struct {
	Name                   string
	CPU, PublishCPU        time.Duration // in the window; while the backlog was published
	StreamLeader, ConsLead bool          // it led the verdict stream, aupd's consumer of it
}

// EventsPerSec is the drain rate in the window.
func (r Drain) EventsPerSec() float64 { return float64(r.WindowEvents) / r.Window.Seconds() }

// MeanBatch is the mean size of the batches applied in the window.
func (r Drain) MeanBatch() float64 {
	if r.Batches == 0 {
		return 0
	}
	return float64(r.BatchEvents) / float64(r.Batches)
}

// PerEvent is d per event of the window, in microseconds.
func (r Drain) PerEvent(d time.Duration) float64 {
	if r.WindowEvents == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(r.WindowEvents)
}

// Redis is the CPU of every Redis node in the window.
func (r Drain) Redis() time.Duration { return r.RedisMasters + r.RedisRepls }

// Events on the shard in the window (its share of them).
func (s Shard) Events(r Drain) float64 { return s.Share * float64(r.WindowEvents) }

// PerEvent is the master's CPU per event on its slots, in microseconds.
func (s Shard) PerEvent(r Drain) float64 {
	if e := s.Events(r); e > 0 {
		return float64(s.CPU.Microseconds()) / e
	}
	return 0
}

// MainPerEvent is the master's main-thread CPU per event, in
// microseconds.
func (s Shard) MainPerEvent(r Drain) float64 {
	if e := s.Events(r); e > 0 {
		return float64(s.MainCPU.Microseconds()) / e
	}
	return 0
}

// MainPerEvent is the masters' main-thread CPU per event on their slots,
// in microseconds: the figure a Cluster master and a standalone Redis are
// compared by.
func (r Drain) MainPerEvent() float64 {
	var d time.Duration
	for _, s := range r.Shards {
		d += s.MainCPU
	}
	return r.perShardEvent(d)
}

// ReplicaPerEvent is the replicas' CPU (every thread) per event on their
// masters' slots, in microseconds.
func (r Drain) ReplicaPerEvent() float64 { return r.perShardEvent(r.RedisRepls) }

func (r Drain) perShardEvent(d time.Duration) float64 {
	var evs float64
	for _, s := range r.Shards {
		evs += s.Events(r)
	}
	if evs == 0 {
		return 0
	}
	return float64(d.Microseconds()) / evs
}

// Ceiling is the events/s the master would take with its main thread,
// which runs one command or script at a time, at a whole core.
func (s Shard) Ceiling(r Drain) float64 {
	if us := s.MainPerEvent(r); us > 0 {
		return 1e6 / us
	}
	return 0
}

// OK reports whether every run is sound.
func (res *Result) OK() bool {
	for _, r := range res.drains() {
		if len(r.Problems) > 0 {
			return false
		}
	}
	return len(res.Runs) > 0
}

// drains are the Cluster's runs, then the standalone drain if any.
func (res *Result) drains() []Drain {
	if res.Standalone == nil {
		return res.Runs
	}
	return append(slices.Clone(res.Runs), *res.Standalone)
}

// name says which run r is, in progress lines and the summary.
func (r Drain) name() string {
	if r.Standalone {
		return "1 aupd, standalone Redis"
	}
	return fmt.Sprintf("%d aupd", r.Procs)
}

type runner struct {
	cfg     Config
	c       *cluster.Cluster
	js      jetstream.JetStream
	rdb     *redis.ClusterClient // the Cluster's
	evs     []loadtest.Event
	streams []string // verdicts, accounts, dead letters
	durable string
	expect  expected
}

// expected is what the backlog must leave, computed from the events.
type expected struct {
	// Events by what aupd must make of them: counting (every copy; each is
	// counted, capped or a duplicate), statistics only, external.
	counting, stats, external int
	windows                   map[string]int // account -> window size (min(distinct counting, cap))
	touched                   []string       // accounts with any Redis state (every local one)
	slots                     map[string]int // account -> hash slot
}

// Run brings up the cluster, drains the backlog once per entry of
// cfg.Procs and returns the figures. err is for a measurement that could
// not run; a run whose checks failed says so in its Problems.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	def := config.Default()
	res := &Result{Machine: machine(), Events: cfg.Events, Accounts: cfg.Accounts, Seed: cfg.Seed,
		Batch: def.NATS.Consumer.Batch, Workers: def.NATS.Consumer.Workers, Threshold: def.AUP.Threshold,
		Cap: max(def.AUP.MaxTracked, def.AUP.Threshold+1), MaxWait: cmp.Or(cfg.MaxWait, def.NATS.Consumer.MaxWait)}
	if out, err := exec.CommandContext(ctx, "nats-server", "--version").Output(); err == nil {
		res.Machine.NATS = strings.TrimSpace(string(out))
	}
	r := &runner{cfg: cfg, durable: def.NATS.Consumer.Durable,
		streams: []string{def.NATS.Verdicts.Name, def.NATS.Accounts.Name, def.NATS.Dead.Name}}
	r.evs = loadtest.Generate(cfg.Events, cfg.Accounts, cfg.Seed, "s", time.Now())
	size := 0
	for _, e := range r.evs {
		size += len(e.Data)
	}
	res.MeanPayload = size / len(r.evs)
	r.expect = expect(r.evs, def.AUP, res.Cap)

	var err error
	r.c, err = cluster.Start(ctx, cluster.Options{
		Dir: cfg.Dir, AupdBinary: cfg.AupdBinary, AupdProcesses: slices.Max(cfg.Procs), NoAupdStart: true, Log: cfg.Log,
		Aupd: cluster.AupdSettings{Threshold: res.Threshold, Replicas: 3, Batch: res.Batch, Workers: res.Workers,
			WaitReplicas: 1, LogLevel: "warn"},
	})
	if err != nil {
		return nil, err
	}
	defer r.c.Close()
	if cfg.MaxWait > 0 {
		// internal/cluster writes no max_wait: add it to the consumer's
		// settings in every config file.
		for _, a := range r.c.Aupd {
			if err := setMaxWait(a.Config, cfg.MaxWait); err != nil {
				return nil, err
			}
		}
	}
	if v, err := r.c.Redis[0].Do(ctx, "INFO", "server"); err == nil {
		for line := range strings.Lines(fmt.Sprint(v)) {
			if x, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				res.Machine.Redis = x
			}
		}
	}
	nc, err := r.c.ConnectNATS("scale")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if r.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return nil, err
	}
	r.rdb = r.c.NewRedisClient()
	defer r.rdb.Close()

	// The first aupd creates the streams and the durable consumers, so
	// that each backlog can wait in the stream while no aupd runs.
	a0 := r.c.Aupd[0]
	if err := a0.StartReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	if err := a0.Terminate(15 * time.Second); err != nil {
		return nil, err
	}
	b := backend{rdb: r.rdb, nodes: r.c.Redis, masters: r.masters}
	for _, n := range cfg.Procs {
		run, err := r.run(ctx, r.c.Aupd[:n], b)
		if err != nil {
			return res, fmt.Errorf("%d aupd processes: %w", n, err)
		}
		res.Runs = append(res.Runs, *run)
	}
	if cfg.Standalone {
		if res.Standalone, err = r.standalone(ctx); err != nil {
			return res, fmt.Errorf("standalone phase: %w", err)
		}
	}
	return res, nil
}

// backend is the Redis a run counts in: the Cluster, or the standalone
// Redis with its replica.
type backend struct {
	rdb        redis.UniversalClient
	nodes      []*cluster.RedisNode // every node, emptied before a run
	masters    func(context.Context) ([]master, error)
	standalone bool
}

// standalone drains the backlog with one aupd process on a standalone
// Redis and its replica, brought up for it and torn down after, so that
// the Cluster's runs do not share the machine with them.
func (r *runner) standalone(ctx context.Context) (*Drain, error) {
	sa, err := r.c.StartStandalone(ctx, 1)
	if err != nil {
		return nil, err
	}
	defer sa.Close()
	rdb := redis.NewClient(&redis.Options{Addr: sa.Redis[0].Addr(), Protocol: 2})
	defer rdb.Close()
	// One master that serves every slot: the shares and the checks are
	// the Cluster's.
	whole := []master{{node: sa.Redis[0], replica: sa.Redis[1], lo: []int{0}, hi: []int{16383}}}
	b := backend{rdb: rdb, nodes: sa.Redis, standalone: true,
		masters: func(context.Context) ([]master, error) { return whole, nil }}
	return r.run(ctx, []*cluster.Aupd{sa.Aupd}, b)
}

// setMaxWait puts nats.consumer.max_wait into an aupd config file that
// internal/cluster wrote.
func setMaxWait(file string, d time.Duration) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	const at = "\n  consumer: {"
	if !bytes.Contains(b, []byte(at)) {
		return fmt.Errorf("%s: no consumer settings to add max_wait to", file)
	}
	b = bytes.Replace(b, []byte(at), []byte(at+"max_wait: "+d.String()+", "), 1)
	return os.WriteFile(file, b, 0o644)
}

// expect computes what the backlog must leave.
func expect(evs []loadtest.Event, a config.AUP, cap int) expected {
	pol := rules.Policy{Threshold: a.Threshold, Directions: a.Directions, Verdicts: a.Verdicts, Mode: a.Mode}
	x := expected{windows: map[string]int{}, slots: map[string]int{}}
	seen := map[string]bool{}
	for _, e := range evs {
		if !e.Local {
			x.external++ // external inbound: statistics only, no Redis
			continue
		}
		if _, ok := x.slots[e.Account]; !ok {
			x.slots[e.Account] = cluster.SlotOf(store.AccountKey(prefix, e.Account, "s"))
			x.touched = append(x.touched, e.Account)
		}
		if !pol.Counts(e.Direction, e.Verdict, e.Local) {
			x.stats++
			continue
		}
		x.counting++
		if !seen[e.ID] {
			seen[e.ID] = true
			x.windows[e.Account]++
		}
	}
	for acct, n := range x.windows {
		x.windows[acct] = min(n, cap)
	}
	return x
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "scale: "+format+"\n", args...)
}

// run drains the backlog once with the aupd processes aupds, which count
// in b.
func (r *runner) run(ctx context.Context, aupds []*cluster.Aupd, b backend) (*Drain, error) {
	run := &Drain{Procs: len(aupds), Standalone: b.standalone}
	n := run.name()
	for _, a := range r.c.Aupd {
		if err := a.Terminate(15 * time.Second); err != nil {
			return nil, err
		}
	}
	if err := r.reset(ctx, b); err != nil {
		return nil, err
	}
	masters, err := b.masters(ctx)
	if err != nil {
		return nil, err
	}
	memBefore, err := r.usedMemory(ctx, masters)
	if err != nil {
		return nil, err
	}
	notices0 := r.c.SMTP.Count()

	// The backlog, while no aupd runs.
	p0, err := r.cpu(ctx, nil, masters)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if run.StoredBytes, err = r.publish(ctx); err != nil {
		return nil, err
	}
	run.Published = time.Since(start)
	p1, err := r.cpu(ctx, nil, masters)
	if err != nil {
		return nil, err
	}
	run.PublishNATS = p1.nats - p0.nats
	r.logf("%s: published %d events in %s (%.0f/s)", n, len(r.evs), run.Published.Round(time.Millisecond), float64(len(r.evs))/run.Published.Seconds())

	// The processes start at once. The window opens when every one is
	// ready: what a process applied before is in neither the window's
	// events nor its CPU, and no start-up work is in it.
	for _, a := range aupds {
		if err := a.Start(); err != nil {
			return nil, err
		}
	}
	for _, a := range aupds {
		if err := a.WaitReady(ctx, 90*time.Second); err != nil {
			return nil, err
		}
	}
	c0, err := r.counters(ctx, aupds)
	if err != nil {
		return nil, err
	}
	s0, err := r.cpu(ctx, aupds, masters)
	if err != nil {
		return nil, err
	}
	if err := r.waitDrained(ctx); err != nil {
		return nil, err
	}
	s1, err := r.cpu(ctx, aupds, masters)
	if err != nil {
		return nil, err
	}
	c1, err := r.counters(ctx, aupds)
	if err != nil {
		return nil, err
	}
	run.Window = s1.at.Sub(s0.at)
	run.WindowEvents = c1.events - c0.events
	run.Batches, run.BatchEvents = c1.batches-c0.batches, c1.batchEvents-c0.batchEvents
	run.BatchTime = time.Duration((c1.batchSecs - c0.batchSecs) * float64(time.Second))
	run.Aupd = s1.aupd - s0.aupd
	run.NATS = s1.nats - s0.nats
	share := r.shares(masters)
	for i, m := range masters {
		sh := Shard{Master: m.node.Name, Share: share[m.node], CPU: s1.redis[i] - s0.redis[i], MainCPU: s1.redisMain[i] - s0.redisMain[i]}
		run.RedisMasters += sh.CPU
		if m.replica != nil {
			sh.Replica = m.replica.Name
			sh.ReplicaCPU = s1.repl[i] - s0.repl[i]
			run.RedisRepls += sh.ReplicaCPU
		}
		run.Shards = append(run.Shards, sh)
	}
	sl, cl := r.leaders(ctx)
	for i, x := range r.c.NATS {
		run.NATSNodes = append(run.NATSNodes, NATSNode{Name: x.ServerName, CPU: s1.natsNode[i] - s0.natsNode[i],
			PublishCPU: p1.natsNode[i] - p0.natsNode[i], StreamLeader: x.ServerName == sl, ConsLead: x.ServerName == cl})
	}
	run.Outcomes, run.Suspensions, run.DeadLetters, run.RedisErrors = c1.outcomes, c1.suspensions, c1.dead, c1.redisErrors
	r.logf("%s: drained %d events in %s: %.0f/s", n, run.WindowEvents, run.Window.Round(time.Millisecond), run.EventsPerSec())

	// Notices: one per suspension, delivered to the sink (bounded wait).
	deadline := time.Now().Add(min(r.cfg.Timeout, time.Minute))
	for r.c.SMTP.Count()-notices0 < int(run.Suspensions) && time.Now().Before(deadline) {
		if err := cluster.Sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	run.Notices = r.c.SMTP.Count() - notices0

	memAfter, err := r.usedMemory(ctx, masters)
	if err != nil {
		return nil, err
	}
	run.RedisBytes = memAfter - memBefore
	run.RedisAccts = len(r.expect.touched)
	if run.AccountBytes, err = r.accountMemory(ctx, b.rdb); err != nil {
		return nil, err
	}
	if run.NoticeBytes, err = r.noticeMemory(ctx, masters); err != nil {
		return nil, err
	}

	// Idle: the same processes with nothing left to consume.
	i0, err := r.cpu(ctx, aupds, masters)
	if err != nil {
		return nil, err
	}
	if err := cluster.Sleep(ctx, idleSpan); err != nil {
		return nil, err
	}
	i1, err := r.cpu(ctx, aupds, masters)
	if err != nil {
		return nil, err
	}
	per := func(d time.Duration) time.Duration { return time.Duration(float64(d) / i1.at.Sub(i0.at).Seconds()) }
	run.IdleAupd, run.IdleNATS, run.IdleRedis = per(i1.aupd-i0.aupd), per(i1.nats-i0.nats), per(sum(i1.redis)+sum(i1.repl)-sum(i0.redis)-sum(i0.repl))

	if err := r.check(ctx, run, b.rdb); err != nil {
		return nil, err
	}
	for _, p := range run.Problems {
		r.logf("%s: PROBLEM: %s", n, p)
	}
	return run, nil
}

// leaders are the names of the NATS nodes that lead the verdict stream
// and aupd's consumer of it ("" when unknown).
func (r *runner) leaders(ctx context.Context) (stream, consumer string) {
	if n, err := r.c.StreamLeader(ctx, r.js, r.streams[0]); err == nil {
		stream = n.ServerName
	}
	if c, err := r.js.Consumer(ctx, r.streams[0], r.durable); err == nil {
		if ci, err := c.Info(ctx); err == nil && ci.Cluster != nil {
			consumer = ci.Cluster.Leader
		}
	}
	return stream, consumer
}

// reset empties the three streams (the consumers stay, with nothing
// pending) and every Redis node of b.
func (r *runner) reset(ctx context.Context, b backend) error {
	for _, name := range r.streams {
		s, err := r.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		if err := s.Purge(ctx); err != nil {
			return fmt.Errorf("purge %s: %w", name, err)
		}
	}
	masters, err := b.masters(ctx)
	if err != nil {
		return err
	}
	for _, m := range masters {
		if _, err := m.node.Do(ctx, "FLUSHALL", "SYNC"); err != nil {
			return fmt.Errorf("redis %s: flushall: %w", m.node.Name, err)
		}
	}
	// The replicas apply the flush too; wait until every node is empty.
	deadline := time.Now().Add(30 * time.Second)
	for _, x := range b.nodes {
		for {
			v, err := x.Do(ctx, "DBSIZE")
			if err == nil && fmt.Sprint(v) == "0" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("redis %s: not empty after FLUSHALL (dbsize %v, %w)", x.Name, v, err)
			}
			if err := cluster.Sleep(ctx, 50*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// master is one Redis master and its replica.
type master struct {
	node, replica *cluster.RedisNode
	lo, hi        []int // slot ranges it serves
}

// masters are the Redis masters, as the nodes say now, in the order of
// the cluster's nodes, with their replicas and slots.
func (r *runner) masters(ctx context.Context) ([]master, error) {
	//nolint:staticcheck // CLUSTER SLOTS answers on every Redis the harness runs (7.0 and later)
	slots, err := r.rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	byNode := map[*cluster.RedisNode]*master{}
	node := func(addr string) (*cluster.RedisNode, error) {
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if x := r.c.RedisNodeOnPort(port); x != nil {
			return x, nil
		}
		return nil, fmt.Errorf("cluster slots: %s is not a node of the cluster", addr)
	}
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			return nil, fmt.Errorf("slots %d-%d have no master", s.Start, s.End)
		}
		m, err := node(s.Nodes[0].Addr)
		if err != nil {
			return nil, err
		}
		x := byNode[m]
		if x == nil {
			x = &master{node: m}
			byNode[m] = x
		}
		x.lo, x.hi = append(x.lo, int(s.Start)), append(x.hi, int(s.End))
	}
	// Replicas as each says itself (CLUSTER SLOTS of one node may not list
	// a replica it has not heard of yet).
	for _, n := range r.c.Redis {
		if byNode[n] != nil {
			continue
		}
		v, err := n.Do(ctx, "INFO", "replication")
		if err != nil {
			return nil, fmt.Errorf("redis %s: info replication: %w", n.Name, err)
		}
		var port string
		for line := range strings.Lines(fmt.Sprint(v)) {
			if p, ok := strings.CutPrefix(strings.TrimSpace(line), "master_port:"); ok {
				port = p
			}
		}
		m, err := node(net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			return nil, fmt.Errorf("redis %s: its master: %w", n.Name, err)
		}
		if x := byNode[m]; x != nil && x.replica == nil {
			x.replica = n
		}
	}
	var out []master
	for _, n := range r.c.Redis {
		if x := byNode[n]; x != nil {
			out = append(out, *x)
		}
	}
	return out, nil
}

func (m master) serves(slot int) bool {
	for i := range m.lo {
		if slot >= m.lo[i] && slot <= m.hi[i] {
			return true
		}
	}
	return false
}

// shares is each master's share of the backlog's events (external
// inbound events touch no master).
func (r *runner) shares(masters []master) map[*cluster.RedisNode]float64 {
	out := map[*cluster.RedisNode]float64{}
	for _, e := range r.evs {
		if !e.Local {
			continue
		}
		slot := r.expect.slots[e.Account]
		for _, m := range masters {
			if m.serves(slot) {
				out[m.node]++
				break
			}
		}
	}
	for k, v := range out {
		out[k] = v / float64(len(r.evs))
	}
	return out
}

// publish publishes the backlog asynchronously, checks that the stream
// holds every event and returns the stream's bytes.
func (r *runner) publish(ctx context.Context) (uint64, error) {
	pctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	for _, e := range r.evs {
		for {
			_, err := r.js.PublishAsync(e.Subject, e.Data)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return 0, fmt.Errorf("publish: %w", err)
			}
			select { // the cluster is behind: let the outstanding acks come
			case <-r.js.PublishAsyncComplete():
			case <-pctx.Done():
				return 0, fmt.Errorf("publish: %w", pctx.Err())
			}
		}
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-pctx.Done():
		return 0, fmt.Errorf("publish acks: %w", pctx.Err())
	}
	s, err := r.js.Stream(ctx, r.streams[0])
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs != uint64(len(r.evs)) {
		return 0, fmt.Errorf("stream %s holds %d messages after publishing %d", r.streams[0], info.State.Msgs, len(r.evs))
	}
	return info.State.Bytes, nil
}

// waitDrained waits until aupd's consumer has every message of the
// stream delivered and acknowledged.
func (r *runner) waitDrained(ctx context.Context) error {
	cons, err := r.js.Consumer(ctx, r.streams[0], r.durable)
	if err != nil {
		return err
	}
	s, err := r.js.Stream(ctx, r.streams[0])
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	deadline := time.Now().Add(r.cfg.Timeout)
	for {
		ci, err := cons.Info(ctx)
		if err == nil && ci.Delivered.Stream >= last && ci.AckFloor.Stream >= last && ci.NumPending == 0 && ci.NumAckPending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("consumer did not drain within %s: %w", r.cfg.Timeout, err)
			}
			return fmt.Errorf("consumer did not drain within %s: ack floor %d of %d, %d pending, %d unacked",
				r.cfg.Timeout, ci.AckFloor.Stream, last, ci.NumPending, ci.NumAckPending)
		}
		// Often enough for a tight window, seldom enough to cost the
		// cluster little.
		if err := cluster.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// counters are aupd's counters, summed over its processes.
type counters struct {
	events      int64 // aupd_events_total
	outcomes    map[string]int64
	suspensions int64
	dead        int64
	redisErrors int64
	batches     int64   // aupd_batch_size_count: batches applied
	batchEvents int64   // aupd_batch_size_sum: their events
	batchSecs   float64 // aupd_batch_seconds_sum: their time, Redis round trips and waits included
}

func (r *runner) counters(ctx context.Context, aupds []*cluster.Aupd) (counters, error) {
	c := counters{outcomes: map[string]int64{}}
	for _, a := range aupds {
		m, err := loadtest.Scrape(ctx, a.HTTPAddr)
		if err != nil {
			return c, fmt.Errorf("%s: %w", a.Name, err)
		}
		for k, v := range m {
			switch {
			case strings.HasPrefix(k, "aupd_events_total{"):
				c.events += int64(v)
				c.outcomes[loadtest.Label(k, "outcome")] += int64(v)
			case strings.HasPrefix(k, "aupd_suspensions_total{") && loadtest.Label(k, "action") == "suspend":
				c.suspensions += int64(v)
			case strings.HasPrefix(k, "aupd_dead_letters_total"):
				c.dead += int64(v)
			case k == "aupd_redis_errors_total":
				c.redisErrors += int64(v)
			case k == "aupd_batch_size_count":
				c.batches += int64(v)
			case k == "aupd_batch_size_sum":
				c.batchEvents += int64(v)
			case k == "aupd_batch_seconds_sum":
				c.batchSecs += v
			}
		}
	}
	return c, nil
}

// cpuSnap is the CPU every process has used, at one moment.
type cpuSnap struct {
	at          time.Time
	aupd, nats  time.Duration
	natsNode    []time.Duration // per NATS node
	redis, repl []time.Duration // per master, and its replica
	redisMain   []time.Duration // per master, its main thread
}

func (r *runner) cpu(ctx context.Context, aupds []*cluster.Aupd, masters []master) (cpuSnap, error) {
	s := cpuSnap{at: time.Now()}
	for _, a := range aupds {
		d, err := procCPU(a.PID())
		if err != nil {
			return s, fmt.Errorf("%s: %w", a.Name, err)
		}
		s.aupd += d
	}
	for _, x := range r.c.NATS {
		d, err := procCPU(x.PID())
		if err != nil {
			return s, fmt.Errorf("nats %s: %w", x.ServerName, err)
		}
		s.nats += d
		s.natsNode = append(s.natsNode, d)
	}
	for _, m := range masters {
		d, main, err := redisCPU(ctx, m.node)
		if err != nil {
			return s, err
		}
		s.redis, s.redisMain = append(s.redis, d), append(s.redisMain, main)
		var rd time.Duration
		if m.replica != nil {
			if rd, _, err = redisCPU(ctx, m.replica); err != nil {
				return s, err
			}
		}
		s.repl = append(s.repl, rd)
	}
	return s, nil
}

func (r *runner) usedMemory(ctx context.Context, masters []master) (int64, error) {
	var sum int64
	for _, m := range masters {
		v, err := redisInfoInt(ctx, m.node, "memory", "used_memory")
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// accountMemory sums MEMORY USAGE (SAMPLES 0: exact) over the keys of
// every account the backlog touched.
func (r *runner) accountMemory(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	var total int64
	accts := r.expect.touched
	for lo := 0; lo < len(accts); lo += 500 {
		pipe := rdb.Pipeline()
		var cmds []*redis.IntCmd
		for _, a := range accts[lo:min(lo+500, len(accts))] {
			for _, suf := range []string{"s", "w", "t", "o", "h"} { // as loadtest.AccountMemory
				cmds = append(cmds, pipe.MemoryUsage(ctx, store.AccountKey(prefix, a, suf), 0))
			}
		}
		_, _ = pipe.Exec(ctx)
		for _, c := range cmds {
			v, err := c.Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return 0, fmt.Errorf("memory usage: %w", err)
			}
			total += v
		}
	}
	return total, nil
}

// noticeMemory is MEMORY USAGE of every notice hash on the masters.
func (r *runner) noticeMemory(ctx context.Context, masters []master) ([]int64, error) {
	var out []int64
	for _, m := range masters {
		var cursor uint64
		for {
			v, err := m.node.Do(ctx, "SCAN", cursor, "MATCH", prefix+":{*}:n:*", "COUNT", 1000)
			if err != nil {
				return nil, fmt.Errorf("redis %s: scan: %w", m.node.Name, err)
			}
			page, ok := v.([]any)
			if !ok || len(page) != 2 {
				return nil, fmt.Errorf("redis %s: scan: unexpected reply %v", m.node.Name, v)
			}
			keys, _ := page[1].([]any)
			for _, k := range keys {
				u, err := m.node.Do(ctx, "MEMORY", "USAGE", k, "SAMPLES", 0)
				if err != nil {
					return nil, fmt.Errorf("redis %s: memory usage %v: %w", m.node.Name, k, err)
				}
				b, _ := u.(int64)
				out = append(out, b)
			}
			if cursor, err = strconv.ParseUint(fmt.Sprint(page[0]), 10, 64); err != nil || cursor == 0 {
				break
			}
		}
	}
	return out, nil
}

// check holds the run against what the backlog must leave.
func (r *runner) check(ctx context.Context, run *Drain, rdb redis.UniversalClient) error {
	bad := func(format string, args ...any) { run.Problems = append(run.Problems, fmt.Sprintf(format, args...)) }
	var total int64
	for _, v := range run.Outcomes {
		total += v
	}
	if total != int64(len(r.evs)) {
		bad("aupd applied %d events of %d published (more: redeliveries)", total, len(r.evs))
	}
	// A copy of an event the cap dropped is dropped again (capped), not a
	// duplicate: the three outcomes of counting events are checked together,
	// and the windows below are exact.
	if got := run.Outcomes["counted"] + run.Outcomes["capped"] + run.Outcomes["duplicate"]; got != int64(r.expect.counting) {
		bad("counted+capped+duplicate %d, want the %d counting events", got, r.expect.counting)
	}
	if run.Outcomes["stats"] != int64(r.expect.stats) || run.Outcomes["external"] != int64(r.expect.external) {
		bad("stats %d, external %d; want %d, %d", run.Outcomes["stats"], run.Outcomes["external"], r.expect.stats, r.expect.external)
	}
	if run.Outcomes["late"] != 0 {
		bad("%d events late", run.Outcomes["late"])
	}
	// Redis errors are transient here (a WAIT that a starved replica did
	// not answer in time): their batches are redelivered, and the checks
	// above and below hold them to being applied once. A dead letter is
	// a loss.
	if run.DeadLetters != 0 {
		bad("%d dead letters", run.DeadLetters)
	}
	if run.WindowEvents <= 0 || run.Window <= 0 {
		bad("empty window (%d events in %s)", run.WindowEvents, run.Window)
	}
	// aupd's and NATS's CPU come from /proc in clock ticks (10ms): a
	// drain window of a few ticks (the standalone drain can take 50ms)
	// may show none for a process that did work; Redis's (INFO cpu, µs)
	// and the publishing's (seconds long) are always measurable.
	ticks := run.Window >= time.Second
	if (ticks && (run.Aupd <= 0 || run.NATS <= 0)) || run.RedisMasters <= 0 || run.PublishNATS <= 0 {
		bad("CPU not positive: aupd %s, nats %s, redis masters %s, nats publishing %s", run.Aupd, run.NATS, run.RedisMasters, run.PublishNATS)
	}
	if run.Notices != int(run.Suspensions) {
		bad("%d notices for %d suspensions", run.Notices, run.Suspensions)
	}
	// Every window in Redis is exactly as large as the backlog says.
	accts := make([]string, 0, len(r.expect.windows))
	for a := range r.expect.windows {
		accts = append(accts, a)
	}
	slices.Sort(accts)
	wrong, sum, want := 0, 0, 0
	for lo := 0; lo < len(accts); lo += 1000 {
		pipe := rdb.Pipeline()
		var reads []func() ([]string, error)
		for _, a := range accts[lo:min(lo+1000, len(accts))] {
			reads = append(reads, store.QueueWindowMembers(ctx, pipe, prefix, a))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("read windows: %w", err)
		}
		for i, read := range reads {
			m, err := read()
			if err != nil {
				return fmt.Errorf("read windows: %w", err)
			}
			w := r.expect.windows[accts[lo+i]]
			sum, want = sum+len(m), want+w
			if len(m) != w {
				wrong++
			}
		}
	}
	if wrong > 0 {
		bad("%d accounts' windows differ from the backlog (%d members in all, want %d)", wrong, sum, want)
	}
	return nil
}

// idleSpan is how long a run's idle CPU is measured.
const idleSpan = 2 * time.Second

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}
