// Package consumers holds aupd's JetStream pull loops: fetch a batch,
// decode and validate each event, dead-letter the invalid ones, hand the
// valid ones to the worker, then ack what is committed and nak the rest
// with a backoff.
package consumers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/jsutil"
	"github.com/aupd/aupd/internal/ratelog"
	"github.com/aupd/aupd/worker"
)

// Processor applies a batch of valid events (the worker).
//
// An event's error is permanent, and the event goes to the dead letters
// at once, when the error (or one it wraps) has a method Permanent() bool
// that returns true (store.PermanentError has), unless it wraps
// worker.ErrTransient, whatever its cause. Any other error is transient:
// the event is redelivered.
type Processor interface {
	Process(ctx context.Context, evs []worker.Event) []error
}

// permanent reports whether a Processor's error is permanent.
func permanent(err error) bool {
	if errors.Is(err, worker.ErrTransient) {
		return false
	}
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// Headers of a dead letter. The payload is the original event, byte for
// byte.
const (
	HeaderReason  = "Aup-Reason"  // machine-readable code, events.Reason*
	HeaderField   = "Aup-Field"   // the offending field, when there is one
	HeaderDetail  = "Aup-Detail"  // human-readable detail
	HeaderSubject = "Aup-Subject" // the subject the event arrived on
	HeaderSeq     = "Aup-Stream-Seq"
	HeaderStream  = "Aup-Stream"
	// HeaderTruncated, when present, says the payload was cut to fit the
	// dead-letter stream, and gives the original's size in bytes; the
	// original stays in its stream at Aup-Stream-Seq.
	HeaderTruncated = "Aup-Truncated"
)

// Reasons of dead letters that are not about the event's content.
const (
	// ReasonProcessingFailed: applying the event failed in a way no
	// redelivery can cure (a key of the wrong type, malformed state).
	ReasonProcessingFailed = "processing_failed"
	// ReasonMaxDeliveries: the event still failed at its last allowed
	// delivery (nats.consumer.max_deliver).
	ReasonMaxDeliveries = "max_deliveries"
)

// DeadLetterSubject is where invalid verdict events go.
const DeadLetterSubject = "aup.dlq.verdict"

// VerdictOptions configure the verdict consumer.
type VerdictOptions struct {
	JS        jetstream.JetStream
	Consumer  jetstream.Consumer
	Processor Processor
	Batch     int
	MaxWait   time.Duration
	FillWait  time.Duration // see Pull.FillWait
	Workers   int
	RetryMin  time.Duration
	RetryMax  time.Duration
	// MaxDeliver is the consumer's MaxDeliver: an event that still fails
	// transiently at that delivery is dead-lettered instead of dropped.
	MaxDeliver int
	// MaxDeadLetter bounds a dead letter, headers included (the smaller of
	// the server's max_payload and the dead-letter stream's message size);
	// longer payloads are cut, with HeaderTruncated.
	MaxDeadLetter int
	FutureSkew    func() time.Duration
	// Probe, when set, tells whether the store is reachable (a Redis
	// ping). After a batch with transient failures the consumer probes
	// once: when the probe fails too, the store is down, so the failed
	// events are nak'ed with RetryMin only and every fetch loop waits,
	// probing every ProbeEvery, until the probe succeeds. Counting then
	// resumes at once: no backoff built up during an outage outlives it,
	// and an outage adds a few deliveries per event (at most one per
	// fetch loop), not one per retry.
	Probe      func(context.Context) error
	ProbeEvery time.Duration
	// DrainTimeout bounds how long the batch in hand may take after the
	// context is cancelled.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	Now          func() time.Time
}

func (o *VerdictOptions) validate() error {
	if o.JS == nil || o.Consumer == nil || o.Processor == nil {
		return errors.New("consumers: JetStream, consumer and processor are required")
	}
	if o.Batch < 1 || o.Workers < 1 || o.MaxWait <= 0 || o.RetryMin <= 0 || o.RetryMax < o.RetryMin {
		return fmt.Errorf("consumers: bad settings batch=%d workers=%d max_wait=%s retry=%s..%s", o.Batch, o.Workers, o.MaxWait, o.RetryMin, o.RetryMax)
	}
	if o.MaxDeadLetter <= 0 {
		o.MaxDeadLetter = events.MaxPayload
	}
	if o.FutureSkew == nil {
		o.FutureSkew = func() time.Duration { return 5 * time.Minute }
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = 500 * time.Millisecond
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 20 * time.Second
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

// Verdicts consumes the verdict stream.
type Verdicts struct {
	o       VerdictOptions
	log     *slog.Logger
	warn    *ratelog.Limiter
	dead    *prometheus.CounterVec
	retries prometheus.Counter
	fetched prometheus.Counter
	// probing is held by the fetch loop that waits for the store to come
	// back; the others queue on it and then probe once themselves.
	probing sync.Mutex
}

// NewVerdicts returns the verdict consumer.
func NewVerdicts(o VerdictOptions) (*Verdicts, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	v := &Verdicts{
		o:    o,
		log:  o.Logger.With("component", "consumer"),
		warn: ratelog.New(o.Logger.With("component", "consumer"), 10*time.Second),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_dead_letters_total",
			Help: "Invalid verdict events sent to the dead-letter subject, by reason.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_event_retries_total",
			Help: "Events nak'ed for redelivery after a transient failure.",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_events_fetched_total",
			Help: "Messages fetched from the verdict stream, redeliveries included.",
		}),
	}
	for _, c := range []prometheus.Collector{v.dead, v.retries, v.fetched} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Run fetches and applies batches with o.Workers concurrent loops (Pull),
// so that fetching, the Redis round trip and acking of different batches
// overlap; up to 2 * Workers * Batch messages are in flight, within the
// consumer's max_ack_pending. When ctx is cancelled it stops fetching,
// finishes and acks the batches in hand and requested, and returns.
func (v *Verdicts) Run(ctx context.Context) error {
	p := Pull{Consumer: v.o.Consumer, Batch: v.o.Batch, MaxWait: v.o.MaxWait, FillWait: v.o.FillWait,
		Handle: func(msgs []jetstream.Msg) { v.finish(ctx, msgs) },
		Failed: func(err error) bool {
			v.warn.Warn("fetch", "err", err)
			return sleep(ctx, v.o.RetryMin)
		},
		Ended: func(err error) { v.log.Debug("fetch ended", "err", err) },
	}
	if idle, ok := v.o.Processor.(interface{ Idle(context.Context) }); ok {
		p.Idle = func() { idle.Idle(ctx) }
	}
	var wg sync.WaitGroup
	for range v.o.Workers {
		wg.Go(func() { p.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// Pull is the verdict consumer's fetch loop, shared with aupload's
// JetStream ceiling so that the ceiling fetches as aupd does.
//
// A fetch asks for up to Batch events and ends when it has them or when
// FillWait has passed, with what it has then. The server hands what
// arrives to the waiting fetches in turn, so a batch of Batch takes
// Workers*Batch arrivals to fill: under a middling load that is tens of
// milliseconds, and every event of it would wait that long before it is
// counted. FillWait bounds the wait; a backlog still fills whole batches
// at once. While batches come full, the next one is requested before the
// one in hand is handled, so that the server delivers it meanwhile; that
// request takes what is there without waiting, so the last partial batch
// of a backlog goes on at once. After a fetch that brought nothing, the
// loop waits for the next event with a fetch of one that waits up to
// MaxWait (a long poll): an idle loop asks the server once every MaxWait,
// and the first event after a pause goes on as soon as it arrives.
type Pull struct {
	Consumer jetstream.Consumer
	Batch    int
	MaxWait  time.Duration // how long an idle loop's fetch waits for an event
	// FillWait is how long a fetch waits to fill its batch; 0: MaxWait,
	// with no long poll of one event (a fetch of Batch that waits MaxWait).
	FillWait time.Duration
	// Handle gets every batch that is not empty, also once ctx is
	// cancelled: a batch in hand or requested ahead is finished, not left
	// to be redelivered after the ack wait.
	Handle func(msgs []jetstream.Msg)
	Idle   func()           // optional: after a fetch that brought nothing
	Failed func(error) bool // optional: a fetch request failed; false stops the loop (nil: try again)
	Ended  func(error)      // optional: a fetch ended early on an error other than a timeout
}

// fetch requests a batch: after a fetch that brought nothing (idle), one
// event with the long poll's wait, else Batch events within FillWait.
func (p *Pull) fetch(idle bool) (jetstream.MessageBatch, error) {
	switch {
	case p.FillWait <= 0:
		return p.Consumer.Fetch(p.Batch, jetstream.FetchMaxWait(p.MaxWait))
	case idle:
		return p.Consumer.Fetch(1, jetstream.FetchMaxWait(p.MaxWait))
	default:
		return p.Consumer.Fetch(p.Batch, jetstream.FetchMaxWait(p.FillWait))
	}
}

// Run pulls until ctx is cancelled.
func (p *Pull) Run(ctx context.Context) {
	var next jetstream.MessageBatch // requested ahead
	idle := false                   // the last fetch brought nothing
	for ctx.Err() == nil {
		batch := next
		next = nil
		if batch == nil {
			var err error
			if batch, err = p.fetch(idle); err != nil {
				if ctx.Err() != nil || (p.Failed != nil && !p.Failed(err)) {
					return
				}
				continue
			}
		}
		msgs := p.collect(ctx, batch)
		if idle = len(msgs) == 0; idle {
			if p.Idle != nil {
				p.Idle()
			}
			continue
		}
		if len(msgs) == p.Batch && ctx.Err() == nil {
			next, _ = p.Consumer.FetchNoWait(p.Batch) // on error, the next turn fetches again
		}
		p.Handle(msgs)
	}
	if next != nil {
		if msgs := p.collect(ctx, next); len(msgs) > 0 {
			p.Handle(msgs)
		}
	}
}

// collect waits for the messages of a fetch.
func (p *Pull) collect(ctx context.Context, batch jetstream.MessageBatch) []jetstream.Msg {
	msgs := make([]jetstream.Msg, 0, p.Batch)
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil && p.Ended != nil {
		p.Ended(err)
	}
	return msgs
}

// finish handles a batch in hand, even when ctx is cancelled now, within
// the drain timeout.
func (v *Verdicts) finish(ctx context.Context, msgs []jetstream.Msg) {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.o.DrainTimeout)
	defer cancel()
	if down := v.handle(hctx, msgs); down {
		v.awaitStore(ctx)
	}
}

// Handle applies one fetched batch and acks, naks or terminates every
// message of it.
func (v *Verdicts) Handle(ctx context.Context, msgs []jetstream.Msg) {
	v.handle(ctx, msgs)
}

// storeDown probes the store after a transient failure: true when it does
// not answer.
func (v *Verdicts) storeDown(ctx context.Context) bool {
	if v.o.Probe == nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, max(v.o.ProbeEvery, time.Second))
	defer cancel()
	return v.o.Probe(pctx) != nil
}

// awaitStore returns once the probe succeeds or ctx ends. One fetch loop
// probes at a time; the others wait for it, so that an outage costs one
// probe per interval and no fetches.
func (v *Verdicts) awaitStore(ctx context.Context) {
	v.probing.Lock()
	defer v.probing.Unlock()
	for v.storeDown(ctx) {
		v.warn.Warn("store unreachable: fetching paused until it answers")
		if !sleep(ctx, v.o.ProbeEvery) {
			return
		}
	}
}

// handle is Handle; it reports whether events failed because the store
// is down.
func (v *Verdicts) handle(ctx context.Context, msgs []jetstream.Msg) (down bool) {
	v.fetched.Add(float64(len(msgs)))
	now := v.o.Now()
	skew := v.o.FutureSkew()
	evs := make([]worker.Event, 0, len(msgs))
	valid := make([]jetstream.Msg, 0, len(msgs))
	metas := make([]*jetstream.MsgMetadata, len(msgs))
	var dead []deadLetter
	for i, m := range msgs {
		seq, ok := StreamSeq(m.Reply())
		if !ok {
			if meta, err := m.Metadata(); err == nil {
				seq, metas[i] = meta.Sequence.Stream, meta
			}
		}
		ev, err := events.ParseVerdict(m.Subject(), m.Data(), now, skew)
		if err != nil {
			meta := metas[i]
			reason, field, detail := events.ReasonInvalidJSON, "", err.Error()
			if ie, ok := events.AsInvalid(err); ok {
				reason, field, detail = ie.Reason, ie.Field, ie.Detail
			}
			dead = append(dead, deadLetter{msg: m, meta: meta, reason: reason, field: field, detail: detail})
			continue
		}
		evs = append(evs, worker.Event{Verdict: ev, Seq: seq})
		valid = append(valid, m)
	}
	if len(evs) > 0 {
		errs := v.o.Processor.Process(ctx, evs)
		if slices.ContainsFunc(errs, func(err error) bool { return err != nil && !permanent(err) }) {
			down = v.storeDown(ctx)
		}
		for i, m := range valid {
			err := errs[i]
			switch {
			case err == nil:
				_ = m.Ack() // a lost ack is a redelivery, and a redelivery counts nothing
			case permanent(err):
				dead = append(dead, deadLetter{msg: m, reason: ReasonProcessingFailed, detail: err.Error()})
			case v.lastDelivery(m):
				dead = append(dead, deadLetter{msg: m, reason: ReasonMaxDeliveries, detail: err.Error()})
			case down:
				// redelivered as soon as the store is back (awaitStore)
				v.retries.Inc()
				_ = m.NakWithDelay(v.o.RetryMin)
			default:
				v.retries.Inc()
				_ = m.NakWithDelay(v.backoff(m))
			}
		}
	}
	v.deadLetters(ctx, dead)
	return down
}

// StreamSeq reads the stream sequence from a JetStream message's reply
// subject, the one figure of its metadata every message needs, without
// the rest (m.Metadata): "$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.
// <cseq>.<time>.<pending>", or from NATS 2.10 on the same with a domain
// and an account hash after ACK and a token at the end. false: another
// shape, for Metadata to judge.
func StreamSeq(reply string) (uint64, bool) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return 0, false
	}
	var tok [10]string
	n := 0
	for more := true; more; n++ {
		if n == len(tok) {
			return 0, false
		}
		tok[n], rest, more = strings.Cut(rest, ".")
	}
	var s string
	switch n {
	case 7: // 9 tokens with $JS.ACK
		s = tok[3]
	case 9, 10: // 11 or 12
		s = tok[5]
	default:
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil && seq > 0
}

// lastDelivery reports whether m is at its last allowed delivery.
func (v *Verdicts) lastDelivery(m jetstream.Msg) bool {
	if v.o.MaxDeliver <= 0 {
		return false
	}
	meta, err := m.Metadata()
	return err == nil && meta.NumDelivered >= uint64(v.o.MaxDeliver)
}

// backoff grows with the number of deliveries: retry_min doubled per
// delivery, at most retry_max.
func (v *Verdicts) backoff(m jetstream.Msg) time.Duration {
	n := uint64(1)
	if meta, err := m.Metadata(); err == nil {
		n = meta.NumDelivered
	}
	d := v.o.RetryMin
	for i := uint64(1); i < n && d < v.o.RetryMax; i++ {
		d *= 2
	}
	return min(d, v.o.RetryMax)
}

// deadLetter is an event on its way to the dead letters.
type deadLetter struct {
	msg                   jetstream.Msg
	meta                  *jetstream.MsgMetadata
	reason, field, detail string
}

// deadLetters publishes a batch's dead letters, the original payload byte
// for byte (cut to fit the dead-letter stream, with HeaderTruncated, when
// it is too large) with the reason in headers, waits once for all of
// them, and terminates each event whose dead letter is stored. An event
// whose dead letter cannot be stored is redelivered later, never lost.
func (v *Verdicts) deadLetters(ctx context.Context, dead []deadLetter) {
	if len(dead) == 0 {
		return
	}
	msgs := make([]*nats.Msg, len(dead))
	for i, d := range dead {
		msgs[i] = v.deadMsg(d)
	}
	errs := jsutil.PublishAll(ctx, v.o.JS, msgs, 10*time.Second)
	stored := map[string]int{}
	var failed int
	var first error
	for i, d := range dead {
		if errs[i] != nil {
			failed++
			first = cmp.Or(first, errs[i])
			v.retries.Inc()
			_ = d.msg.NakWithDelay(v.backoff(d.msg))
			continue
		}
		v.dead.WithLabelValues(d.reason).Inc()
		stored[d.reason]++
		_ = d.msg.Term()
	}
	for reason, n := range stored {
		// one line per reason and batch, not one per event
		d := dead[slices.IndexFunc(dead, func(d deadLetter) bool { return d.reason == reason })]
		v.log.Info("dead-lettered events", "reason", reason, "count", n, "field", d.field, "detail", clip(d.detail, 200))
	}
	if failed > 0 {
		v.warn.Warn("publish dead letters", "err", first, "failed", failed)
	}
}

// deadMsg builds the dead letter of d.
func (v *Verdicts) deadMsg(d deadLetter) *nats.Msg {
	m := d.msg
	dl := nats.NewMsg(DeadLetterSubject)
	dl.Header.Set(HeaderReason, d.reason)
	if d.field != "" {
		dl.Header.Set(HeaderField, headerSafe(d.field))
	}
	dl.Header.Set(HeaderDetail, headerSafe(d.detail))
	dl.Header.Set(HeaderSubject, headerSafe(m.Subject()))
	meta := d.meta
	if meta == nil {
		meta, _ = m.Metadata()
	}
	if meta != nil {
		seq := strconv.FormatUint(meta.Sequence.Stream, 10)
		dl.Header.Set(HeaderStream, meta.Stream)
		dl.Header.Set(HeaderSeq, seq)
		dl.Header.Set(nats.MsgIdHdr, "dlq-"+meta.Stream+"-"+seq)
	}
	data := m.Data()
	if room := v.o.MaxDeadLetter - headerSize(dl.Header) - 256; len(data) > room {
		dl.Header.Set(HeaderTruncated, strconv.Itoa(len(data)))
		data = data[:max(room, 0)]
	}
	dl.Data = data
	return dl
}

// headerSize is the wire size of h, a little over.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// headerSafe keeps a header value on one line and bounded.
func headerSafe(s string) string {
	b := make([]byte, 0, min(len(s), 512))
	for i := 0; i < len(s) && len(b) < 512; i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			c = ' '
		}
		b = append(b, c)
	}
	return string(b)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
