// Package volume enforces the volume limits (aup.volume) at the Postfix
// policy server: it counts each message an authenticated account sends
// when Postfix commits to it (END-OF-MESSAGE), once, and acts on a
// crossing: a throttle, or an AUP suspension whose account event it
// publishes (and the notifier turns into the abuse notice). Counting,
// deciding and recording are one script call in the store.
package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// Store is what the counter needs from the account store.
type Store interface {
	Throttle(ctx context.Context, address string) (*store.Throttle, error)
	CountVolume(ctx context.Context, m store.VolumeMessage) (store.VolumeResult, error)
	CountedBefore(ctx context.Context, account string, id uint32, limits *store.VolumeLimits) (bool, error)
	FlushOutbox(ctx context.Context, address string, pub store.Publisher) (int, error)
}

// Directory says which company owns an account (companies.Directory).
type Directory interface {
	ByAccount(account string) (*companies.Company, bool)
}

// Options are a Counter's collaborators.
type Options struct {
	Store     Store
	Directory Directory
	// Policy returns the provider's rule now; it changes on reload.
	Policy func() rules.Provider
	// Publisher publishes a suspension's account event; nil leaves it to
	// the outbox sweep.
	Publisher  store.Publisher
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
}

// Counter implements postfix.Volume. It is safe for concurrent use.
type Counter struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	specs   specCache
	// flush takes accounts whose outbox holds a suspension to publish;
	// Run publishes them.
	flush chan string
}

// New returns a counter.
func New(opts Options) (*Counter, error) {
	if opts.Store == nil || opts.Directory == nil || opts.Policy == nil {
		return nil, errors.New("volume: Store, Directory and Policy are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	return &Counter{opts: opts, log: log.With("component", "policy.volume"), metrics: m,
		specs: specCache{m: map[specKey]*store.VolumeLimits{}}, flush: make(chan string, 256)}, nil
}

// policy is the volume rule of account, and its company (nil: none).
func (c *Counter) policy(account string) (rules.VolumePolicy, *companies.Company) {
	co, _ := c.opts.Directory.ByAccount(account)
	return companies.VolumePolicy(c.opts.Policy(), co, account), co
}

// Limited implements postfix.Volume.
func (c *Counter) Limited(account string) bool {
	pol, _ := c.policy(account)
	return len(pol.Limits) > 0
}

// Throttle implements postfix.Volume: a script call, made only when the
// state's marker says a throttle may hold.
func (c *Counter) Throttle(ctx context.Context, account string) (string, error) {
	th, err := c.opts.Store.Throttle(ctx, account)
	if err != nil || th == nil {
		return "", err
	}
	return th.Limit, nil
}

// Count implements postfix.Volume.
func (c *Counter) Count(ctx context.Context, m postfix.Message) (postfix.CountResult, error) {
	pol, co := c.policy(m.Account)
	if len(pol.Limits) == 0 {
		return postfix.CountResult{Outcome: postfix.Counted}, nil
	}
	msg := store.VolumeMessage{Account: m.Account, Version: m.Version, ID: store.MessageID(m.Instance, m.QueueID),
		Recipients: m.Recipients, Limits: c.specs.get(pol), SampleWindow: c.opts.Policy().Window}
	if co != nil {
		msg.Company = co.ID
	}
	if ip, err := netip.ParseAddr(m.Client); err == nil {
		msg.Client = ip
	}
	r, err := c.opts.Store.CountVolume(ctx, msg)
	if err != nil {
		return postfix.CountResult{}, err
	}
	c.crossed(m, r)
	if r.Pending {
		c.publish(m.Account)
	}
	switch r.Outcome {
	case store.VolumeCounted:
		c.metrics.messages.WithLabelValues(outcomeCounted).Inc()
		return postfix.CountResult{Outcome: postfix.Counted}, nil
	case store.VolumeDuplicate:
		c.metrics.messages.WithLabelValues(outcomeDuplicate).Inc()
		return postfix.CountResult{Outcome: postfix.Duplicate}, nil
	case store.VolumeThrottled:
		c.metrics.messages.WithLabelValues(outcomeThrottled).Inc()
		return postfix.CountResult{Outcome: postfix.Throttled, Throttle: r.Throttle}, nil
	}
	return postfix.CountResult{Outcome: postfix.Changed}, nil
}

// CountedBefore implements postfix.Volume.
func (c *Counter) CountedBefore(ctx context.Context, m postfix.Message) (bool, error) {
	pol, _ := c.policy(m.Account)
	if len(pol.Limits) == 0 {
		return false, nil
	}
	return c.opts.Store.CountedBefore(ctx, m.Account, store.MessageID(m.Instance, m.QueueID), c.specs.get(pol))
}

// crossed logs and counts the crossings of a message.
func (c *Counter) crossed(m postfix.Message, r store.VolumeResult) {
	for _, x := range r.Crossings {
		rule := c.ruleLabel(x.Limit)
		log := c.log.With("account", m.Account, "rule", x.Limit.Rule(), "count", x.Count, "max", x.Limit.Max(),
			"window", x.Limit.Window.String(), "since", x.Since, "queue_id", m.QueueID, "client", m.Client)
		switch {
		case x.Action == string(rules.VolumeThrottle):
			c.metrics.throttled.WithLabelValues(rule).Inc()
			log.Info("volume limit crossed: throttled", "until", x.Until)
		case x.Action == string(rules.VolumeSuspend) && x.ID != "":
			c.metrics.suspended.WithLabelValues(rule).Inc()
			log.Warn("volume limit crossed: sending suspended", "suspension", x.ID)
		case x.Action == string(rules.VolumeSuspend):
			log.Info("volume limit crossed: an AUP suspension is in force already, or another limit suspended")
		default:
			c.metrics.reported.WithLabelValues(rule, string(x.Limit.Action)).Inc()
			log.Info("volume limit crossed: reported (shadow mode or allowlisted)", "would", string(x.Limit.Action), "report", x.ID)
		}
	}
}

// ruleLabel is a limit's rule label in the metrics: its rule name when
// the provider's limits have that name, else volume:other, so that the
// companies of the admin API cannot grow the label values.
func (c *Counter) ruleLabel(l rules.VolumeLimit) string {
	if slices.ContainsFunc(c.opts.Policy().Volume, func(p rules.VolumeLimit) bool { return p.Name == l.Name }) {
		return l.Rule()
	}
	return rules.VolumeRulePrefix + "other"
}

// publish asks Run to publish an account's outbox. When Run is behind,
// the sweep publishes it: the store indexed the outbox when it wrote it.
func (c *Counter) publish(account string) {
	select {
	case c.flush <- account:
	default:
	}
}

// flushTimeout bounds the publish of one account's outbox.
const flushTimeout = 10 * time.Second

// Run publishes the account events of the suspensions the counter made,
// until ctx is done.
func (c *Counter) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case account := <-c.flush:
			if c.opts.Publisher == nil {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, flushTimeout)
			if _, err := c.opts.Store.FlushOutbox(fctx, account, c.opts.Publisher); err != nil {
				c.log.Warn("publish the account events of a volume suspension; the outbox sweep will", "account", account, "err", err)
			}
			cancel()
		}
	}
}

// specCache keeps the packed form of each volume policy: the provider's
// limits and each company's are the same slices until a reload or a
// change of the company.
type specCache struct {
	mu sync.Mutex
	m  map[specKey]*store.VolumeLimits
}

type specKey struct {
	first   *rules.VolumeLimit
	n       int
	mode    rules.Mode
	allowed bool
}

// maxSpecs bounds the cache; past it, it starts again.
const maxSpecs = 1024

func (sc *specCache) get(pol rules.VolumePolicy) *store.VolumeLimits {
	k := specKey{first: &pol.Limits[0], n: len(pol.Limits), mode: pol.Mode, allowed: pol.Allowlisted}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if v, ok := sc.m[k]; ok {
		return v
	}
	if len(sc.m) >= maxSpecs {
		clear(sc.m)
	}
	v := store.PackVolume(pol)
	sc.m[k] = v
	return v
}
