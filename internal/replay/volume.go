package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// The replay of a volume limit. The volume records hold, per account,
// 12 buckets of each pair of window and count its limits have (a ring),
// not the messages themselves; so a limit is tried against what the
// records show now: for each account in scope, the count over the window
// tried now, and the highest count over it within the period, from the
// ring of its limits that answers the window (whole buckets of it, up to
// its window). The live limits' crossings are read from the account
// stream, and their throttles in force from the accounts' keys.

// VolumeRecords reads the accounts' volume records (store.Store).
type VolumeRecords interface {
	ScanVolume(ctx context.Context, limits func(account string) *store.VolumeLimits, fn func([]store.VolumeRecord) error) error
}

// validateVolume checks the volume limit tried and sets its default
// action. Whether the records can answer it depends on the accounts in
// scope (Replayer.volume).
func (req *Request) validateVolume() error {
	if req.Volume == nil {
		return nil
	}
	l := *req.Volume
	if l.Action == "" {
		l.Action = rules.VolumeSuspend
	}
	req.Volume = &l
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case l.Window == 0:
		return invalid("a volume limit needs volume_window, a whole number of minutes from 1m to 168h")
	case l.Window < rules.MinVolumeWindow || l.Window > rules.MaxVolumeWindow || l.Window%time.Minute != 0:
		return invalid("volume_window %s is not a whole number of minutes from 1m to 168h", l.Window)
	case l.Messages < 0 || l.Recipients < 0 || (l.Messages > 0) == (l.Recipients > 0):
		return invalid("give one of volume_messages and volume_recipients, at least 1, with volume_window")
	case l.Max() > rules.MaxVolumeCount:
		return invalid("volume_%s %d is more than %d", l.Kind(), l.Max(), rules.MaxVolumeCount)
	case !l.Action.Valid():
		return invalid("volume_action %q is not throttle or suspend", l.Action)
	}
	return nil
}

// volumeSource is one list of volume limits in scope: the provider's
// (company ""), or a company's own.
type volumeSource struct {
	company string
	limits  []rules.VolumeLimit
	packed  *store.VolumeLimits
}

// volumeSources are the lists of volume limits that count the accounts
// in scope, the provider's first; lists without limits count nothing
// and are left out.
func volumeSources(sc *scope) []*volumeSource {
	var out []*volumeSource
	add := func(company string, limits []rules.VolumeLimit) {
		if len(limits) > 0 {
			out = append(out, &volumeSource{company: company, limits: limits,
				packed: store.PackVolume(rules.VolumePolicy{Limits: limits})})
		}
	}
	if sc.req.Company != "" {
		if c, ok := sc.dir.ByID(sc.req.Company); ok && c.Volume != nil {
			add(c.ID, *c.Volume)
		} else {
			add("", sc.pol.Volume)
		}
		return out
	}
	add("", sc.pol.Volume)
	for _, c := range sc.dir.All() {
		if c.Volume != nil {
			add(c.ID, *c.Volume)
		}
	}
	return out
}

// volume tries req.Volume against the volume records of the accounts in
// scope, beside the live volume limits' crossings in the period from
// from to now.
func (r *Replayer) volume(ctx context.Context, req Request, sc *scope, from, now time.Time) (*apitypes.ReplayVolume, error) {
	tried := *req.Volume
	kind := tried.Kind()
	v := &apitypes.ReplayVolume{From: from, To: now, Sources: []apitypes.ReplayVolumeSource{}, Accounts: []apitypes.ReplayVolumeAccount{},
		Limit: apitypes.ReplayVolumeLimit{Window: tried.Window.String(), Messages: tried.Messages, Recipients: tried.Recipients, Action: string(tried.Action)}}
	srcs := volumeSources(sc)
	if len(srcs) == 0 {
		return nil, fmt.Errorf("%w: no volume limits count the accounts in scope (aup.volume, or their company's volume): there are no volume records to replay", ErrInvalid)
	}
	answers := false
	for _, s := range srcs {
		out := apitypes.ReplayVolumeSource{Company: s.company, Rings: []apitypes.ReplayVolumeRing{}}
		for _, ring := range rules.VolumeRings(s.limits) {
			if ring.Kind == kind {
				out.Rings = append(out.Rings, ringText(ring))
			}
		}
		if ring, ok := rules.VolumeRingFor(s.limits, kind, tried.Window); ok {
			a := ringText(ring)
			out.Answer, answers = &a, true
		}
		v.Sources = append(v.Sources, out)
	}
	if !answers {
		return nil, fmt.Errorf("%w: the volume records cannot answer %s within %s: %s", ErrInvalid, kind, tried.Window, answerable(v.Sources, kind))
	}
	if r.o.Volume == nil {
		return nil, errors.New("replay: this aupd cannot read the volume records")
	}

	actual, err := r.readVolumeCrossings(ctx, from, sc)
	if err != nil {
		return nil, err
	}
	bySource := map[string]*volumeSource{}
	for _, s := range srcs {
		bySource[s.company] = s
	}
	// what an account's company, policy and records' limits are
	policyOf := func(a string) (*companies.Company, rules.VolumePolicy, *volumeSource) {
		c, _ := sc.dir.ByAccount(a)
		if sc.req.Company != "" && (c == nil || c.ID != sc.req.Company) {
			return nil, rules.VolumePolicy{}, nil
		}
		pol := companies.VolumePolicy(sc.pol, c, a)
		key := ""
		if c != nil && c.Volume != nil {
			key = c.ID
		}
		return c, pol, bySource[key]
	}
	kept := map[string]apitypes.ReplayVolumeAccount{}
	seen := map[string]bool{} // SCAN may return a key twice
	err = r.o.Volume.ScanVolume(ctx, func(a string) *store.VolumeLimits {
		if _, _, s := policyOf(a); s != nil {
			return s.packed
		}
		return nil
	}, func(recs []store.VolumeRecord) error {
		for _, rec := range recs {
			if seen[rec.Account] {
				continue
			}
			seen[rec.Account] = true
			if v.Records++; v.Records > r.o.MaxVolumeRecords {
				return fmt.Errorf("%w: more than %d volume records in scope; replay one company at a time", ErrInvalid, r.o.MaxVolumeRecords)
			}
			c, pol, _ := policyOf(rec.Account)
			acc := volumeAccount(rec, pol, tried, from)
			if c != nil {
				acc.Company = c.ID
			}
			if acc.Record == apitypes.RecordAnswered {
				v.Answered++
			}
			if acc.Would != nil {
				v.Over++
			}
			if acc.OverNow {
				v.OverNow++
			}
			if acc.Would != nil || acc.OverNow || acc.Throttle != nil || len(actual[rec.Account]) > 0 {
				acc.Actual = orEmpty(actual[rec.Account])
				kept[rec.Account] = acc
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for a, cs := range actual {
		if _, ok := kept[a]; !ok {
			kept[a] = apitypes.ReplayVolumeAccount{Account: a, Company: sc.companyID(a), Record: apitypes.RecordNone, Actual: cs}
		}
	}
	for _, acc := range kept {
		v.Accounts = append(v.Accounts, acc)
	}
	sort.Slice(v.Accounts, func(i, j int) bool { return v.Accounts[i].Account < v.Accounts[j].Account })
	return v, nil
}

// volumeAccount is what an account's record shows of the limit tried,
// the account's live volume policy being pol, within the period from
// from on.
func volumeAccount(rec store.VolumeRecord, pol rules.VolumePolicy, tried rules.VolumeLimit, from time.Time) apitypes.ReplayVolumeAccount {
	acc := apitypes.ReplayVolumeAccount{Account: rec.Account}
	if th := rec.Throttle; th != nil {
		acc.Throttle = &apitypes.ReplayThrottle{Limit: th.Limit, Until: th.Until}
	}
	ring, ok := rules.VolumeRingFor(pol.Limits, tried.Kind(), tried.Window)
	switch {
	case rec.OtherLimits:
		acc.Record = apitypes.RecordOtherLimits
		return acc
	case !ok:
		acc.Record = apitypes.RecordNoRing
		return acc
	}
	for _, rr := range rec.Rings {
		if rr.VolumeRing != ring {
			continue
		}
		f := rr.Series.Figures(tried.Window, from, tried.Max())
		acc.Record, acc.Bucket, acc.RecordFrom = apitypes.RecordAnswered, ring.Bucket().String(), rr.Series.From
		acc.Count, acc.Peak, acc.PeakFrom, acc.PeakTo = f.Now, f.Peak, f.PeakFrom, f.PeakTo
		acc.OverNow = f.OverNow(tried.Max())
		if f.Over() {
			acc.Would = &apitypes.ReplayVolumeWould{Action: pol.OnCrossing(tried), From: f.OverFrom, To: f.OverTo}
		}
		return acc
	}
	acc.Record = apitypes.RecordOtherLimits // not reached: the record was read with these limits
	return acc
}

// readVolumeCrossings reads the live volume limits' crossings from from
// on, by account: their suspensions and reports (a throttle publishes
// no account event).
func (r *Replayer) readVolumeCrossings(ctx context.Context, from time.Time, sc *scope) (map[string][]Crossing, error) {
	actual := map[string][]Crossing{}
	err := r.read(ctx, r.o.Accounts, from, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error {
		var ev events.AccountEvent
		if json.Unmarshal(m.Data(), &ev) != nil || ev.Suspension == nil || ev.Reason != rules.ReasonAUPViolation ||
			ev.Type != events.TypeSuspended && ev.Type != events.TypeReported ||
			!strings.HasPrefix(ev.Suspension.Rule, rules.VolumeRulePrefix) || ev.Time.Before(from) || !sc.inScope(ev.Account) {
			return nil
		}
		c := actualCrossing(ev)
		c.Volume = ev.Suspension.Volume
		actual[ev.Account] = append(actual[ev.Account], c)
		return nil
	})
	return actual, err
}

func ringText(r rules.VolumeRing) apitypes.ReplayVolumeRing {
	return apitypes.ReplayVolumeRing{Window: r.Window.String(), Bucket: r.Bucket().String()}
}

// answerable says which windows the records of the sources can answer.
func answerable(srcs []apitypes.ReplayVolumeSource, kind string) string {
	var parts []string
	for _, s := range srcs {
		if len(s.Rings) == 0 {
			continue
		}
		var rings []string
		for _, r := range s.Rings {
			rings = append(rings, fmt.Sprintf("in buckets of %s over %s", r.Bucket, r.Window))
		}
		who := "the provider's limits (aup.volume)"
		if s.Company != "" {
			who = "company " + s.Company + "'s limits"
		}
		parts = append(parts, fmt.Sprintf("%s count %s %s", who, kind, strings.Join(rings, " and ")))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("no volume limit in scope counts %s", kind)
	}
	return strings.Join(parts, "; ") + "; a window of whole buckets, up to the window they are kept over, can be answered"
}
