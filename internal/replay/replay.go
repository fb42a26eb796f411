// Package replay answers "what would this threshold have done?": it reads
// the stored verdicts back from the verdict stream with an ordered
// (ephemeral) consumer, never the live durable one, runs the AUP rule over
// them with rules.Replay, and sets the result beside what the live worker
// actually did, read from the account stream. It acts on nothing.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Directory finds the company that owns an account.
type Directory interface {
	ByAccount(account string) (*companies.Company, bool)
}

// Options are what a Replayer needs; all but MaxEvents and Now are
// required.
type Options struct {
	JS        jetstream.JetStream
	Verdicts  string // the verdict stream's name
	Accounts  string // the account stream's name
	Directory Directory
	Policy    func() rules.Provider
	// FutureSkew as the consumer applies it; nil: 5 minutes.
	FutureSkew func() time.Duration
	// MaxEvents bounds the events one replay reads (default 2,000,000).
	MaxEvents int
	Now       func() time.Time
}

func (o *Options) validate() error {
	if o.JS == nil || o.Verdicts == "" || o.Accounts == "" || o.Directory == nil || o.Policy == nil {
		return errors.New("replay: JetStream, stream names, directory and policy are required")
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = 2_000_000
	}
	if o.FutureSkew == nil {
		o.FutureSkew = func() time.Duration { return 5 * time.Minute }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Replayer runs replays.
type Replayer struct{ o Options }

// New returns a Replayer.
func New(o Options) (*Replayer, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Replayer{o: o}, nil
}

// Request is one replay.
type Request struct {
	Threshold int           // the threshold to try (at least 1)
	Company   string        // only this company's accounts; "": every account
	Since     time.Duration // the period looked at, ending now (default 24h)
}

// MaxSince bounds Request.Since.
const MaxSince = 31 * 24 * time.Hour

// ErrInvalid marks a bad request.
var ErrInvalid = errors.New("invalid replay request")

// Crossing is one crossing of a threshold, simulated or real.
type Crossing = apitypes.ReplayCrossing

// Account is one account that crossed, in the replay or for real.
type Account = apitypes.ReplayAccount

// Report is the result of a replay.
type Report = apitypes.ReplayReport

// Run replays req.
func (r *Replayer) Run(ctx context.Context, req Request) (*Report, error) {
	if req.Threshold < 1 {
		return nil, fmt.Errorf("%w: threshold must be at least 1", ErrInvalid)
	}
	if req.Since == 0 {
		req.Since = 24 * time.Hour
	}
	if req.Since < 0 || req.Since > MaxSince {
		return nil, fmt.Errorf("%w: since must be between 1s and %s", ErrInvalid, MaxSince)
	}
	pol := r.o.Policy()
	now := r.o.Now()
	from := now.Add(-req.Since)
	start := from.Add(-pol.Window)
	rep := &Report{Threshold: req.Threshold, Company: req.Company, From: from, To: now, Window: pol.Window.String(), Accounts: []Account{}}

	companyOf := func(account string) (*companies.Company, string) {
		c, ok := r.o.Directory.ByAccount(account)
		if !ok {
			return nil, ""
		}
		return c, c.ID
	}
	inScope := func(account string) bool {
		_, id := companyOf(account)
		return req.Company == "" || id == req.Company
	}

	// The stored verdicts, as the consumer decodes them.
	var evs []rules.ReplayEvent
	skew := r.o.FutureSkew()
	err := r.read(ctx, r.o.Verdicts, start, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
		rep.Events++
		if rep.Events > r.o.MaxEvents {
			return fmt.Errorf("%w: more than %d events in the period; ask for a shorter one", ErrInvalid, r.o.MaxEvents)
		}
		v, err := events.ParseVerdict(m.Subject(), m.Data(), meta.Timestamp, skew)
		if err != nil {
			return nil // dead-lettered by the consumer; never counted
		}
		c, _ := companyOf(v.Account)
		if v.Direction == rules.Inbound && c == nil {
			return nil // not local: statistics only, nothing stored
		}
		if !inScope(v.Account) {
			return nil
		}
		p := companies.Policy(pol, c, v.Account)
		evs = append(evs, rules.ReplayEvent{Account: v.Account, ID: v.ID, Time: v.Time, At: meta.Timestamp,
			Counting: p.Counts(v.Direction, v.Verdict, true)})
		return nil
	})
	if err != nil {
		return nil, err
	}

	// What actually happened: crossings, and reinstatements that reset
	// the window.
	var resets []rules.ReplayReset
	actual := map[string][]Crossing{}
	err = r.read(ctx, r.o.Accounts, start, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
		var ev events.AccountEvent
		if json.Unmarshal(m.Data(), &ev) != nil || !inScope(ev.Account) {
			return nil
		}
		switch {
		case ev.Type == events.TypeReinstated && liftsAUP(ev):
			resets = append(resets, rules.ReplayReset{Account: ev.Account, At: ev.Time})
		case (ev.Type == events.TypeSuspended || ev.Type == events.TypeReported) && ev.Suspension != nil && ev.Reason == rules.ReasonAUPViolation:
			if !ev.Time.Before(from) {
				actual[ev.Account] = append(actual[ev.Account], Crossing{At: ev.Time, Count: ev.Suspension.Count,
					Threshold: ev.Suspension.Threshold, Action: ev.Suspension.Action, ID: ev.Suspension.ID})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	would := map[string][]Crossing{}
	crossings := rules.Replay(evs, resets, pol.Window, func(account string) rules.ReplayAccount {
		c, _ := companyOf(account)
		p := companies.Policy(pol, c, account)
		return rules.ReplayAccount{Threshold: req.Threshold, Action: p.OnCrossing()}
	})
	for _, c := range crossings {
		if c.At.Before(from) {
			continue
		}
		would[c.Account] = append(would[c.Account], Crossing{At: c.At, Count: c.Count, Threshold: c.Threshold, Action: string(c.Action)})
	}
	seen := map[string]bool{}
	for _, m := range []map[string][]Crossing{would, actual} {
		for a := range m {
			if seen[a] {
				continue
			}
			seen[a] = true
			_, id := companyOf(a)
			rep.Accounts = append(rep.Accounts, Account{Account: a, Company: id, Would: orEmpty(would[a]), Actual: orEmpty(actual[a])})
		}
	}
	sort.Slice(rep.Accounts, func(i, j int) bool { return rep.Accounts[i].Account < rep.Accounts[j].Account })
	return rep, nil
}

func orEmpty(c []Crossing) []Crossing {
	if c == nil {
		return []Crossing{}
	}
	return c
}

// liftsAUP reports whether a reinstatement lifted the AUP services, which
// resets the window.
func liftsAUP(ev events.AccountEvent) bool {
	if ev.Old == nil || ev.New == nil {
		return false
	}
	had := slices.ContainsFunc(rules.AUPServices, func(s rules.Service) bool { return slices.Contains(ev.Old.Suspended, string(s)) })
	has := slices.ContainsFunc(rules.AUPServices, func(s rules.Service) bool { return slices.Contains(ev.New.Suspended, string(s)) })
	return had && !has
}

// read hands every message of stream stored from start on, up to the last
// one stored when the read began, to fn, through an ordered consumer: an
// ephemeral consumer of this read alone, which acknowledges nothing and
// leaves the live durable consumer untouched.
func (r *Replayer) read(ctx context.Context, stream string, start time.Time, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	s, err := r.o.JS.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("replay: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay: stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || !info.State.LastTime.After(start) && !info.State.LastTime.Equal(start) {
		return nil
	}
	cons, err := r.o.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return fmt.Errorf("replay: consumer on %s: %w", stream, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("replay: read %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("replay: read %s: %w", stream, err)
			}
			if meta.Sequence.Stream > last {
				return nil
			}
			if err := fn(m, meta); err != nil {
				return err
			}
			if meta.Sequence.Stream == last || meta.NumPending == 0 {
				return nil
			}
		}
		if got == 0 {
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				return fmt.Errorf("replay: read %s: %w", stream, err)
			}
			return nil // nothing more after start
		}
	}
}
