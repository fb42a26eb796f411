// Package notifier sends the abuse notice of an AUP suspension: one email
// to the abuse contact of the company that owns the mailbox, with up to
// three of the suspected messages in an attachment named evidence.txt.
//
// # How a notice travels
//
// The worker records a suspension and, in the same atomic step, queues an
// events.AccountEvent (type suspended, reason aup_violation) in an outbox
// that it flushes to JetStream subject aup.account.suspended. The Notifier
// is a durable pull consumer of that subject. For each event it
//
//  1. renders the notice once (subject and body from text/templates,
//     evidence.txt from the sample verdicts) and stores the complete
//     message bytes in Redis, in a hash keyed by account and suspension
//     id; a redelivered or republished event finds the hash and renders
//     nothing;
//  2. claims a lease on the notice with a Lua script, so that of several
//     notifiers (processes, or a redelivery racing the first delivery)
//     only one sends at a time; a notice already sent or failed is not
//     claimed;
//  3. sends the stored bytes, keeping the JetStream message and the lease
//     alive while the SMTP session lasts;
//  4. records the outcome with a Lua script: sent (acked), failed (a 5xx
//     reply, or temporary failures for longer than give_up_after; acked,
//     logged, counted, kept for the admin API) or pending (a temporary
//     failure: NakWithDelay with exponential backoff).
//
// # Exactly one notice, and the one window
//
// One suspension id is one hash, so it is rendered once and delivered at
// most once as long as the outcome of each attempt is recorded. The one
// window that cannot be closed: the notifier crashes (or loses Redis)
// after the SMTP server accepted the message and before the script marked
// it sent. The lease then expires and a later delivery sends the stored
// message again: the abuse contact may receive a duplicate, byte for byte
// the same message with the same Message-ID, which most mail systems
// collapse. This window is as short as one Redis round trip; the
// notifier retries recording "sent" before it gives up on it, and then
// acks the event rather than risk a second copy.
//
// # Local runs
//
// With eml_dir set, notices are written as .eml files into that
// directory instead of being sent; everything else (state, retries,
// evidence) works the same.
package notifier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/ratelog"
	"github.com/aupd/aupd/rules"
)

// Subject is the subject the notifier consumes.
const Subject = events.AccountSubjectPrefix + events.TypeSuspended

// Directory tells the notifier about the company that owns a mailbox.
type Directory interface {
	// Company returns the company with this id, and false when there is
	// no such company.
	Company(id string) (Company, bool)
}

// DirectoryFunc adapts a function to Directory, e.g. over
// (*companies.Directory).ByID.
type DirectoryFunc func(id string) (Company, bool)

// Company implements Directory.
func (f DirectoryFunc) Company(id string) (Company, bool) { return f(id) }

// Options are the notifier's dependencies.
type Options struct {
	// Redis keeps the notices: a *redis.Client, *redis.ClusterClient or
	// *redis.Ring. Required.
	Redis rediser
	// KeyPrefix starts every Redis key; default "aup".
	KeyPrefix string
	// JetStream is where the account events are; required by Run.
	JetStream jetstream.JetStream
	// Samples fetches the sample verdicts; required.
	Samples SampleSource
	// Directory looks up companies; nil sends every notice to the
	// fallback abuse contact.
	Directory Directory
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Owner names this notifier in leases; default host-pid-random.
	Owner string
	// Links makes the signed abuse desk link each notice carries; nil:
	// notices name aupctl and the API call instead.
	Links LinkFunc
	// Replicated, when set, waits until Redis replicas hold a notice's
	// recorded delivery before its event is acked (redis.wait_replicas),
	// so that a failover cannot make it look unsent.
	Replicated Barrier
}

// Barrier waits until replicas hold every write so far on the masters of
// the given hash tags (*replsync.Barrier).
type Barrier interface {
	Wait(ctx context.Context, tags ...string) error
}

// Notifier turns suspension events into abuse notices.
type Notifier struct {
	cfg     Config
	store   *Store
	r       *renderer
	tr      transport
	js      jetstream.JetStream
	samples SampleSource
	dir     Directory
	log     *slog.Logger
	// warn holds back the warnings an outage repeats for every notice
	// and retry (SMTP or Redis away): one line per warnEvery each.
	warn  *ratelog.Limiter
	now   func() time.Time
	links LinkFunc
	repl  Barrier
	owner string
	// unrecorded holds notices delivered whose delivery could not be
	// recorded yet (key -> reply): their redelivery records it instead of
	// sending again.
	unrecorded sync.Map
	lease      time.Duration
	tick       time.Duration
	m          *metrics
}

// warnEvery is how often one repeated warning of the notifier is logged.
const warnEvery = 30 * time.Second

type metrics struct {
	notices   *prometheus.CounterVec
	redirects *prometheus.CounterVec
	sendTime  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_notices_total",
			Help: "Abuse notice delivery attempts by result: sent, failed (permanently), retry (temporary failure).",
		}, []string{"result"}),
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_notice_redirects_total",
			Help: "Abuse notices not addressed to the company's abuse contact, by reason: sent to the fallback contact instead, or (fallback_is_account) not sent because the fallback is the suspended mailbox.",
		}, []string{"reason"}),
		sendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "aupd_notice_send_seconds",
			Help:    "Time of one attempt to send an abuse notice.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	for _, r := range []string{resultSent, resultFailed, resultRetry} {
		m.notices.WithLabelValues(r)
	}
	for _, r := range recipientReasons {
		m.redirects.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.notices, m.redirects, m.sendTime} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}

const (
	resultSent   = "sent"
	resultFailed = "failed"
	resultRetry  = "retry"
)

// New checks cfg and returns a Notifier. cfg should have had Defaults
// applied and Validate called; New validates again.
func New(cfg Config, opts Options) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notifier config: %w", err)
	}
	if opts.Redis == nil {
		return nil, errors.New("notifier: no redis client")
	}
	if opts.Samples == nil {
		return nil, errors.New("notifier: no sample source")
	}
	r, err := newRenderer(cfg)
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	var tr transport
	if cfg.EMLDir != "" {
		tr = emlTransport{dir: cfg.EMLDir}
	} else if tr, err = newSMTPTransport(cfg.SMTP); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	n := &Notifier{
		cfg: cfg, store: NewStore(opts.Redis, opts.KeyPrefix), r: r, tr: tr, js: opts.JetStream,
		samples: opts.Samples, dir: opts.Directory, log: opts.Logger, now: opts.Now, owner: opts.Owner, m: m, links: opts.Links, repl: opts.Replicated,
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("component", "notifier")
	n.warn = ratelog.New(n.log, warnEvery)
	if n.now == nil {
		n.now = time.Now
	}
	if n.owner == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		n.owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	// The lease outlives a stalled session; the keepalive renews it (and
	// the JetStream message) three times per lease or ack wait.
	n.lease = max(2*cfg.SMTP.Timeout+10*time.Second, 30*time.Second)
	n.tick = min(n.lease, cfg.AckWait) / 3
	return n, nil
}

// Store returns the notifier's store, for the admin API.
func (n *Notifier) Store() *Store { return n.store }

// EnsureConsumer creates (or updates) the notifier's durable consumer, so
// that its backlog can be watched before Run starts.
func (n *Notifier) EnsureConsumer(ctx context.Context) error {
	_, err := n.ensureConsumer(ctx)
	return err
}

func (n *Notifier) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	if n.js == nil {
		return nil, errors.New("notifier: no jetstream")
	}
	return n.js.CreateOrUpdateConsumer(ctx, n.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       n.cfg.Durable,
		FilterSubject: Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
		AckWait:       n.cfg.AckWait,
	})
}

// Run consumes suspension events until ctx is done. It creates (or
// updates) the durable consumer first. When ctx ends it finishes the
// notice in hand (bounded by the lease) and returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	if n.js == nil {
		return errors.New("notifier: no jetstream")
	}
	// JetStream may be away for a while (a restart, a leader election):
	// wait for it with a backoff rather than stop aupd.
	var cons jetstream.Consumer
	warn := ratelog.New(n.log, 30*time.Second)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		cons, err = n.ensureConsumer(cctx)
		cancel()
		if err == nil {
			break
		}
		warn.Warn("create the notifier's consumer; retrying", "err", err, "stream", n.cfg.Stream, "durable", n.cfg.Durable)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	n.log.Info("notifier started", "stream", n.cfg.Stream, "durable", n.cfg.Durable, "owner", n.owner)
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			warn.Warn("fetch account event", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.lease)
		n.Handle(hctx, msg)
		cancel()
	}
	n.log.Info("notifier stopped")
	return nil
}

// Handle processes one JetStream message of subject Subject and acks,
// naks or terminates it. Run calls it; it is exported for callers that
// run their own consume loop.
func (n *Notifier) Handle(ctx context.Context, msg jetstream.Msg) {
	var ev events.AccountEvent
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		n.log.Error("drop undecodable account event", "subject", msg.Subject(), "err", err)
		_ = msg.Term() // plain TERM: a TERM with a reason needs NATS 2.10
		return
	}
	if ev.Type != events.TypeSuspended || ev.Reason != rules.ReasonAUPViolation ||
		ev.Suspension == nil || ev.Suspension.Action != string(rules.ActionSuspend) {
		_ = msg.Ack()
		return
	}
	if ev.Account == "" || ev.Suspension.ID == "" {
		n.log.Error("drop suspension event without account or suspension id", "event", ev.ID)
		_ = msg.Term()
		return
	}
	if delay, done := n.process(ctx, msg, &ev); done {
		if n.repl != nil {
			// Acked once replicas hold the outcome: a failover must not
			// bring back a notice that looks unsent.
			if err := n.repl.Wait(ctx, ev.Account); err != nil {
				n.warn.Warn("notice outcome not replicated yet; will check again", "account", ev.Account, "suspension", ev.Suspension.ID, "err", err)
				_ = msg.NakWithDelay(n.cfg.RetryMin)
				return
			}
		}
		_ = msg.Ack()
	} else {
		_ = msg.NakWithDelay(delay)
	}
}

// process delivers the notice of ev and says whether the event is done,
// or when to try again.
func (n *Notifier) process(ctx context.Context, msg jetstream.Msg, ev *events.AccountEvent) (time.Duration, bool) {
	log := n.log.With("account", ev.Account, "suspension", ev.Suspension.ID)
	key := n.store.key(ev.Account, ev.Suspension.ID)
	if reply, ok := n.unrecorded.Load(key); ok {
		// Delivered by this process before; only the record is missing.
		if _, err := n.store.finish(ctx, key, n.owner, "sent", n.now(), reply.(string), n.cfg.Retention); err != nil {
			n.warn.Warn("record delivered notice", "account", ev.Account, "suspension", ev.Suspension.ID, "err", err)
			return n.cfg.RetryMin, false
		}
		n.unrecorded.Delete(key)
		log.Info("abuse notice delivery recorded", "reply", reply)
		return 0, true
	}
	c, err := n.store.claim(ctx, key, n.owner, n.now(), n.lease)
	if err != nil {
		n.warn.Warn("claim notice", "account", ev.Account, "suspension", ev.Suspension.ID, "err", err)
		return n.cfg.RetryMin, false
	}
	if c.status == "missing" {
		if err := n.prepare(ctx, key, ev, log); err != nil {
			n.warn.Warn("prepare notice", "account", ev.Account, "suspension", ev.Suspension.ID, "err", err)
			return n.cfg.RetryMin, false
		}
		if c, err = n.store.claim(ctx, key, n.owner, n.now(), n.lease); err != nil {
			n.warn.Warn("claim notice", "account", ev.Account, "suspension", ev.Suspension.ID, "err", err)
			return n.cfg.RetryMin, false
		}
	}
	switch c.status {
	case StateSent, StateFailed:
		return 0, true
	case "busy":
		wait := c.leaseUntil.Sub(n.now()) + 100*time.Millisecond
		return min(max(wait, n.cfg.RetryMin), n.cfg.RetryMax), false
	case "claimed":
		return n.attempt(ctx, msg, key, c, log)
	}
	log.Error("claim notice: unexpected state", "state", c.status)
	return n.cfg.RetryMax, false
}

// prepare renders the notice and stores it. A notice that cannot be
// rendered is stored as failed.
func (n *Notifier) prepare(ctx context.Context, key string, ev *events.AccountEvent, log *slog.Logger) error {
	samples, err := n.samples.Samples(ctx, ev.Suspension.Samples)
	if err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	var comp Company
	var ok bool
	if n.dir != nil && ev.Company != "" {
		comp, ok = n.dir.Company(ev.Company)
	}
	now := n.now()
	fields := map[string]any{
		"event_id": ev.ID, "account": ev.Account, "company": ev.Company,
		"suspension_id": ev.Suspension.ID, "created_at": now.UnixMilli(), "attempts": 0,
	}
	nt := notice{
		event: ev, company: comp, companyOK: ok, samples: pickSamples(samples), fetched: len(samples), now: now,
		messageID: n.r.newMessageID(ev, now),
	}
	if n.links != nil {
		if u, until, ok := n.links(ev.Account, ev.Suspension.ID, now); ok {
			nt.deskURL, nt.deskUntil = u, until
		}
	}
	rn, rerr := n.r.render(nt)
	if rerr != nil {
		fields["state"], fields["last_error"], fields["failed_at"] = StateFailed, rerr.Error(), now.UnixMilli()
		created, err := n.store.create(ctx, key, n.cfg.Retention, fields)
		if err != nil {
			return err
		}
		if created {
			n.failed(ctx, ev.Account, ev.Suspension.ID, "", 0, rerr, log)
		}
		return nil
	}
	fields["recipient"], fields["sender"] = rn.recipient, rn.sender
	fields["recipient_reason"] = rn.reason
	fields["message_id"], fields["subject"] = rn.messageID, rn.subject
	fields["evidence"] = rn.evidence
	if rn.recipient == "" {
		// Nobody may receive it: the fallback is the suspended mailbox.
		// Recorded as failed, with the evidence for the abuse desk, and
		// never sent (there is no message to send).
		note := RecipientNote(rn.reason)
		fields["state"], fields["last_error"], fields["failed_at"] = StateFailed, note, now.UnixMilli()
		created, err := n.store.create(ctx, key, n.cfg.Retention, fields)
		if err != nil {
			return err
		}
		if created {
			n.m.redirects.WithLabelValues(rn.reason).Inc()
			n.failed(ctx, ev.Account, ev.Suspension.ID, "", 0, errors.New(note), log.With("company", ev.Company, "why", rn.reason))
		}
		return nil
	}
	fields["state"] = StatePending
	fields["message"] = rn.message
	created, err := n.store.create(ctx, key, n.cfg.GiveUpAfter+n.cfg.Retention, fields)
	if err == nil && created && rn.reason != "" {
		n.m.redirects.WithLabelValues(rn.reason).Inc()
		if rn.reason == ReasonContactIsAccount {
			log.Warn("abuse notice goes to the fallback contact: the company's abuse contact is the suspended mailbox", "company", ev.Company, "why", rn.reason, "recipient", rn.recipient)
		} else {
			log.Info("abuse notice goes to the fallback contact", "company", ev.Company, "why", rn.reason, "recipient", rn.recipient)
		}
	}
	return err
}

// attempt sends a claimed notice once and records the outcome.
func (n *Notifier) attempt(ctx context.Context, msg jetstream.Msg, key string, c claim, log *slog.Logger) (time.Duration, bool) {
	h, err := n.store.message(ctx, key)
	if err != nil {
		log.Warn("load notice", "err", err)
		_, _ = n.store.finish(ctx, key, n.owner, "retry", n.now(), err.Error(), n.cfg.Retention)
		return n.cfg.RetryMin, false
	}
	log = log.With("recipient", h["recipient"], "message_id", h["message_id"], "attempt", c.attempts)

	sendCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { // keepalive: the JetStream message and the lease
		defer close(done)
		t := time.NewTicker(n.tick)
		defer t.Stop()
		for {
			select {
			case <-sendCtx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
				ok, err := n.store.renew(sendCtx, key, n.owner, n.now().Add(n.lease))
				if err == nil && !ok {
					log.Warn("lost the notice lease; aborting the send")
					cancel()
					return
				}
			}
		}
	}()
	start := time.Now()
	// Record the delivery the moment the server accepts the message: the
	// only window left is a crash between the server's reply and this
	// write, after which the redelivery sends the same message again, with
	// the same Message-ID.
	var recordErr error
	delivered := false
	accepted := func(reply string) {
		delivered = true
		for i := range 3 {
			if _, recordErr = n.store.finish(context.WithoutCancel(ctx), key, n.owner, "sent", n.now(), reply, n.cfg.Retention); recordErr == nil {
				return
			}
			time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
		}
		n.unrecorded.Store(key, reply)
	}
	reply, sendErr := n.tr.send(sendCtx, h["sender"], h["recipient"], []byte(h["message"]), accepted)
	n.m.sendTime.Observe(time.Since(start).Seconds())
	cancel()
	<-done

	now := n.now()
	if delivered {
		// Accepted by the server, even if the session failed afterwards.
		n.m.notices.WithLabelValues(resultSent).Inc()
		if recordErr != nil {
			// Not acked: the redelivery records it from n.unrecorded,
			// sending nothing again.
			log.Error("abuse notice sent but not recorded yet; will record it on the redelivery", "err", recordErr)
			return n.cfg.RetryMin, false
		}
		log.Info("abuse notice sent", "reply", reply)
		return 0, true
	}

	var se *sendError
	permanent := errors.As(sendErr, &se) && se.permanent
	if !permanent && now.Sub(c.firstAttempt) >= n.cfg.GiveUpAfter {
		sendErr = fmt.Errorf("gave up after %d attempts since %s: %w", c.attempts,
			c.firstAttempt.UTC().Format(time.RFC3339), sendErr)
		permanent = true
	}
	if permanent {
		st, err := n.store.finish(ctx, key, n.owner, "failed", now, cleanLine(sendErr.Error(), 1000), n.cfg.Retention)
		if err != nil {
			log.Warn("record failed notice", "err", err)
			return n.cfg.RetryMin, false
		}
		if st == StateFailed {
			n.failed(ctx, h["account"], h["suspension_id"], h["recipient"], c.attempts, sendErr, log)
		}
		return 0, true
	}
	st, err := n.store.finish(ctx, key, n.owner, "retry", now, cleanLine(sendErr.Error(), 1000), n.cfg.Retention)
	if err != nil {
		n.warn.Warn("record notice retry", "account", h["account"], "suspension", h["suspension_id"], "err", err)
	}
	n.m.notices.WithLabelValues(resultRetry).Inc()
	delay := n.backoff(c.attempts)
	n.warn.Warn("abuse notice not sent, will retry", "account", h["account"], "suspension", h["suspension_id"], "err", sendErr, "retry_in", delay, "state", st)
	return delay, false
}

func (n *Notifier) failed(ctx context.Context, account, suspensionID, rcpt string, attempts int, err error, log *slog.Logger) {
	n.m.notices.WithLabelValues(resultFailed).Inc()
	log.Error("abuse notice failed", "recipient", rcpt, "attempts", attempts, "err", err)
	if err := n.store.indexFailed(ctx, account, suspensionID, n.now(), n.cfg.Retention); err != nil {
		log.Warn("index failed notice", "err", err)
	}
}

// backoff is retry_min doubled per attempt up to retry_max, with jitter
// in the upper half so that notices to one failed relay spread out.
func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.cfg.RetryMin
	for i := 1; i < attempts && d < n.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, n.cfg.RetryMax)
	return d/2 + mrand.N(d/2+1)
}
