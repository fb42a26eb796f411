// Package worker applies batches of verdict events: it resolves each
// account's company and policy, counts the whole batch in one pipelined
// Redis round trip (one atomic script per account), publishes the account
// events of the suspensions it causes, and tells the consumer which events
// are committed. It also owns the periodic jobs.
package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
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
	Ingest(ctx context.Context, batches []store.Batch, window time.Duration, now time.Time, newID func() string) ([]store.Result, error)
	FlushOutbox(ctx context.Context, account string, pub store.Publisher) (int, error)
	IndexNew(ctx context.Context, accounts map[string]string) error
}

// Directory finds the company that owns an account.
type Directory interface {
	ByAccount(account string) (*companies.Company, bool)
}

// Policy is the provider's AUP rule (config.AUP).
type Policy struct {
	Window     time.Duration
	Threshold  int
	MaxTracked int
	Directions []rules.Direction
	Verdicts   []rules.Verdict
	Mode       rules.Mode
	Allowlist  []string
}

// Options are what a Worker needs.
type Options struct {
	Store     Store
	Directory Directory
	Publisher store.Publisher
	// Policy returns the current provider policy; it may change on reload.
	Policy     func() Policy
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
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
	if o.Now == nil {
		o.Now = time.Now
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
}

// New returns a worker.
func New(opts Options) (*Worker, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Worker{opts: opts, log: opts.Logger.With("component", "worker"), metrics: m}, nil
}

// ErrTransient marks a failure that a redelivery can cure.
var ErrTransient = errors.New("transient")

// Process applies a batch. It returns one error per event: nil when the
// event's effects are committed (count, suspension, published account
// events) and it may be acked; otherwise a transient error, and the event
// must be redelivered later. A redelivered event is never counted twice.
func (w *Worker) Process(ctx context.Context, evs []Event) []error {
	start := time.Now()
	errs := make([]error, len(evs))
	now := w.opts.Now()
	p := w.opts.Policy()

	type acct struct {
		batch int   // index in batches
		evs   []int // indexes in evs
		pol   rules.Policy
	}
	byAccount := make(map[string]*acct, len(evs))
	var batches []store.Batch
	for i, ev := range evs {
		v := ev.Verdict
		company, local := w.opts.Directory.ByAccount(v.Account)
		if v.Direction == rules.Inbound && !local {
			// Not a local account: statistics only, nothing to store.
			w.metrics.event(v.Direction, v.Verdict, "external")
			continue
		}
		a := byAccount[v.Account]
		if a == nil {
			pol := accountPolicy(p, company, v.Account)
			b := store.Batch{
				Account:   v.Account,
				Threshold: pol.Threshold,
				Cap:       max(p.MaxTracked, pol.Threshold+1),
				Action:    pol.OnCrossing(),
			}
			if company != nil {
				b.Company = company.ID
			}
			a = &acct{batch: len(batches), pol: pol}
			byAccount[v.Account] = a
			batches = append(batches, b)
		}
		a.evs = append(a.evs, i)
		counting := a.pol.Counts(v.Direction, v.Verdict, true)
		item := store.Item{ID: v.ID, Time: v.Time, Kind: rules.KindOf(v.Direction, v.Verdict), Counting: counting}
		if counting && ev.Seq != 0 {
			item.Seq, item.Fingerprint = ev.Seq, Fingerprint(v.Message)
		}
		batches[a.batch].Items = append(batches[a.batch].Items, item)
	}
	w.metrics.batchSize.Observe(float64(len(evs)))
	if len(batches) == 0 {
		w.metrics.batchSeconds.Observe(time.Since(start).Seconds())
		return errs
	}

	results, err := w.opts.Store.Ingest(ctx, batches, p.Window, now, func() string { return store.NewID(now) })
	if err != nil {
		w.metrics.redisErrors.Inc()
		w.log.Warn("ingest batch", "err", err, "events", len(evs))
		for _, a := range byAccount {
			for _, i := range a.evs {
				errs[i] = fmt.Errorf("%w: %v", ErrTransient, err)
			}
		}
		return errs
	}
	created := map[string]string{}
	for account, a := range byAccount {
		b, r := batches[a.batch], results[a.batch]
		fail := func(err error) {
			for _, i := range a.evs {
				errs[i] = fmt.Errorf("%w: %v", ErrTransient, err)
			}
		}
		if r.Err != nil {
			w.metrics.redisErrors.Inc()
			w.log.Warn("ingest account", "err", r.Err, "account", account)
			fail(r.Err)
			continue
		}
		for j, i := range a.evs {
			v := evs[i].Verdict
			w.metrics.event(v.Direction, v.Verdict, r.Outcomes[j].String())
		}
		if r.Crossing != "" {
			w.metrics.crossings.WithLabelValues(string(r.Crossing)).Inc()
			w.log.Info("AUP threshold exceeded", "account", account, "company", b.Company, "action", r.Crossing,
				"id", r.ID, "count", r.Count, "threshold", b.Threshold)
		}
		if r.Created {
			created[account] = b.Company
		}
		if r.Outbox > 0 {
			n, err := w.opts.Store.FlushOutbox(ctx, account, w.opts.Publisher)
			w.metrics.published.Add(float64(n))
			if err != nil {
				w.log.Warn("publish account events", "err", err, "account", account)
				fail(err)
			}
		}
	}
	if err := w.opts.Store.IndexNew(ctx, created); err != nil {
		// The index only serves listings; a missing entry is restored by
		// the next change of the account. Not worth a redelivery.
		w.log.Warn("index new accounts", "err", err)
	}
	w.metrics.batchSeconds.Observe(time.Since(start).Seconds())
	return errs
}

// accountPolicy applies a company's overrides to the provider's rule.
func accountPolicy(p Policy, c *companies.Company, account string) rules.Policy {
	pol := rules.Policy{Threshold: p.Threshold, Directions: p.Directions, Verdicts: p.Verdicts, Mode: p.Mode}
	for _, a := range p.Allowlist {
		if a == account {
			pol.Allowlisted = true
		}
	}
	if c != nil {
		if c.Threshold != nil {
			pol.Threshold = *c.Threshold
		}
		if c.Allowlisted(account) {
			pol.Allowlisted = true
		}
	}
	return pol
}

// fingerprintBody bounds how much of a message body the fingerprint reads.
const fingerprintBody = 4096

// Fingerprint identifies a message's content, so that evidence prefers
// different messages over copies of one campaign: the subject and the
// start of the body, without the headers that differ per copy.
func Fingerprint(m *events.Message) string {
	if m == nil {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(strings.ToLower(strings.TrimSpace(m.Subject))))
	h.Write([]byte{0})
	body := m.Raw
	if i := strings.Index(body, "\r\n\r\n"); i >= 0 {
		body = body[i+4:]
	} else if i := strings.Index(body, "\n\n"); i >= 0 {
		body = body[i+2:]
	}
	if len(body) > fingerprintBody {
		body = body[:fingerprintBody]
	}
	h.Write([]byte(body))
	return hex.EncodeToString(h.Sum(nil)[:8])
}
