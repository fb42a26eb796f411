// Package worker applies batches of verdict events: it resolves each
// account's company and policy, counts the whole batch in one pipelined
// Redis round trip (one atomic script per account), publishes the account
// events of the suspensions it causes, and tells the consumer which events
// are committed. It also owns the periodic jobs.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/ratelog"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// Event is one valid verdict event and where it sits in the stream.
type Event struct {
	Verdict *events.Verdict
	Seq     uint64 // stream sequence, the reference of an evidence sample
}

// Store is what the worker needs from the Redis store.
type Store interface {
	Ingest(ctx context.Context, batches []store.Batch, p store.IngestParams) ([]store.Result, error)
	Settle(ctx context.Context, done []store.Settled) error
	MarkOutbox(ctx context.Context, accounts ...string) error
	NewStats(bound int) *store.Stats
	NewSenders(bound int) *store.Senders
	HamFeed(ctx context.Context, seen int64, ttl time.Duration) (int64, error)
}

// Publisher publishes account events: all of them asynchronously, then it
// waits once. It returns one error per event (nil: stored by JetStream).
type Publisher interface {
	PublishAccountEvents(ctx context.Context, evs []*events.AccountEvent, data [][]byte) []error
}

// Directory finds the company that owns an account.
type Directory interface {
	ByAccount(account string) (*companies.Company, bool)
}

// Policy is the provider's AUP rule (config.AUP).
type Policy = rules.Provider

// Options are what a Worker needs.
type Options struct {
	Store     Store
	Directory Directory
	Publisher Publisher
	// Policy returns the current provider policy; it may change on reload.
	Policy     func() Policy
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now pins the clock that decides windows (tests). Nil: Redis's clock,
	// the one clock of every process.
	Now func() time.Time
}

func (o *Options) validate() error {
	switch {
	case o.Store == nil:
		return errors.New("worker: no store")
	case o.Directory == nil:
		return errors.New("worker: no company directory")
	case o.Publisher == nil:
		return errors.New("worker: no publisher")
	case o.Policy == nil:
		return errors.New("worker: no policy")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	return nil
}

// Worker applies batches. It is safe for concurrent use: batches that
// overlap in accounts are fine, since every account's change is atomic
// and counting is order-independent.
type Worker struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	warn    *ratelog.Limiter

	mu   sync.Mutex
	near map[string]int64 // near-threshold hints for the next round trip

	// statistics-only events, and the senders of counted ones, written
	// about once a second (see store.Stats, store.Senders): lastFlush in
	// Unix ns, flushing while one runs
	stats     *store.Stats
	senders   *store.Senders
	lastFlush atomic.Int64
	flushing  atomic.Bool
	flushes   sync.WaitGroup

	// hamSeen is when this process last applied an outbound ham verdict
	// (Unix ns, by the worker's clock), hamShared when any process did as
	// Redis last told (store.HamFeed), hamSent the hamSeen last told to
	// it, and hamFeed whether the latest was within hamSilence at the
	// last batch that asked (hamFeedUnset before any).
	hamSeen   atomic.Int64
	hamShared atomic.Int64
	hamSent   atomic.Int64
	hamFeed   atomic.Int32
}

// hamSilence is how long the spam-rate rule acts without any outbound ham
// arriving. The rule judges a share of outbound mail, so it needs the
// filter to report the ham as well as the spam; a filter that reports
// only spam (rspamd's exporter without its ham rule, docs/rspamd.md)
// would make every account's share 100%, and the rule would suspend
// busy senders at min_spam. Past this silence the rule stands aside
// (the spam count still decides), and comes back with the next ham.
const hamSilence = time.Hour

const hamFeedUnset = -1

// statsEvery is how often the statistics-only events gathered are
// written; they are also written when a fetch brings nothing and when the
// worker closes.
const statsEvery = time.Second

// New returns a worker.
func New(opts Options) (*Worker, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "worker")
	w := &Worker{opts: opts, log: log, metrics: m, warn: ratelog.New(log, 10*time.Second),
		stats: opts.Store.NewStats(0), senders: opts.Store.NewSenders(0)}
	w.lastFlush.Store(time.Now().UnixNano())
	w.hamFeed.Store(hamFeedUnset)
	return w, nil
}

// ErrTransient marks a failure that a redelivery can cure.
var ErrTransient = errors.New("transient")

// Process applies a batch. It returns one error per event: nil when the
// event's effects are committed (count, suspension, published account
// events) and it may be acked; an error wrapping ErrTransient when it must
// be redelivered later; or a store.PermanentError when no redelivery can
// help (the consumer dead-letters it). A redelivered event is never
// counted twice.
//
// It runs in three steps: plan groups the events by account with each
// account's policy, apply counts them in one store round trip and maps
// the outcomes, and publish sends the account events the store left in
// the accounts' outboxes, then settles them.
func (w *Worker) Process(ctx context.Context, evs []Event) []error {
	start := time.Now()
	p := w.opts.Policy()
	pl := w.plan(p, evs)
	w.metrics.batchSize.Observe(float64(len(evs)))
	defer func() {
		w.metrics.flush(&pl.tally)
		w.metrics.batchSeconds.Observe(time.Since(start).Seconds())
		w.flushStatsIfDue()
	}()
	if len(pl.batches) == 0 {
		return pl.errs
	}
	if out := w.apply(ctx, p, pl); len(out.events) > 0 {
		w.publish(ctx, pl, out)
	}
	return pl.errs
}

// batchPlan is a batch grouped by account: one store.Batch per account
// that has anything to store, with the account's policy and the events
// it holds, and the answer for each event so far (nil: committed).
type batchPlan struct {
	evs     []Event
	errs    []error        // one per event
	index   map[string]int // account -> index in batches
	batches []store.Batch
	accts   []planned // one per batch
	tally   tally     // outcomes, for the metrics
}

// planned is one account of a batchPlan.
type planned struct {
	evs []int // indexes in batchPlan.evs
	pol rules.Policy
}

// fail answers every event of batch j with err.
func (pl *batchPlan) fail(j int, err error) {
	for _, i := range pl.accts[j].evs {
		pl.errs[i] = err
	}
}

// plan groups evs by account, resolving each account's company and
// policy once. An inbound event for an address no company holds is
// counted for the statistics only and stored nowhere.
func (w *Worker) plan(p Policy, evs []Event) *batchPlan {
	rate := w.rateFed(evs)
	pl := &batchPlan{
		evs:     evs,
		errs:    make([]error, len(evs)),
		index:   make(map[string]int, len(evs)),
		batches: make([]store.Batch, 0, len(evs)),
		accts:   make([]planned, 0, len(evs)),
	}
	for i, ev := range evs {
		v := ev.Verdict
		kind := rules.KindOf(v.Direction, v.Verdict)
		company, local := w.opts.Directory.ByAccount(v.Account)
		if v.Direction == rules.Inbound && !local {
			pl.tally.add(kind, outExternal)
			continue
		}
		j, ok := pl.index[v.Account]
		if !ok {
			pol := companies.Policy(p, company, v.Account)
			b := store.Batch{
				Account:   v.Account,
				Threshold: pol.Threshold,
				Cap:       p.Cap(pol),
				Action:    pol.OnCrossing(),
				SpamRate:  pol.SpamRate,
			}
			if pol.SpamRate.On() {
				w.noteFeed(rate)
				if !rate {
					pol.SpamRate = rules.SpamRate{} // no ham arrives: the count alone
					b.SpamRate = pol.SpamRate
				}
			}
			if pol.SpamRate.On() {
				b.HamCap = pol.SpamRate.HamCap(pol.Threshold)
				b.OutboundOnly = slices.Equal(pol.Directions, []rules.Direction{rules.Outbound})
			}
			if company != nil {
				b.Company = company.ID
			}
			j = len(pl.batches)
			pl.index[v.Account] = j
			pl.batches = append(pl.batches, b)
			pl.accts = append(pl.accts, planned{pol: pol})
		}
		a := &pl.accts[j]
		a.evs = append(a.evs, i)
		counting := a.pol.Counts(v.Direction, v.Verdict, true)
		item := store.Item{ID: v.ID, Time: v.Time, Kind: kind, Counting: counting,
			Ham: !counting && a.pol.CountsForRate(v.Direction, v.Verdict)}
		if counting && ev.Seq != 0 {
			item.Seq, item.Fingerprint = ev.Seq, v.Fingerprint()
		}
		pl.batches[j].Items = append(pl.batches[j].Items, item)
	}
	return pl
}

// rateFed records the outbound ham of evs and reports whether any
// arrived within hamSilence: whether a spam-rate rule may act. The first
// batch with ham turns it on before any of that batch's accounts is
// planned, so that ham is never planned without the rule.
func (w *Worker) rateFed(evs []Event) bool {
	now := time.Now()
	if w.opts.Now != nil {
		now = w.opts.Now()
	}
	for _, ev := range evs {
		if ev.Verdict.Direction == rules.Outbound && ev.Verdict.Verdict == rules.Ham {
			w.hamSeen.Store(now.UnixNano())
			break
		}
	}
	return now.UnixNano()-max(w.hamSeen.Load(), w.hamShared.Load()) < int64(hamSilence)
}

// shareHamFeed tells the other processes when this one last applied
// outbound ham, and learns when any did, with the statistics' flush
// (about once a second, off the batches' path): the spam-rate rule then
// acts or stands aside alike in every process, however the stream
// spreads the ham among them. On failure each process goes on by what it
// saw itself.
func (w *Worker) shareHamFeed(ctx context.Context) {
	seen := w.hamSeen.Load()
	if seen <= w.hamSent.Load() {
		seen = 0 // nothing new to tell
	}
	latest, err := w.opts.Store.HamFeed(ctx, seen/int64(time.Millisecond), 2*hamSilence)
	if err != nil {
		w.metrics.redisErrors.Inc()
		w.warn.Warn("share the outbound ham feed", "err", err)
		return
	}
	if seen > 0 {
		w.hamSent.Store(seen)
	}
	w.hamShared.Store(latest * int64(time.Millisecond))
}

// noteFeed reports a change of the ham feed, for an account whose
// spam-rate rule it decides, once in the log and in the gauge.
func (w *Worker) noteFeed(fed bool) {
	on := int32(0)
	if fed {
		on = 1
	}
	prev := w.hamFeed.Swap(on)
	if prev == on {
		return
	}
	w.metrics.hamFeed.Set(float64(on))
	switch {
	case fed:
		w.log.Info("outbound ham arrives: the spam-rate rule acts")
	case prev == hamFeedUnset:
		w.log.Info("no outbound ham verdict since the start: the spam-rate rule stands aside until one arrives, and the spam count alone decides")
	default:
		w.log.Warn("no outbound ham verdict within the last hour: the spam-rate rule stands aside and the spam count alone decides; have the filter report ham too (docs/rspamd.md)")
	}
}

// outbox holds the account events to publish after apply: this batch's
// crossings, and any a crash left behind in the same accounts' outboxes.
type outbox struct {
	events []*events.AccountEvent
	data   [][]byte
	owner  []int // batch index of each event
	settle []store.Settled
}

// apply counts the plan's batches in one store round trip and records
// what became of each event: its outcome in the tally, the sender of a
// message counted now, the answer of every event of an account the store
// failed, the crossings and the near-threshold hints. It returns the
// account events to publish.
func (w *Worker) apply(ctx context.Context, p Policy, pl *batchPlan) outbox {
	var out outbox
	params := store.IngestParams{
		Window: p.Window, Skew: p.FutureSkew, Near: w.takeNear(), Stats: w.stats,
	}
	if w.opts.Now != nil {
		params.Now = w.opts.Now()
	}
	results, err := w.opts.Store.Ingest(ctx, pl.batches, params)
	if err != nil {
		w.metrics.redisErrors.Inc()
		w.warn.Warn("ingest batch", "err", err, "events", len(pl.evs), "accounts", len(pl.batches))
		w.putNear(params.Near)
		err = fmt.Errorf("%w: %w", ErrTransient, err)
		for j := range pl.batches {
			pl.fail(j, err)
		}
		return out
	}

	var (
		failed int
		first  error
	)
	near := map[string]int64{}
	now := time.Now().UnixMilli()
	if w.opts.Now != nil {
		now = w.opts.Now().UnixMilli()
	}
	for j, r := range results {
		b := pl.batches[j]
		if r.Err != nil {
			failed++
			first = cmp.Or(first, r.Err)
			if store.IsPermanent(r.Err) {
				pl.fail(j, r.Err)
			} else {
				pl.fail(j, fmt.Errorf("%w: %w", ErrTransient, r.Err))
			}
			continue
		}
		for k, i := range pl.accts[j].evs {
			o := r.Outcomes[k]
			pl.tally.add(b.Items[k].Kind, outcomeIndex(o))
			// The sender of a message counted now (not a duplicate of
			// one counted before): a hint for the account page.
			if v := pl.evs[i].Verdict; v.Sender != nil && (o == store.Counted || o == store.AtCap) {
				w.senders.Add(b.Account, v.Sender.IP, v.Sender.Login, v.Time)
			}
		}
		if r.Crossing != "" {
			w.metrics.crossings.WithLabelValues(string(r.Crossing), r.Rule).Inc()
			w.log.Info("AUP rule crossed", "account", b.Account, "company", b.Company, "rule", r.Rule, "action", r.Crossing,
				"id", r.ID, "count", r.Count, "threshold", b.Threshold)
		} else if r.Count*2 >= b.Threshold && r.Count <= b.Threshold {
			near[b.Account] = now
		}
		if len(r.Pending) > 0 {
			d := store.Settled{Account: b.Account, Entries: r.Pending}
			for _, e := range r.Pending {
				ev, data, err := store.DecodeOutbox(e)
				if err != nil {
					w.log.Error("drop undecodable outbox entry", "err", err, "account", b.Account)
					continue
				}
				out.events, out.data, out.owner = append(out.events, ev), append(out.data, data), append(out.owner, j)
				d.Events = append(d.Events, ev)
			}
			out.settle = append(out.settle, d)
		}
	}
	if failed > 0 {
		w.metrics.redisErrors.Add(float64(failed))
		w.warn.Warn("ingest accounts", "err", first, "failed_accounts", failed, "accounts", len(pl.batches))
	}
	w.putNear(near)
	return out
}

// publish publishes the account events of out all at once, waits once,
// then settles the outboxes in one round trip. An account whose events
// did not all publish keeps its outbox (it is indexed for the sweep) and
// its verdicts are redelivered.
func (w *Worker) publish(ctx context.Context, pl *batchPlan, out outbox) {
	perrs := w.opts.Publisher.PublishAccountEvents(ctx, out.events, out.data)
	bad := map[int]error{}
	var first error
	for k, err := range perrs {
		if err != nil {
			bad[out.owner[k]] = err
			first = cmp.Or(first, err)
		} else {
			w.metrics.published.Inc()
		}
	}
	done := out.settle[:0]
	var unsent []string
	for _, d := range out.settle {
		j := pl.index[d.Account]
		if err, ok := bad[j]; ok {
			unsent = append(unsent, d.Account)
			pl.fail(j, fmt.Errorf("%w: publish account event: %w", ErrTransient, err))
			continue
		}
		done = append(done, d)
	}
	if len(unsent) > 0 {
		w.warn.Warn("publish account events", "err", first, "accounts", len(unsent))
		if err := w.opts.Store.MarkOutbox(ctx, unsent...); err != nil {
			w.warn.Warn("index outboxes", "err", err)
		}
	}
	if err := w.opts.Store.Settle(ctx, done); err != nil {
		// Published but not removed: the next batch of these accounts, or
		// the sweep, publishes them again, and JetStream drops the copies.
		w.warn.Warn("settle outboxes", "err", err, "accounts", len(done))
		accounts := make([]string, len(done))
		for k, d := range done {
			accounts[k] = d.Account
		}
		_ = w.opts.Store.MarkOutbox(ctx, accounts...)
	}
}

// Idle writes the near-threshold hints and the statistics gathered so
// far, which otherwise ride along with the next batch's round trip or
// wait for the next flush; the consumer calls it when a fetch brings
// nothing.
func (w *Worker) Idle(ctx context.Context) {
	w.flushStats(ctx)
	near := w.takeNear()
	if len(near) == 0 {
		return
	}
	p := w.opts.Policy()
	params := store.IngestParams{Window: p.Window, Skew: p.FutureSkew, Near: near, NewID: func() string { return "" }}
	if w.opts.Now != nil {
		params.Now = w.opts.Now()
	}
	if _, err := w.opts.Store.Ingest(ctx, nil, params); err != nil {
		w.putNear(near)
		w.warn.Warn("write near-threshold hints", "err", err)
	}
}

// Close writes the statistics gathered, after any flush under way; call
// it once no batch is being processed.
func (w *Worker) Close(ctx context.Context) {
	w.flushes.Wait()
	w.flushStats(ctx)
}

// flushStatsIfDue starts a flush of the statistics in the background once
// statsEvery has passed since the last, unless one is under way.
func (w *Worker) flushStatsIfDue() {
	if time.Now().UnixNano()-w.lastFlush.Load() < int64(statsEvery) || !w.flushing.CompareAndSwap(false, true) {
		return
	}
	w.flushes.Go(func() {
		defer w.flushing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.flushStats(ctx)
	})
}

// flushStats writes the statistics and the sender tallies gathered, and
// shares the ham feed (shareHamFeed); the statistics Redis did not take
// stay for the next flush, the tallies are dropped (store.Senders).
func (w *Worker) flushStats(ctx context.Context) {
	w.lastFlush.Store(time.Now().UnixNano())
	w.shareHamFeed(ctx)
	err := w.stats.Flush(ctx)
	if n := w.stats.Dropped(); n > 0 {
		w.metrics.statsDropped.Add(float64(n))
	}
	if err != nil {
		w.metrics.redisErrors.Inc()
		w.warn.Warn("write statistics", "err", err)
	}
	p := w.opts.Policy()
	var now time.Time
	if w.opts.Now != nil {
		now = w.opts.Now()
	}
	err = w.senders.Flush(ctx, p.Window+p.FutureSkew, now)
	if n := w.senders.Dropped(); n > 0 {
		w.metrics.sendersDropped.Add(float64(n))
	}
	if err != nil {
		w.metrics.redisErrors.Inc()
		w.warn.Warn("write sender tallies", "err", err)
	}
}

// takeNear hands over the near-threshold hints gathered so far.
func (w *Worker) takeNear() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.near
	w.near = nil
	return n
}

// putNear keeps hints for the next round trip; they are hints, so a bound
// drops the excess rather than grow.
func (w *Worker) putNear(h map[string]int64) {
	if len(h) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.near == nil {
		w.near = make(map[string]int64, len(h))
	}
	for a, t := range h {
		if len(w.near) >= maxNearHints {
			break
		}
		w.near[a] = max(w.near[a], t)
	}
}

const maxNearHints = 10000
