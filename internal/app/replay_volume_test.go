package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/replay"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// testClock is a clock a test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// TestReplayVolumeMatchesLive counts messages as the Postfix policy
// server does (the store's CountVolume, its clock pinned to the last
// half hour), with the provider's live limits (more than 10 recipients
// within 1h suspends, more than 4 messages within 1h throttles) and
// Globex's own (more than 8 recipients within 30m suspends), publishes
// the suspensions they made, and then replays volume limits against the
// records through the API of a whole aupd, whose clock is Redis's: at
// the live limits the replay shows exactly the accounts the live limits
// stopped, in the bucket they were stopped in; a stricter limit shows
// more, a looser one none; a window the records cannot answer is a 400
// saying which they can.
func TestReplayVolumeMatchesLive(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	hourly := rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 10, Action: rules.VolumeSuspend}
	msgs := rules.VolumeLimit{Name: "msgs", Window: time.Hour, Messages: 4, Action: rules.VolumeThrottle}
	half := rules.VolumeLimit{Name: "half", Window: 30 * time.Minute, Recipients: 8, Action: rules.VolumeSuspend}
	cfg.AUP.Volume = []rules.VolumeLimit{hourly, msgs}
	cfg.Companies[1].Volume = &[]rules.VolumeLimit{half} // globex
	h := start(t, withIngestTokens(t, cfg))
	ctx := context.Background()

	// The live limits, counted by the store the policy server uses, its
	// clock pinned: the messages were sent from 25 minutes ago on, so
	// that they are all within the hour when the replay reads them.
	base := time.Now().Add(-25 * time.Minute)
	clk := &testClock{t: base}
	st := store.New(rdb, prefix, store.WithClock(clk.now))
	provider := store.PackVolume(rules.VolumePolicy{Limits: cfg.AUP.Volume, Mode: rules.ModeEnforce})
	globex := store.PackVolume(rules.VolumePolicy{Limits: []rules.VolumeLimit{half}, Mode: rules.ModeEnforce})
	type crossing struct {
		rule  string
		at    time.Time
		count int
		until time.Time
	}
	live := map[string][]crossing{}
	send := func(account, company string, lim *store.VolumeLimits, at time.Duration, rcpts int) {
		t.Helper()
		clk.set(base.Add(at))
		a, err := st.Account(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		r, err := st.CountVolume(ctx, store.VolumeMessage{Account: account, Company: company, Version: a.Version,
			Recipients: rcpts, Limits: lim, SampleWindow: cfg.AUP.Window})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range r.Crossings {
			live[account] = append(live[account], crossing{c.Limit.Rule(), clk.now(), c.Count, c.Until})
		}
		if r.Pending {
			if _, err := st.FlushOutbox(ctx, account, jsPublisher{h.js}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// v1 sends 11 recipients in 10 minutes: suspended at the third
	// message; its next one is not counted.
	send("v1@example.com", "acme", provider, 0, 4)
	send("v1@example.com", "acme", provider, 5*time.Minute, 4)
	before, err := st.Account(ctx, "v1@example.com")
	if err != nil {
		t.Fatal(err)
	}
	send("v1@example.com", "acme", provider, 10*time.Minute, 3)
	// A message whose recipients passed the sender check before the
	// suspension reaches the end of DATA after it.
	clk.set(base.Add(11 * time.Minute))
	if r, err := st.CountVolume(ctx, store.VolumeMessage{Account: "v1@example.com", Company: "acme", Version: before.Version,
		Recipients: 1, Limits: provider, SampleWindow: cfg.AUP.Window}); err != nil || r.Outcome != store.VolumeChanged {
		t.Fatalf("v1 after its suspension: %+v %v", r, err)
	}
	// v2 sends 5 one-recipient messages: throttled at the fifth, until
	// its first leaves the hour, after the replay.
	for i := range 5 {
		send("v2@example.com", "acme", provider, time.Duration(i)*time.Minute, 1)
	}
	// v3, of no company, sends 9 recipients: within every live limit.
	send("v3@other.test", "", provider, 12*time.Minute, 5)
	send("v3@other.test", "", provider, 13*time.Minute, 4)
	// v4 sends 2.
	send("v4@example.com", "acme", provider, 4*time.Minute, 2)
	// g1 of Globex, with its own limit: 9 recipients in 30 minutes.
	send("g1@globex.test", "globex", globex, 6*time.Minute, 5)
	send("g1@globex.test", "globex", globex, 7*time.Minute, 4)
	if got := fmt.Sprint(live); !strings.Contains(got, "v1@example.com:[{volume:hourly") || !strings.Contains(got, "v2@example.com:[{volume:msgs") ||
		!strings.Contains(got, "g1@globex.test:[{volume:half") || len(live) != 3 {
		t.Fatalf("the live limits crossed: %s", got)
	}

	// What the replays must leave as it is: every key of the accounts.
	snapshot := func() string {
		t.Helper()
		var b strings.Builder
		for _, a := range []string{"v1@example.com", "v2@example.com", "v3@other.test", "v4@example.com", "g1@globex.test"} {
			for _, suf := range []string{"s", "v", "vt", "h", "o"} {
				dump, err := rdb.Dump(ctx, store.AccountKey(prefix, a, suf)).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s %s %x\n", a, suf, dump)
			}
		}
		return b.String()
	}
	keys := snapshot()

	get := func(q string) replay.Report { t.Helper(); return getReplay(t, h, tokAdminIngest, q) }
	byAccount := func(r replay.Report) map[string]apitypes.ReplayVolumeAccount {
		t.Helper()
		if r.Volume == nil {
			t.Fatalf("no volume in %+v", r)
		}
		out := map[string]apitypes.ReplayVolumeAccount{}
		for _, a := range r.Volume.Accounts {
			out[a.Account] = a
		}
		return out
	}
	over := func(r replay.Report) string {
		var out []string
		for _, a := range r.Volume.Accounts {
			if a.Would != nil {
				out = append(out, fmt.Sprintf("%s %s %d", a.Account, a.Would.Action, a.Peak))
			}
		}
		sort.Strings(out)
		return strings.Join(out, ", ")
	}

	// At the live suspend limit: the accounts it suspended, no other, in
	// the bucket it suspended them in, at the count it did.
	r := get("volume_window=1h&volume_recipients=10&volume_action=suspend")
	if r.Events != 0 || len(r.Accounts) != 0 || r.Threshold != 0 {
		t.Fatalf("a volume replay read verdicts: %+v", r)
	}
	v := r.Volume
	if v.Limit != (apitypes.ReplayVolumeLimit{Window: "1h0m0s", Recipients: 10, Action: "suspend"}) || v.Records != 5 || v.Answered != 4 || v.Over != 1 {
		t.Fatalf("report %+v", v)
	}
	if len(v.Sources) != 2 || v.Sources[0].Company != "" || v.Sources[0].Answer == nil ||
		*v.Sources[0].Answer != (apitypes.ReplayVolumeRing{Window: "1h0m0s", Bucket: "5m0s"}) ||
		v.Sources[1].Company != "globex" || v.Sources[1].Answer != nil || fmt.Sprint(v.Sources[1].Rings) != "[{30m0s 2m30s}]" {
		t.Fatalf("sources %+v", v.Sources)
	}
	accts := byAccount(r)
	for a, acc := range accts {
		var crossed []crossing
		for _, c := range live[a] {
			if c.rule == "volume:hourly" {
				crossed = append(crossed, c)
			}
		}
		if acc.Record != apitypes.RecordAnswered {
			continue
		}
		if (acc.Would != nil) != (len(crossed) > 0) {
			t.Errorf("%s: would %+v; the live limit crossed %+v", a, acc.Would, crossed)
			continue
		}
		if len(crossed) > 0 {
			c := crossed[0]
			if acc.Would.Action != "suspend" || c.at.Before(acc.Would.From) || !c.at.Before(acc.Would.To) || acc.Peak != c.count || acc.Bucket != "5m0s" {
				t.Errorf("%s: would %+v, peak %d; the live limit crossed at %s at %d", a, acc.Would, acc.Peak, c.at, c.count)
			}
		}
	}
	if got := over(r); got != "v1@example.com suspend 11" {
		t.Fatalf("over the live limit: %s", got)
	}
	// Its suspension is the live side, with its volume.
	v1 := accts["v1@example.com"]
	if len(v1.Actual) != 1 || v1.Actual[0].Rule != "volume:hourly" || v1.Actual[0].Count != 11 || v1.Actual[0].Threshold != 10 ||
		v1.Actual[0].Action != "suspend" || v1.Actual[0].Volume == nil || v1.Actual[0].Volume.Recipients == nil || *v1.Actual[0].Volume.Recipients != 11 ||
		!v1.Actual[0].At.Equal(live["v1@example.com"][0].at.Truncate(time.Millisecond)) || v1.Count != 11 || !v1.OverNow || v1.Company != "acme" {
		t.Fatalf("v1: %+v", v1)
	}
	// g1's record cannot answer an hour; its live crossing is there.
	if g1 := accts["g1@globex.test"]; g1.Record != apitypes.RecordNoRing || len(g1.Actual) != 1 || g1.Actual[0].Rule != "volume:half" || g1.Would != nil {
		t.Fatalf("g1: %+v", g1)
	}
	// v2 is listed for its throttle, under the recipients tried.
	if v2 := accts["v2@example.com"]; v2.Throttle == nil || v2.Throttle.Limit != "msgs" || !v2.Throttle.Until.Equal(live["v2@example.com"][0].until) ||
		v2.Would != nil || v2.Count != 5 {
		t.Fatalf("v2: %+v", v2)
	}
	if _, ok := accts["v4@example.com"]; ok || len(accts) != 3 {
		t.Fatalf("listed %v", accts)
	}

	// At the live throttle: over it now exactly where a throttle holds.
	r = get("volume_window=1h&volume_messages=4&volume_action=throttle")
	for a, acc := range byAccount(r) {
		if acc.Record == apitypes.RecordAnswered && acc.OverNow != (acc.Throttle != nil) {
			t.Errorf("%s: over now %v, throttle %+v", a, acc.OverNow, acc.Throttle)
		}
	}
	if got := over(r); got != "v2@example.com throttle 5" || r.Volume.OverNow != 1 {
		t.Fatalf("over the live throttle: %s (%d now)", got, r.Volume.OverNow)
	}

	// Stricter: v3 too; and within half an hour, from the hour's buckets,
	// and from Globex's own (2m30s), which answer it too.
	if got := over(get("volume_window=1h&volume_recipients=8")); got != "v1@example.com suspend 11, v3@other.test suspend 9" {
		t.Fatalf("at 8 within 1h: %s", got)
	}
	r = get("volume_window=30m&volume_recipients=8&volume_action=throttle")
	if got := over(r); got != "g1@globex.test throttle 9, v1@example.com throttle 11, v3@other.test throttle 9" {
		t.Fatalf("at 8 within 30m: %s", got)
	}
	if a := byAccount(r)["g1@globex.test"]; a.Bucket != "2m30s" || a.Would.Action != "throttle" {
		t.Fatalf("g1 within 30m: %+v", a)
	}
	if a := byAccount(r)["v3@other.test"]; a.Bucket != "5m0s" || a.PeakTo.Sub(a.PeakFrom) != 30*time.Minute || a.Count != 9 || !a.OverNow {
		t.Fatalf("v3 within 30m: %+v", a)
	}
	// Globex at its own live limit: g1, in the bucket its limit crossed in.
	r = get("company=globex&volume_window=30m&volume_recipients=8")
	if g1 := byAccount(r)["g1@globex.test"]; over(r) != "g1@globex.test suspend 9" || len(g1.Actual) != 1 ||
		g1.Actual[0].At.Before(g1.Would.From) || !g1.Actual[0].At.Before(g1.Would.To) || g1.Would.To.Sub(g1.Would.From) != 150*time.Second {
		t.Fatalf("globex at its limit: %+v", g1)
	}
	// Looser: none.
	r = get("volume_window=1h&volume_recipients=100")
	if got := over(r); got != "" || r.Volume.Over != 0 || r.Volume.OverNow != 0 {
		t.Fatalf("at 100: %s", got)
	}
	// A company's token: its own accounts only.
	r = getReplay(t, h, tokAcmeAbuse, "volume_window=1h&volume_recipients=1")
	if got := over(r); got != "v1@example.com suspend 11, v2@example.com suspend 5, v4@example.com suspend 2" || r.Volume.Records != 3 {
		t.Fatalf("acme at 1: %s (%d records)", got, r.Volume.Records)
	}
	// With a threshold too: both replays.
	r = get("threshold=3&volume_window=1h&volume_recipients=10")
	if r.Volume == nil || r.Threshold != 3 || r.Volume.Over != 1 {
		t.Fatalf("both: %+v", r)
	}
	// Without a volume parameter, none.
	if r := get("threshold=3"); r.Volume != nil {
		t.Fatalf("a spam replay with a volume: %+v", r.Volume)
	}

	// Bad requests, and windows the records cannot answer: 400, saying why.
	for q, want := range map[string]string{
		"volume_window=3h&volume_recipients=10":                   "cannot answer recipients within 3h0m0s: the provider's limits (aup.volume) count recipients in buckets of 5m0s over 1h0m0s",
		"volume_window=7m&volume_recipients=10":                   "cannot answer recipients within 7m0s",
		"volume_window=1h&volume_recipients=10&company=globex":    "company globex's limits count recipients in buckets of 2m30s over 30m0s",
		"volume_window=1h&volume_messages=4&company=globex":       "no volume limit in scope counts messages",
		"volume_window=x&volume_recipients=10":                    "volume_window must be a duration",
		"volume_window=90s&volume_recipients=10":                  "not a whole number of minutes",
		"volume_window=200h&volume_recipients=10":                 "not a whole number of minutes from 1m to 168h",
		"volume_recipients=10":                                    "needs volume_window",
		"volume_window=1h":                                        "give one of volume_messages and volume_recipients",
		"volume_window=1h&volume_recipients=0":                    "give one of volume_messages and volume_recipients",
		"volume_window=1h&volume_recipients=-3":                   "give one of volume_messages and volume_recipients",
		"volume_window=1h&volume_recipients=5&volume_messages=5":  "give one of volume_messages and volume_recipients",
		"volume_window=1h&volume_recipients=x":                    "volume_recipients must be a whole number",
		"volume_window=1h&volume_recipients=70000":                "volume_recipients 70000 is more than 65000",
		"volume_window=1h&volume_recipients=10&volume_action=ban": `volume_action "ban" is not throttle or suspend`,
		"volume_action=throttle":                                  "needs volume_window",
		"":                                                        "a volume limit",
	} {
		replayRefused(t, h, q, want)
	}
	// The replays wrote nothing.
	if after := snapshot(); after != keys {
		t.Fatalf("the accounts' keys changed:\n%s\nwere\n%s", after, keys)
	}
}
