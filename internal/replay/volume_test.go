package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestVolumeReplayRecords tries a volume limit against records that the
// store counted (at a pinned clock, twenty minutes back) and reads them
// with Redis's clock, as aupd does: what each kind of record answers,
// what a crossing would do for an allowlisted account and in shadow
// mode, a live crossing whose record is gone, the company scope, and the
// bound on the records read.
func TestVolumeReplayRecords(t *testing.T) {
	ctx := context.Background()
	ns := testutil.NATSServer(t, "")
	js := testutil.JetStream(t, ns.ClientURL())
	for name, subj := range map[string]string{"V": "aup.verdict.>", "A": events.AccountSubjectPrefix + ">"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	rdb, prefix := testutil.Redis(t)
	hourly := rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 10, Action: rules.VolumeSuspend}
	var pol atomic.Pointer[rules.Provider]
	pol.Store(&rules.Provider{Window: 24 * time.Hour, Threshold: 50, Mode: rules.ModeEnforce, Volume: []rules.VolumeLimit{hourly}})
	dir, err := companies.New(nil, prefix, []companies.Company{
		{ID: "acme", Domains: []string{"example.com"}, VolumeAllowlist: []string{"listed@example.com"}},
		{ID: "globex", Domains: []string{"globex.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-20 * time.Minute)
	counter := store.New(rdb, prefix, store.WithClock(func() time.Time { return at }))
	count := func(account string, limits []rules.VolumeLimit, rcpts int) {
		t.Helper()
		r, err := counter.CountVolume(ctx, store.VolumeMessage{Account: account, Recipients: rcpts, SampleWindow: 24 * time.Hour,
			Limits: store.PackVolume(rules.VolumePolicy{Limits: limits, Mode: rules.ModeShadow})})
		if err != nil || r.Outcome != store.VolumeCounted {
			t.Fatalf("%s: %+v %v", account, r, err)
		}
	}
	count("busy@example.com", []rules.VolumeLimit{hourly}, 7)
	count("listed@example.com", []rules.VolumeLimit{hourly}, 8)
	count("calm@globex.test", []rules.VolumeLimit{hourly}, 1)
	count("out@elsewhere.test", []rules.VolumeLimit{hourly}, 9)
	// counted when the limit's window was 2h: its ring is not the hour's
	two := hourly
	two.Window = 2 * time.Hour
	count("old@example.com", []rules.VolumeLimit{two}, 9)
	// A volume crossing an hour ago whose record is gone (a reinstatement
	// resets it), and a spam-count crossing, which is not the volume's.
	for i, c := range []struct{ account, rule string }{{"gone@example.com", "volume:hourly"}, {"spam@example.com", rules.RuleSpamCount}} {
		ev := events.AccountEvent{ID: fmt.Sprintf("ev-%d", i), Type: events.TypeSuspended, Time: time.Now().Add(-time.Hour), Account: c.account,
			Actor: events.ActorAupd, Reason: events.ReasonAUP, Suspension: &events.AUPSuspension{ID: fmt.Sprintf("s-%d", i), Action: "suspend",
				Rule: c.rule, Threshold: 10, Count: 12}}
		data, _ := json.Marshal(ev)
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: events.AccountSubjectPrefix + ev.Type, Data: data}); err != nil {
			t.Fatal(err)
		}
	}

	replayer := func(maxRecords int) *Replayer {
		r, err := New(Options{JS: js, Verdicts: "V", Accounts: "A", Directory: dir, Policy: func() rules.Provider { return *pol.Load() },
			Volume: store.New(rdb, prefix), MaxVolumeRecords: maxRecords})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	run := func(req Request) *apitypes.ReplayVolume {
		t.Helper()
		rep, err := replayer(0).Run(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return rep.Volume
	}
	summary := func(v *apitypes.ReplayVolume) string {
		var out []string
		for _, a := range v.Accounts {
			s := fmt.Sprintf("%s %s", a.Account, a.Record)
			if a.Would != nil {
				s += " " + a.Would.Action
			}
			if a.Record == apitypes.RecordAnswered {
				s += fmt.Sprintf(" %d/%d", a.Count, a.Peak)
			}
			for _, c := range a.Actual {
				s += " actual " + c.Rule
			}
			out = append(out, s)
		}
		sort.Strings(out)
		return strings.Join(out, "; ")
	}
	eight := &rules.VolumeLimit{Window: time.Hour, Recipients: 6}
	v := run(Request{Volume: eight})
	if got := summary(v); got != "busy@example.com answered suspend 7/7; gone@example.com none actual volume:hourly; "+
		"listed@example.com answered report 8/8; out@elsewhere.test answered suspend 9/9" {
		t.Fatalf("at 6 within 1h: %s", got)
	}
	if v.Records != 5 || v.Answered != 4 || v.Over != 3 || v.OverNow != 3 || v.Limit.Action != "suspend" {
		t.Fatalf("at 6 within 1h: %+v", v)
	}
	// old@'s record is read (5) and does not answer (4); it crossed
	// nothing, and is not listed. In shadow mode, every crossing is a report.
	p := *pol.Load()
	p.Mode = rules.ModeShadow
	pol.Store(&p)
	if got := summary(run(Request{Volume: eight})); got != "busy@example.com answered report 7/7; gone@example.com none actual volume:hourly; "+
		"listed@example.com answered report 8/8; out@elsewhere.test answered report 9/9" {
		t.Fatalf("in shadow mode: %s", got)
	}
	// One company.
	if got := summary(run(Request{Volume: eight, Company: "globex"})); got != "" {
		t.Fatalf("globex: %s", got)
	}
	if v := run(Request{Volume: eight, Company: "globex"}); v.Records != 1 || v.Answered != 1 {
		t.Fatalf("globex: %+v", v)
	}
	// A period that starts after the messages: the hour that ends now
	// holds them.
	if v := run(Request{Volume: eight, Since: time.Minute}); v.Over != 3 {
		t.Fatalf("the last minute: %+v", v)
	}
	// Within 30 minutes, the messages of twenty minutes ago count; within
	// 5, only those of the bucket of now and before it that make up the
	// window: none now, the most 20 minutes ago.
	v = run(Request{Volume: &rules.VolumeLimit{Window: 5 * time.Minute, Recipients: 6}})
	if v.OverNow != 0 || v.Over != 3 {
		t.Fatalf("within 5m: %+v", v)
	}
	// The bound.
	if _, err := replayer(3).Run(ctx, Request{Volume: eight}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than 3 volume records") {
		t.Fatalf("bounded: %v", err)
	}
	if _, err := replayer(5).Run(ctx, Request{Volume: eight}); err != nil {
		t.Fatalf("at the bound: %v", err)
	}
}
