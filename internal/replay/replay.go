// Package replay answers "what would this threshold, this spam rate, or
// this volume limit have done?": it reads the stored verdicts back from
// the verdict stream with an ordered (ephemeral) consumer, never the live
// durable one, runs the AUP rules over them with rules.Replay, and sets
// the result beside what the live worker actually did, read from the
// account stream. A volume limit is tried against the accounts' volume
// records instead (volume.go). It acts on nothing.
package replay

import (
	"cmp"
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

// Directory finds the company that owns an account, and lists the
// companies (companies.Directory).
type Directory interface {
	ByAccount(account string) (*companies.Company, bool)
	ByID(id string) (*companies.Company, bool)
	All() []companies.Company
}

// Options are what a Replayer needs; all but MaxEvents, Volume,
// MaxVolumeRecords and Now are required.
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
	// Volume reads the volume records; nil: a volume limit cannot be
	// tried.
	Volume VolumeRecords
	// MaxVolumeRecords bounds the volume records one replay reads
	// (default 1,000,000).
	MaxVolumeRecords int
	Now              func() time.Time
}

func (o *Options) validate() error {
	if o.JS == nil || o.Verdicts == "" || o.Accounts == "" || o.Directory == nil || o.Policy == nil {
		return errors.New("replay: JetStream, stream names, directory and policy are required")
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = 2_000_000
	}
	if o.MaxVolumeRecords <= 0 {
		o.MaxVolumeRecords = 1_000_000
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
	// Threshold is the threshold to try for every account; 0: each
	// account's live threshold, which only a request with a SpamRate
	// asks for.
	Threshold int
	// SpamRate is the spam-rate rule to try for every account (rate 0:
	// off); nil: each account's live rule, so that a replay at the live
	// threshold decides as the live worker did.
	SpamRate *rules.SpamRateSetting
	// Volume is a volume limit to try against the volume records (its
	// Name is not used; Action "": suspend); nil: none. With neither a
	// Threshold nor a SpamRate, only the volume limit is tried.
	Volume  *rules.VolumeLimit
	Company string        // only this company's accounts; "": every account
	Since   time.Duration // the period looked at, ending now (default 24h)
}

// spam reports whether the request tries the spam rules: a threshold or
// a spam rate.
func (req *Request) spam() bool { return req.Threshold != 0 || req.SpamRate != nil }

// MaxSince bounds Request.Since.
const MaxSince = 31 * 24 * time.Hour

// ErrInvalid marks a bad request.
var ErrInvalid = errors.New("invalid replay request")

// validate checks req against the provider's rule p and fills in the
// default period.
func (req *Request) validate(p rules.Provider) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case req.Threshold < 0:
		return invalid("threshold must be at least 1 (or absent with a rate: each account's live threshold)")
	case !req.spam() && req.Volume == nil:
		return invalid("give a threshold (at least 1), a rate, a volume limit (volume_window with volume_messages or volume_recipients), or several")
	}
	if err := req.validateVolume(); err != nil {
		return err
	}
	if r := req.SpamRate; r != nil {
		switch {
		case r.Rate == 0 && r.MinSpam != 0:
			return invalid("min_spam goes with a rate above 0 (rate 0 turns the spam-rate rule off)")
		case r.Rate > 0 && r.MinSpam < 1:
			return invalid("a rate needs min_spam, the least spam count that may cross (at least 1)")
		}
		if err := r.Validate(); err != nil {
			return invalid("%v", err)
		}
		if r.Rate > 0 && !slices.Contains(p.Directions, rules.Outbound) {
			return invalid("the spam-rate rule weighs outbound spam, and aup.directions does not count outbound")
		}
	}
	if req.Since == 0 {
		req.Since = 24 * time.Hour
	}
	if req.Since < 0 || req.Since > MaxSince {
		return invalid("since must be between 1s and %s", MaxSince)
	}
	return nil
}

// Crossing is one crossing of an AUP rule, simulated or real.
type Crossing = apitypes.ReplayCrossing

// Account is one account that crossed, in the replay or for real.
type Account = apitypes.ReplayAccount

// Report is the result of a replay.
type Report = apitypes.ReplayReport

// Run replays req.
func (r *Replayer) Run(ctx context.Context, req Request) (*Report, error) {
	pol := r.o.Policy()
	if err := req.validate(pol); err != nil {
		return nil, err
	}
	now := r.o.Now()
	from := now.Add(-req.Since)
	rep := &Report{Threshold: req.Threshold, SpamRate: req.SpamRate, Company: req.Company,
		From: from, To: now, Window: pol.Window.String(), Accounts: []Account{}}
	sc := &scope{dir: r.o.Directory, pol: pol, req: req, accts: map[string]accountInfo{}}
	if req.Volume != nil {
		// Checked first: a window the records cannot answer is a bad
		// request, before the verdicts are read.
		v, err := r.volume(ctx, req, sc, from, now)
		if err != nil {
			return nil, err
		}
		rep.Volume = v
	}
	if req.spam() {
		if err := r.spam(ctx, sc, from, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// spam replays the spam rules over the stored verdicts of the period
// from from on, into rep.
func (r *Replayer) spam(ctx context.Context, sc *scope, from time.Time, rep *Report) error {
	start := from.Add(-sc.pol.Window)
	evs, err := r.readVerdicts(ctx, start, sc, rep)
	if err != nil {
		return err
	}
	resets, actual, err := r.readAccountEvents(ctx, start, from, sc)
	if err != nil {
		return err
	}
	would := map[string][]Crossing{}
	crossings := rules.Replay(evs, resets, sc.pol.Window, func(account string) rules.ReplayAccount {
		p := sc.account(account).policy
		return rules.ReplayAccount{Threshold: p.Threshold, SpamRate: p.SpamRate, Action: p.OnCrossing()}
	})
	for _, c := range crossings {
		if !c.At.Before(from) {
			would[c.Account] = append(would[c.Account], wouldCrossing(c))
		}
	}
	rep.Accounts = side(would, actual, sc)
	return nil
}

// scope is what a replay knows of the accounts it meets: their companies
// and the rules it tries for them, looked up once each.
type scope struct {
	dir   Directory
	pol   rules.Provider
	req   Request
	accts map[string]accountInfo
}

type accountInfo struct {
	company *companies.Company // nil: no company's
	policy  rules.Policy       // the live policy, with what the request tries
}

func (sc *scope) account(a string) accountInfo {
	info, ok := sc.accts[a]
	if ok {
		return info
	}
	c, _ := sc.dir.ByAccount(a)
	info = accountInfo{company: c, policy: companies.Policy(sc.pol, c, a)}
	if sc.req.Threshold > 0 {
		info.policy.Threshold = sc.req.Threshold
	}
	if sc.req.SpamRate != nil {
		info.policy.SpamRate = sc.req.SpamRate.Rule()
	}
	sc.accts[a] = info
	return info
}

func (sc *scope) companyID(a string) string {
	if c := sc.account(a).company; c != nil {
		return c.ID
	}
	return ""
}

func (sc *scope) inScope(a string) bool {
	return sc.req.Company == "" || sc.companyID(a) == sc.req.Company
}

// readVerdicts reads the stored verdicts from start on, as the consumer
// decodes them, into the replay's events; rep.Events counts them.
func (r *Replayer) readVerdicts(ctx context.Context, start time.Time, sc *scope, rep *Report) ([]rules.ReplayEvent, error) {
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
		info := sc.account(v.Account)
		if v.Direction == rules.Inbound && info.company == nil {
			return nil // not local: statistics only, nothing stored
		}
		if !sc.inScope(v.Account) {
			return nil
		}
		p := info.policy
		evs = append(evs, rules.ReplayEvent{Account: v.Account, ID: v.ID, Time: v.Time, At: meta.Timestamp,
			Counting: p.Counts(v.Direction, v.Verdict, true), Outbound: v.Direction == rules.Outbound,
			Ham: p.CountsForRate(v.Direction, v.Verdict)})
		return nil
	})
	return evs, err
}

// readAccountEvents reads what actually happened from start on: the
// reinstatements that reset the window, and the crossings the live
// worker made from from on, by account.
func (r *Replayer) readAccountEvents(ctx context.Context, start, from time.Time, sc *scope) ([]rules.ReplayReset, map[string][]Crossing, error) {
	var resets []rules.ReplayReset
	actual := map[string][]Crossing{}
	err := r.read(ctx, r.o.Accounts, start, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error {
		var ev events.AccountEvent
		if json.Unmarshal(m.Data(), &ev) != nil || !sc.inScope(ev.Account) {
			return nil
		}
		switch {
		case ev.Type == events.TypeReinstated && liftsAUP(ev):
			resets = append(resets, rules.ReplayReset{Account: ev.Account, At: ev.Time})
		case (ev.Type == events.TypeSuspended || ev.Type == events.TypeReported) && ev.Suspension != nil && ev.Reason == rules.ReasonAUPViolation:
			if !ev.Time.Before(from) {
				actual[ev.Account] = append(actual[ev.Account], actualCrossing(ev))
			}
		}
		return nil
	})
	return resets, actual, err
}

// wouldCrossing is a simulated crossing as the API shows it.
func wouldCrossing(c rules.ReplayCrossing) Crossing {
	x := Crossing{At: c.At, Rule: c.Rule, Count: c.Count, Threshold: c.Threshold, Action: string(c.Action)}
	if f := c.Rate; f != nil {
		x.Rate = &events.RateFacts{Spam: f.Spam, Ham: f.Ham, Limit: float64(f.Rule.PPM) / 1e6, MinSpam: f.Rule.MinSpam}
	}
	return x
}

// actualCrossing is the live worker's crossing of an account event. One
// recorded before crossings named their rule was the count's.
func actualCrossing(ev events.AccountEvent) Crossing {
	s := ev.Suspension
	return Crossing{At: ev.Time, Rule: cmp.Or(s.Rule, rules.RuleSpamCount), Count: s.Count, Threshold: s.Threshold,
		Action: s.Action, Rate: s.Rate, ID: s.ID}
}

// side sets the simulated crossings beside the real ones, one entry per
// account that crossed in either, in order of address.
func side(would, actual map[string][]Crossing, sc *scope) []Account {
	out := []Account{}
	seen := map[string]bool{}
	for _, m := range []map[string][]Crossing{would, actual} {
		for a := range m {
			if seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, Account{Account: a, Company: sc.companyID(a), Would: orEmpty(would[a]), Actual: orEmpty(actual[a])})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
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
