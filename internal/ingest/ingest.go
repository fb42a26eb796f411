// Package ingest takes verdict events from outside NATS (the HTTP ingest,
// rspamd's metadata_exporter, feedback-loop reports) onto the verdict
// stream. Every event is validated exactly as the verdict consumer
// validates it (events.ParseVerdict on the same subject and bytes) and
// published with Nats-Msg-Id set to its id; Publish returns only once
// JetStream has stored it (or said it was a duplicate), so an answer of
// "accepted" means nothing can be lost any more.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Endpoints are the bounded values of the metric label "source": which
// way an event came in.
const (
	SourceVerdicts = "verdicts" // contract events over HTTP
	SourceRspamd   = "rspamd"   // rspamd's metadata_exporter
	SourceARF      = "arf"      // feedback-loop reports
)

// Results, the bounded values of the metric label "result".
const (
	ResultAccepted    = "accepted"    // stored in the stream
	ResultDuplicate   = "duplicate"   // JetStream already had this id (a retry)
	ResultInvalid     = "invalid"     // refused: the dead-letter reasons
	ResultRefused     = "refused"     // not turned into an event (not ARF, no local account, out of scope)
	ResultUnavailable = "unavailable" // JetStream did not store it; retry later
)

// Publisher is what Ingester needs from JetStream.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Options configure an Ingester. JS is required.
type Options struct {
	JS Publisher
	// FutureSkew is how far ahead of now an event's time may be
	// (aup.future_skew); nil: 5 minutes.
	FutureSkew func() time.Duration
	// Timeout bounds the wait for JetStream's acknowledgement of each
	// event (default 5s).
	Timeout    time.Duration
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
}

func (o *Options) validate() error {
	if o.JS == nil {
		return errors.New("ingest: no JetStream")
	}
	if o.Timeout < 0 {
		return errors.New("ingest: timeout must not be negative")
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.FutureSkew == nil {
		o.FutureSkew = func() time.Duration { return 5 * time.Minute }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Ingester validates and publishes events.
type Ingester struct {
	o      Options
	log    *slog.Logger
	events *prometheus.CounterVec
	// refusals counts the permanent refusals by reason: a bounded set
	// (the Reason* constants, arf.Reason*, the dead-letter reasons).
	refusals *prometheus.CounterVec
}

// New returns an Ingester.
func New(o Options) (*Ingester, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	in := &Ingester{o: o, log: o.Logger.With("component", "ingest"),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_ingest_events_total",
			Help: "Events offered over HTTP, by source (verdicts, rspamd, arf) and result (accepted, duplicate, invalid, refused, unavailable).",
		}, []string{"source", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_ingest_refusals_total",
			Help: "Events and reports offered over HTTP and refused for good (results refused and invalid), by source and reason.",
		}, []string{"source", "reason"}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{in.events, in.refusals} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ingest: register metrics: %w", err)
			}
		}
	}
	return in, nil
}

// Input is one event as it will be published: the subject's direction is
// the last token of Subject.
type Input struct {
	Subject string
	Data    []byte
}

// EventInput builds the input of an event this project made (from rspamd
// or a report): one JSON encoding, the contract's.
func EventInput(v *events.Verdict) (Input, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Input{}, fmt.Errorf("encode verdict: %w", err)
	}
	return Input{Subject: events.SubjectPrefix + string(v.Direction), Data: data}, nil
}

// SubjectOf picks the subject a contract event sent over HTTP is checked
// and published on: the one its own "direction" names. When that is
// missing or not a direction, the outbound subject is used only so that
// ParseVerdict reports the field itself (missing_field or invalid_field),
// as the consumer would.
func SubjectOf(data []byte) string {
	var peek struct {
		Direction json.RawMessage `json:"direction"`
	}
	_ = json.Unmarshal(data, &peek)
	var d string
	if json.Unmarshal(peek.Direction, &d) == nil && rules.Direction(d).Valid() {
		return events.SubjectPrefix + d
	}
	return events.SubjectPrefix + string(rules.Outbound)
}

// Result is what became of one input.
type Result struct {
	ID        string `json:"id,omitempty"`
	Result    string `json:"result"`           // one of the Result* values
	Stream    string `json:"stream,omitempty"` // where it is stored
	Seq       uint64 `json:"seq,omitempty"`    // its sequence there
	Account   string `json:"account,omitempty"`
	Direction string `json:"direction,omitempty"`
	Verdict   string `json:"verdict,omitempty"`
	// Reason, Field and Detail say why an event was not taken: the
	// dead-letter reasons (events.Reason*) for invalid events, or the
	// reason of a refusal.
	Reason string `json:"reason,omitempty"`
	Field  string `json:"field,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Line is the line of an NDJSON batch the event was on (from 1;
	// blank lines count but make no result).
	Line int `json:"line,omitempty"`
}

// OK reports whether the event is stored (now or before).
func (r Result) OK() bool { return r.Result == ResultAccepted || r.Result == ResultDuplicate }

// Refused is the result of an input that never became an event.
func Refused(reason, detail string) Result {
	return Result{Result: ResultRefused, Reason: reason, Detail: detail}
}

// Count records results that never reached Publish (refusals).
func (in *Ingester) Count(source string, rs ...Result) {
	for _, r := range rs {
		in.events.WithLabelValues(source, r.Result).Inc()
		if r.Result == ResultRefused || r.Result == ResultInvalid {
			in.refusals.WithLabelValues(source, r.Reason).Inc()
		}
	}
}

// Publish validates every input and publishes the valid ones in order,
// each waiting for JetStream to store it. allow, when set, refuses valid
// events whose account it does not allow (a company-scoped token's
// events for other companies). After the first failure to store, the
// remaining valid inputs are not tried (they answer unavailable too): the
// caller retries them all, and ids make the retry harmless.
func (in *Ingester) Publish(ctx context.Context, source string, inputs []Input, allow func(account string) bool) []Result {
	now := in.o.Now()
	skew := in.o.FutureSkew()
	out := make([]Result, len(inputs))
	var down error
	for i, inp := range inputs {
		v, err := events.ParseVerdict(inp.Subject, inp.Data, now, skew)
		if err != nil {
			r := Result{Result: ResultInvalid, Reason: events.ReasonInvalidJSON, Detail: err.Error()}
			if ie, ok := events.AsInvalid(err); ok {
				r.Reason, r.Field, r.Detail = ie.Reason, ie.Field, ie.Detail
			}
			r.ID = idOf(inp.Data)
			out[i] = r
			continue
		}
		r := Result{ID: v.ID, Account: v.Account, Direction: string(v.Direction), Verdict: string(v.Verdict)}
		if allow != nil && !allow(v.Account) {
			r.Result, r.Reason, r.Detail = ResultRefused, ReasonOutOfScope, "this token may only publish for its own company's accounts"
			out[i] = r
			continue
		}
		if down != nil {
			r.Result, r.Reason, r.Detail = ResultUnavailable, "unavailable", down.Error()
			out[i] = r
			continue
		}
		m := nats.NewMsg(inp.Subject)
		m.Data = inp.Data
		m.Header.Set(nats.MsgIdHdr, v.ID)
		pctx, cancel := context.WithTimeout(ctx, in.o.Timeout)
		ack, err := in.o.JS.PublishMsg(pctx, m)
		cancel()
		if err != nil {
			down = fmt.Errorf("the verdict stream did not store the event: %w", err)
			in.log.Warn("publish verdict", "err", err, "source", source)
			r.Result, r.Reason, r.Detail = ResultUnavailable, "unavailable", down.Error()
			out[i] = r
			continue
		}
		r.Result, r.Stream, r.Seq = ResultAccepted, ack.Stream, ack.Sequence
		if ack.Duplicate {
			r.Result = ResultDuplicate
		}
		out[i] = r
	}
	in.Count(source, out...)
	return out
}

// idOf returns the id of an invalid event when it has a usable one, so
// that the publisher can tell which event was refused.
func idOf(data []byte) string {
	var peek struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(data, &peek) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(peek.ID, &id) != nil || len(id) > events.MaxIDLen*4 {
		return ""
	}
	return id
}
