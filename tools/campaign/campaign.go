// Package campaign is the fault campaign of issue #13: on a loopback
// cluster (internal/cluster: 3 NATS nodes with R3 streams, a Redis Cluster
// of 3 masters with a replica each, several aupd processes, an SMTP sink)
// it publishes a large planned load of verdicts, with duplicates and
// invalid events, while it injects faults on a seeded schedule that ends
// before publishing does (aupd SIGKILL and SIGSTOP, NATS node and stream
// leader kills, NATS without quorum, Redis master failovers, a master
// lost for good, a shard fully down, an SMTP outage). It sees every ack
// aupd sends and times each fault's stall per Redis shard from the
// fault's start. Then it waits for aupd to drain and checks every
// account's window, member by member, against the counting ids published
// for it, the dead letters against the invalid events, one suspension
// event per crossing and one notice per suspension, and prints one
// table. Run it from the repository root with scripts/campaign, or
// `go -C tools run ./cmd/aupload campaign` (docs/scaling.md).
package campaign

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/store"
)

// prefix is the Redis key prefix of the cluster's aupd processes.
const prefix = "aup"

// Config is what a campaign does.
type Config struct {
	Dir        string // the cluster's directory
	AupdBinary string // default: built into Dir
	Events     int    // events to publish (originals, duplicates and invalid ones)
	Accounts   int
	Seed       uint64
	Rate       int // events per second published
	// Shares of the events: duplicates (same event id as an earlier one)
	// and invalid events; and of the accounts: those that cross.
	DupShare, InvalidShare, CrossShare float64
	Aupd                               int           // aupd processes (default 3)
	Faults                             Counts        // faults of each kind
	SMTPOutage                         time.Duration // the SMTP outage (0: none)
	AckWait                            time.Duration // nats.consumer.ack_wait of every aupd (default 5s)
	// RedisReplicas is how many replicas each Redis master has (default 1).
	RedisReplicas int
	// RedisDown, when set, is how long a failed-over master stays down
	// before it is restarted (default: 0-3 s, seeded); RedisLostDown how
	// long a lost master does (0: until publishing has ended); ShardDown
	// how long a shard is fully down (default 20 s); QuorumDown how long
	// two of the three NATS nodes are (default 15 s).
	RedisDown, RedisLostDown, ShardDown, QuorumDown time.Duration
	// WaitReplicas is redis.wait_replicas of every aupd (the short form
	// and the command use 1: each master's replica holds every write aupd
	// acknowledges); RedisExtra is more redis: settings.
	WaitReplicas int
	RedisExtra   []string
	DrainTimeout time.Duration // bound on the wait for aupd to drain (default 10m)
	Log          io.Writer     // progress lines (nil: none)
	// Inspect, when set, is called after the checks with the cluster
	// still up and a function that runs the checks again: tests change
	// what aupd did and see the checks fail.
	Inspect func(ctx context.Context, c *cluster.Cluster, recheck func() (*Result, error)) error
}

func (c *Config) defaults() {
	if c.Aupd == 0 {
		c.Aupd = 3
	}
	if c.AckWait == 0 {
		c.AckWait = 5 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Minute
	}
	if c.Rate <= 0 {
		c.Rate = 2000
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Result is what a campaign found.
type Result struct {
	Plan   *Plan
	Faults []Fault
	Shards []string // the Redis shards, by slot range
	// Baseline is the longest stall of any shard before the first fault;
	// FromFloor how many events' acks the campaign did not see (their
	// time is the ack floor's).
	Baseline  time.Duration
	FromFloor int
	Rows      []Row
	Failures  []string // one line per failed check, with a few differing accounts
	Pass      bool
	Published time.Duration // how long publishing took
	Drained   time.Duration // from the start of publishing until aupd had drained
	Retries   int64         // publishes retried (NATS node or leader down)
}

// Row is one row of the table.
type Row struct {
	Check, Expected, Observed string
	OK                        *bool // nil: information only
}

type runner struct {
	cfg     Config
	plan    *Plan
	c       *cluster.Cluster
	nc      *nats.Conn
	js      jetstream.JetStream
	rdb     *redis.ClusterClient
	pub     *asyncPub
	streams []string // verdicts, accounts, dead letters
	start   time.Time
	shards  shardMap
	shardOf []int         // each account's shard
	tl      *timeline     // what was published and acknowledged, when
	publ    chan struct{} // closed when publishing has ended
	mu      sync.Mutex
	current string // the fault in progress, for progress lines
	stall   stall  // the verdict consumer's longest ack-floor stall
}

// stall is how long the verdict consumer's ack floor stood still while
// later events were delivered: one event not acknowledged for that long.
type stall struct {
	floor      uint64        // the ack floor that stood still
	longest    time.Duration // how long
	at         time.Duration // since the start of publishing, when it began
	backwards  int           // times the ack floor moved back (a new consumer leader with an older state)
	curFloor   uint64
	curSince   time.Time
	lastFloor  uint64
	haveSample bool
}

// watchAckFloor samples the verdict consumer every 500 ms until stop.
func (r *runner) watchAckFloor(ctx context.Context, stop <-chan struct{}) {
	every(ctx, stop, 500*time.Millisecond, func() {
		vi, err := r.consumerInfo(ctx, r.streams[0], config.Default().NATS.Consumer.Durable)
		if err != nil {
			return
		}
		r.tl.floor(vi.AckFloor.Stream)
		now := time.Now()
		r.mu.Lock()
		st := &r.stall
		floor := vi.AckFloor.Stream
		if st.haveSample && floor < st.lastFloor {
			st.backwards++
		}
		if !st.haveSample || floor != st.curFloor || vi.Delivered.Stream <= floor {
			st.curFloor, st.curSince = floor, now
			st.lastFloor, st.haveSample = floor, true
		} else if d := now.Sub(st.curSince); d > st.longest {
			st.longest, st.floor, st.at = d, floor, st.curSince.Sub(r.start)
		}
		r.mu.Unlock()
	})
}

// every calls fn each interval until ctx ends or stop closes.
func every(ctx context.Context, stop <-chan struct{}, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		fn()
	}
}

// Run runs a campaign and returns its result; err is for a campaign that
// could not run (the cluster did not come up, a fault could not be
// injected), not for a check that failed.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	plan, err := NewPlan(cfg.Events, cfg.Accounts, cfg.Seed, cfg.DupShare, cfg.InvalidShare, cfg.CrossShare, time.Now())
	if err != nil {
		return nil, err
	}
	span := time.Duration(float64(plan.Len()) / float64(cfg.Rate) * float64(time.Second))
	faults, err := Schedule(cfg.Seed, cfg.Faults, span, Durations{AckWait: cfg.AckWait, SMTPOutage: cfg.SMTPOutage,
		RedisDown: cfg.RedisDown, RedisLost: cfg.RedisLostDown, ShardDown: cfg.ShardDown, QuorumDown: cfg.QuorumDown})
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: plan, Faults: faults}
	fmt.Fprintf(cfg.Log, "campaign: seed %d: %d events (%d originals, %d duplicates, %d invalid) over %d accounts, threshold %d, %d cross; %d/s for about %s\n",
		cfg.Seed, plan.Len(), plan.NOrig, plan.NDup, plan.NInvalid, len(plan.Accounts), plan.Threshold, plan.Crossings(), cfg.Rate, span.Round(time.Second))
	for _, f := range res.Faults {
		down := f.Down.Round(time.Millisecond).String()
		if f.UntilEnd {
			down = "until publishing ends"
		}
		fmt.Fprintf(cfg.Log, "campaign: fault %2d at %6s: %-14s target %d, down %s, planned to end by %s\n",
			f.N, f.At.Round(100*time.Millisecond), f.Kind, f.Target, down, (f.At + f.Budget).Round(100*time.Millisecond))
	}
	def := config.Default().NATS
	r := &runner{cfg: cfg, plan: plan, streams: []string{def.Verdicts.Name, def.Accounts.Name, def.Dead.Name},
		tl: &timeline{}, publ: make(chan struct{})}
	r.c, err = cluster.Start(ctx, cluster.Options{
		Dir: cfg.Dir, AupdProcesses: cfg.Aupd, AupdBinary: cfg.AupdBinary, Log: cfg.Log, RedisReplicas: cfg.RedisReplicas,
		Aupd: cluster.AupdSettings{
			Threshold: plan.Threshold, MaxTracked: min(100000, max(10, plan.MaxCount+10)), Replicas: 3,
			AckWait: cfg.AckWait, RetryMin: 200 * time.Millisecond, RetryMax: 2 * time.Second,
			NoticeRetryMin: time.Second, NoticeRetryMax: 5 * time.Second, NoticeAckWait: cfg.AckWait,
			WaitReplicas: cfg.WaitReplicas, RedisExtra: cfg.RedisExtra,
		},
	})
	if err != nil {
		return nil, err
	}
	defer r.c.Close()
	if r.nc, err = r.c.ConnectNATS("campaign"); err != nil {
		return nil, err
	}
	defer r.nc.Close()
	if r.js, err = jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(5*time.Second)); err != nil {
		return nil, err
	}
	r.rdb = r.c.NewRedisClient()
	defer r.rdb.Close()
	if err := r.mapShards(ctx, res); err != nil {
		return nil, err
	}
	sub, err := r.tl.watchAcks(r.nc, r.streams[0], def.Consumer.Durable)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection closes next
	r.pub = newAsyncPub(r.js, r.tl)
	defer r.pub.close()

	if err := r.run(ctx, res); err != nil {
		return res, err
	}
	if err := r.check(ctx, res); err != nil {
		return res, err
	}
	if cfg.Inspect != nil {
		err := cfg.Inspect(ctx, r.c, func() (*Result, error) {
			again := &Result{Plan: res.Plan, Faults: res.Faults, Published: res.Published, Drained: res.Drained, Retries: res.Retries}
			return again, r.check(ctx, again)
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// mapShards reads the Redis shards and each account's.
func (r *runner) mapShards(ctx context.Context, res *Result) error {
	var err error
	if r.shards, err = readShards(ctx, r.rdb); err != nil {
		return err
	}
	for i := range r.shards {
		res.Shards = append(res.Shards, r.shards.name(i))
	}
	r.shardOf = make([]int, len(r.plan.Accounts))
	for i, a := range r.plan.Accounts {
		r.shardOf[i] = r.shards.of(cluster.SlotOf(store.AccountKey(prefix, a, "w")))
	}
	return nil
}

func (r *runner) run(ctx context.Context, res *Result) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.start = time.Now()
	r.tl.begin(r.start)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() { // publishing
		err := r.publishAll(ctx)
		res.Published = time.Since(r.start)
		close(r.publ)
		if err != nil {
			errs <- fmt.Errorf("publish: %w", err)
			cancel()
		}
		fmt.Fprintf(r.cfg.Log, "campaign: %s: published and acked all %d events (%d publishes retried)\n", since(r.start), r.plan.Len(), r.pub.retries.Load())
	})
	wg.Go(func() { // faults, one after the other
		for i := range res.Faults {
			f := &res.Faults[i]
			if f.Kind == SMTPOutage {
				continue
			}
			if err := r.runFault(ctx, f); err != nil {
				errs <- err
				cancel()
				return
			}
		}
	})
	for i := range res.Faults { // the SMTP outage beside them
		if f := &res.Faults[i]; f.Kind == SMTPOutage {
			wg.Go(func() {
				if err := r.runFault(ctx, f); err != nil {
					errs <- err
					cancel()
				}
			})
		}
	}
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() { r.progress(ctx, stopProgress) })
	pwg.Go(func() { r.watchAckFloor(ctx, stopProgress) })
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		close(stopProgress)
		pwg.Wait()
		return err
	}
	err := r.drain(ctx)
	close(stopProgress)
	pwg.Wait()
	res.Drained = time.Since(r.start)
	res.Retries = r.pub.retries.Load()
	r.report(res)
	return err
}

// report times every fault's stalls from what was seen, and how far past
// the end of publishing each ended.
func (r *runner) report(res *Result) {
	r.tl.mu.Lock()
	evs, fromFloor := joinSeen(r.tl.pubs, r.tl.acks, r.tl.floors)
	r.tl.mu.Unlock()
	res.FromFloor = fromFloor
	first := res.Drained
	for i := range res.Faults {
		f := &res.Faults[i]
		first = min(first, f.Started)
		if f.Ended > res.Published {
			f.Past = f.Ended - res.Published
		}
	}
	res.Baseline = baseline(evs, len(r.shards), first)
	stallReport(res.Faults, evs, len(r.shards), res.Drained)
}

func (r *runner) runFault(ctx context.Context, f *Fault) error {
	if err := cluster.Sleep(ctx, f.At-time.Since(r.start)); err != nil {
		return err
	}
	f.Started = time.Since(r.start)
	r.setCurrent(fmt.Sprintf("fault %d %s", f.N, f.Kind))
	fmt.Fprintf(r.cfg.Log, "campaign: %s: fault %d: %s\n", since(r.start), f.N, f.Kind)
	var err error
	if f.Kind == SMTPOutage {
		before := r.c.SMTP.Count()
		err = r.outage(ctx, f)
		f.Ended = time.Since(r.start)
		if err == nil {
			f.Notice, f.Err = r.nextNotice(ctx, before)
		}
	} else {
		err = r.inject(ctx, f)
		f.Ended = time.Since(r.start)
	}
	r.setCurrent("")
	if err != nil {
		f.Err = err
		return fmt.Errorf("fault %d (%s): %w", f.N, f.Kind, err)
	}
	fmt.Fprintf(r.cfg.Log, "campaign: %s: fault %d done: %s %s\n", since(r.start), f.N, f.What, f.Detail)
	return nil
}

// nextNotice waits, after an SMTP outage, until the sink accepts a notice
// again, when any was held back.
func (r *runner) nextNotice(ctx context.Context, before int) (string, error) {
	t := time.Now()
	werr := poll(ctx, 5*time.Minute, 50*time.Millisecond, func() bool { return r.c.SMTP.Count() > before || !r.noticesPending(ctx) })
	switch {
	case r.c.SMTP.Count() > before:
		return fmt.Sprintf("next notice accepted %s after the end", since(t)), nil
	case werr == nil:
		return "no notice was pending", nil
	}
	return "", errors.New("no notice accepted within 5m of the outage's end")
}

func (r *runner) setCurrent(s string) {
	r.mu.Lock()
	r.current = s
	r.mu.Unlock()
}

// noticesPending reports whether the notifier's consumer has notices
// not yet acknowledged.
func (r *runner) noticesPending(ctx context.Context) bool {
	ni, err := r.consumerInfo(ctx, r.streams[1], config.Default().Notifier.Durable)
	return err != nil || ni.NumPending > 0 || ni.NumAckPending > 0
}

func (r *runner) consumerInfo(ctx context.Context, stream, durable string) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := r.js.Consumer(ctx, stream, durable)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// progress prints a line every 10 s.
func (r *runner) progress(ctx context.Context, stop <-chan struct{}) {
	every(ctx, stop, 10*time.Second, func() {
		line := fmt.Sprintf("campaign: %s: published %d/%d (acked %d)", since(r.start), r.pub.sent.Load(), r.plan.Len(), r.pub.acked.Load())
		if vi, err := r.consumerInfo(ctx, r.streams[0], config.Default().NATS.Consumer.Durable); err == nil {
			line += fmt.Sprintf(", aupd acked to %d, %d pending, %d in flight", vi.AckFloor.Stream, vi.NumPending, vi.NumAckPending)
		}
		line += fmt.Sprintf(", %d notices", r.c.SMTP.Count())
		r.mu.Lock()
		if r.current != "" {
			line += ", " + r.current
		}
		r.mu.Unlock()
		fmt.Fprintln(r.cfg.Log, line)
	})
}

// drain waits until both consumers (verdicts, notices) have nothing
// pending and nothing unacknowledged, and nothing changes for 3 s.
func (r *runner) drain(ctx context.Context) error {
	var last string
	stable := 0
	err := poll(ctx, r.cfg.DrainTimeout, time.Second, func() bool {
		vi, err := r.consumerInfo(ctx, r.streams[0], config.Default().NATS.Consumer.Durable)
		if err != nil {
			return false
		}
		ni, err := r.consumerInfo(ctx, r.streams[1], config.Default().Notifier.Durable)
		if err != nil {
			return false
		}
		state := fmt.Sprint(vi.Delivered.Stream, vi.AckFloor.Stream, ni.Delivered.Stream, ni.AckFloor.Stream, r.c.SMTP.Count())
		if vi.NumPending == 0 && vi.NumAckPending == 0 && ni.NumPending == 0 && ni.NumAckPending == 0 && state == last {
			stable++
		} else {
			stable = 0
		}
		last = state
		return stable >= 3
	})
	if err != nil {
		return fmt.Errorf("aupd did not drain within %s", r.cfg.DrainTimeout)
	}
	fmt.Fprintf(r.cfg.Log, "campaign: %s: aupd drained\n", since(r.start))
	return nil
}

// poll calls cond every interval until it is true, ctx ends or timeout
// passes.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// ---- publishing --------------------------------------------------------.

// publishAll publishes the plan at the configured rate and returns once
// JetStream acknowledged every event.
func (r *runner) publishAll(ctx context.Context) error {
	p := r.plan
	dr := rand.New(rand.NewPCG(p.Seed, 0x647570))
	k, x := 0, 0
	for i, kind := range p.seq {
		if due := r.start.Add(time.Duration(float64(i) / float64(r.cfg.Rate) * float64(time.Second))); time.Until(due) > 5*time.Millisecond {
			if err := cluster.Sleep(ctx, time.Until(due)); err != nil {
				return err
			}
		}
		var m outMsg
		switch kind {
		case 'o':
			e := p.Original(k)
			m = outMsg{subject: e.Subject, data: e.Data, id: e.ID, shard: r.shardOfOriginal(k)}
			k++
		case 'd':
			var j int
			if dr.IntN(2) == 0 {
				j = max(0, k-1-dr.IntN(5000))
			} else {
				j = dr.IntN(k)
			}
			e := p.Original(j)
			// Its own Nats-Msg-Id, so that JetStream keeps it and aupd
			// must see that the event id counted already.
			m = outMsg{subject: e.Subject, data: e.Data, id: fmt.Sprintf("%s#dup%d", e.ID, i), shard: r.shardOfOriginal(j)}
		case 'x':
			subj, data, _ := p.Invalid(x)
			m = outMsg{subject: subj, data: data, id: fmt.Sprintf("bad%x-%07d", p.Seed, x), shard: -1}
			x++
		}
		if err := r.pub.send(ctx, m); err != nil {
			return err
		}
	}
	return r.pub.wait(ctx, int64(p.Len()))
}

type outMsg struct {
	subject string
	data    []byte
	id      string
	shard   int           // the Redis shard of its account (-1: not timed, see shardOfOriginal)
	sent    time.Duration // its first publish, from the start of publishing
}

// shardOfOriginal is the Redis shard original k (or a copy of it) must be
// written to before aupd may ack it; -1 for a ham event, which aupd acks
// whether its statistics reached Redis or not (they wait in memory for
// the next write), so that its ack says nothing of the shard.
func (r *runner) shardOfOriginal(k int) int {
	a := r.plan.orig[k]
	if a&hamBit != 0 {
		return -1
	}
	return r.shardOf[a]
}

type inflight struct {
	m outMsg
	f jetstream.PubAckFuture
}

// asyncPub publishes asynchronously and republishes what JetStream did
// not acknowledge (a node or leader down, a timeout). Nats-Msg-Id makes a
// republish of a stored message harmless.
type asyncPub struct {
	js       jetstream.JetStream
	tl       *timeline
	inflight chan inflight
	mu       sync.Mutex
	retry    []outMsg
	sent     atomic.Int64
	acked    atomic.Int64
	retries  atomic.Int64
	done     chan struct{}
}

func newAsyncPub(js jetstream.JetStream, tl *timeline) *asyncPub {
	p := &asyncPub{js: js, tl: tl, inflight: make(chan inflight, 4096), done: make(chan struct{})}
	go p.collect()
	return p
}

func (p *asyncPub) collect() {
	defer close(p.done)
	for in := range p.inflight {
		select {
		case pa := <-in.f.Ok():
			p.tl.published(pa.Sequence, in.m.shard, in.m.sent)
			p.acked.Add(1)
		case err := <-in.f.Err():
			p.retries.Add(1) // retried below, whatever err says
			_ = err
			p.mu.Lock()
			p.retry = append(p.retry, in.m)
			p.mu.Unlock()
		}
	}
}

func (p *asyncPub) close() {
	close(p.inflight)
	<-p.done
}

func (p *asyncPub) send(ctx context.Context, m outMsg) error {
	if err := p.republish(ctx); err != nil {
		return err
	}
	p.sent.Add(1)
	m.sent = p.tl.now()
	return p.publish(ctx, m)
}

func (p *asyncPub) republish(ctx context.Context) error {
	p.mu.Lock()
	again := p.retry
	p.retry = nil
	p.mu.Unlock()
	for _, m := range again {
		if err := p.publish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (p *asyncPub) publish(ctx context.Context, m outMsg) error {
	for {
		msg := nats.NewMsg(m.subject)
		msg.Data = m.data
		msg.Header.Set(nats.MsgIdHdr, m.id)
		f, err := p.js.PublishMsgAsync(msg)
		if err == nil {
			select {
			case p.inflight <- inflight{m, f}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		p.retries.Add(1)
		if err := cluster.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// wait returns once n messages are acknowledged.
func (p *asyncPub) wait(ctx context.Context, n int64) error {
	for p.acked.Load() < n {
		if err := p.republish(ctx); err != nil {
			return err
		}
		if err := cluster.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// The short form: a bounded run with a few faults, what CI runs
// (TestCampaignShort) and `aupload campaign -short`. Its rate leaves the
// faults room to end while events are still published.
const (
	ShortFaults  = "aupd-kill=1,aupd-stop=1,nats-leader=1,redis-failover=1"
	ShortSummary = "30,000 events over 300 accounts at 400/s; one aupd SIGKILL, one SIGSTOP, one NATS leader kill, one Redis failover, a 10 s SMTP outage"
)

// Short is the short form's config (without Dir, Log and Faults' parse).
func Short() Config {
	f, _ := ParseCounts(ShortFaults)
	return Config{Events: 30_000, Accounts: 300, Seed: 1, Rate: 400, Aupd: 3, Faults: f, SMTPOutage: 10 * time.Second, WaitReplicas: 1,
		DupShare: DefaultDupShare, InvalidShare: DefaultInvalidShare, CrossShare: DefaultCrossShare, DrainTimeout: 3 * time.Minute}
}
