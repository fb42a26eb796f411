// Package consumers holds aupd's JetStream pull loops: fetch a batch,
// decode and validate each event, dead-letter the invalid ones, hand the
// valid ones to the worker, then ack what is committed and nak the rest
// with a backoff.
package consumers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/worker"
)

// Processor applies a batch of valid events (the worker).
type Processor interface {
	Process(ctx context.Context, evs []worker.Event) []error
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
)

// DeadLetterSubject is where invalid verdict events go.
const DeadLetterSubject = "aup.dlq.verdict"

// VerdictOptions configure the verdict consumer.
type VerdictOptions struct {
	JS         jetstream.JetStream
	Consumer   jetstream.Consumer
	Processor  Processor
	Batch      int
	MaxWait    time.Duration
	Workers    int
	RetryMin   time.Duration
	RetryMax   time.Duration
	FutureSkew func() time.Duration
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
	if o.FutureSkew == nil {
		o.FutureSkew = func() time.Duration { return 5 * time.Minute }
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
	dead    *prometheus.CounterVec
	retries prometheus.Counter
	fetched prometheus.Counter
}

// NewVerdicts returns the verdict consumer.
func NewVerdicts(o VerdictOptions) (*Verdicts, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	v := &Verdicts{
		o:   o,
		log: o.Logger.With("component", "consumer"),
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

// Run fetches and applies batches with o.Workers concurrent loops, so that
// fetching, the Redis round trip and acking of different batches overlap.
// When ctx is cancelled it stops fetching, finishes and acks the batches in
// hand, and returns.
func (v *Verdicts) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, v.o.Workers)
	for range v.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.loop(ctx); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func (v *Verdicts) loop(ctx context.Context) error {
	for ctx.Err() == nil {
		batch, err := v.o.Consumer.Fetch(v.o.Batch, jetstream.FetchMaxWait(v.o.MaxWait))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			v.log.Warn("fetch", "err", err)
			if !sleep(ctx, v.o.RetryMin) {
				return nil
			}
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			v.log.Debug("fetch ended", "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		// The batch in hand is finished even when ctx is cancelled now.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.o.DrainTimeout)
		v.Handle(hctx, msgs)
		cancel()
	}
	return nil
}

// Handle applies one fetched batch and acks, naks or terminates every
// message of it.
func (v *Verdicts) Handle(ctx context.Context, msgs []jetstream.Msg) {
	v.fetched.Add(float64(len(msgs)))
	now := v.o.Now()
	skew := v.o.FutureSkew()
	evs := make([]worker.Event, 0, len(msgs))
	valid := make([]jetstream.Msg, 0, len(msgs))
	for _, m := range msgs {
		var seq uint64
		meta, err := m.Metadata()
		if err == nil {
			seq = meta.Sequence.Stream
		}
		ev, err := events.ParseVerdict(m.Subject(), m.Data(), now, skew)
		if err != nil {
			v.deadLetter(ctx, m, seq, err)
			continue
		}
		evs = append(evs, worker.Event{Verdict: ev, Seq: seq})
		valid = append(valid, m)
	}
	if len(evs) == 0 {
		return
	}
	errs := v.o.Processor.Process(ctx, evs)
	for i, m := range valid {
		if errs[i] == nil {
			_ = m.Ack() // a lost ack is a redelivery, and a redelivery counts nothing
			continue
		}
		v.retries.Inc()
		_ = m.NakWithDelay(v.backoff(m))
	}
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

// deadLetter publishes an invalid event, byte for byte, with its reason in
// headers, and terminates it once the dead letter is stored. If the dead
// letter cannot be stored, the event is redelivered later rather than
// lost.
func (v *Verdicts) deadLetter(ctx context.Context, m jetstream.Msg, seq uint64, err error) {
	reason, field, detail := events.ReasonInvalidJSON, "", err.Error()
	if ie, ok := events.AsInvalid(err); ok {
		reason, field, detail = ie.Reason, ie.Field, ie.Detail
	}
	dl := nats.NewMsg(DeadLetterSubject)
	dl.Data = m.Data()
	dl.Header.Set(HeaderReason, reason)
	if field != "" {
		dl.Header.Set(HeaderField, headerSafe(field))
	}
	dl.Header.Set(HeaderDetail, headerSafe(detail))
	dl.Header.Set(HeaderSubject, headerSafe(m.Subject()))
	if seq != 0 {
		stream := ""
		if meta, err := m.Metadata(); err == nil {
			stream = meta.Stream
		}
		dl.Header.Set(HeaderStream, stream)
		dl.Header.Set(HeaderSeq, strconv.FormatUint(seq, 10))
		dl.Header.Set(nats.MsgIdHdr, "dlq-"+stream+"-"+strconv.FormatUint(seq, 10))
	}
	if _, perr := v.o.JS.PublishMsg(ctx, dl); perr != nil {
		v.log.Warn("publish dead letter", "err", perr, "reason", reason)
		v.retries.Inc()
		_ = m.NakWithDelay(v.backoff(m))
		return
	}
	v.dead.WithLabelValues(reason).Inc()
	v.log.Info("dead-lettered invalid event", "reason", reason, "field", field, "detail", detail, "seq", seq)
	_ = m.Term()
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
