package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestReplayVolumeCommand runs aupctl replay --volume-window against a
// whole aupd whose volume records were counted as the policy server
// counts them (the store's CountVolume, at a pinned clock twenty minutes
// back): the table, --json, and the command line's mistakes.
func TestReplayVolumeCommand(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	ns := testutil.NATSServer(t, "")
	hourly := rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 10, Action: rules.VolumeSuspend}
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.URL = ns.ClientURL()
	cfg.Redis.Addrs = []string{testutil.RedisAddr()}
	cfg.Redis.Prefix = prefix
	cfg.Redis.Autostart = false
	cfg.Notifier.EMLDir = t.TempDir()
	cfg.Policy.Postfix.Listen = ""
	cfg.Policy.Dovecot.Listen = ""
	cfg.AUP.Volume = []rules.VolumeLimit{hourly}
	cfg.Companies = []companies.Company{{ID: "net", Domains: []string{"example.net"}}}
	const abuseToken = "abuse-desk-token-0123456789"
	cfg.Auth.Tokens = []auth.TokenConfig{{Name: "desk", Hash: auth.HashToken(abuseToken), Role: auth.RoleAbuse}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	info := runAupd(t, cfg)

	at := time.Now().Add(-20 * time.Minute)
	st := store.New(rdb, prefix, store.WithClock(func() time.Time { return at }))
	lim := store.PackVolume(rules.VolumePolicy{Limits: cfg.AUP.Volume, Mode: rules.ModeEnforce})
	for account, rcpts := range map[string]int{"busy@example.net": 9, "quiet@example.net": 2} {
		r, err := st.CountVolume(context.Background(), store.VolumeMessage{Account: account, Company: "net", Recipients: rcpts, Limits: lim,
			Version: 0, SampleWindow: cfg.AUP.Window})
		if err != nil || r.Outcome != store.VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("%s: %+v %v", account, r, err)
		}
	}

	replay := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runIn(append([]string{"replay", "--server", "http://" + info.HTTPAddr, "--token", abuseToken}, args...), nil, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := replay("--volume-window", "1h", "--volume-recipients", "8", "--volume-action", "throttle")
	if code != 0 || !strings.Contains(out, "volume limit: more than 8 recipients within 1h0m0s (throttle), over ") ||
		!strings.Contains(out, "the provider's limits: counted in buckets of 5m0s (their 1h0m0s ring)") ||
		!strings.Contains(out, "2 volume records read, 2 answer the window; accounts over the limit: 1 within the period, 1 now") ||
		!strings.Contains(out, "busy@example.net  net      9 (over)  9 in ") || strings.Contains(out, "quiet@") || strings.Contains(out, "stored events read") {
		t.Fatalf("replay --volume-window: %d\n%s%s", code, out, errs)
	}
	if code, out, errs := replay("--volume-window", "1h", "--volume-recipients", "100"); code != 0 ||
		!strings.Contains(out, "no account went over it, and no live volume limit crossed or throttles") {
		t.Fatalf("a looser limit: %d\n%s%s", code, out, errs)
	}
	if code, out, errs := replay("--volume-window", "1h", "--volume-recipients", "8", "--json"); code != 0 || !strings.Contains(out, `"peak": 9`) {
		t.Fatalf("--json: %d %s %s", code, out, errs)
	}
	if code, out, errs := replay("--volume-window", "1h", "--volume-recipients", "8", "--threshold", "3"); code != 0 ||
		!strings.Contains(out, "busy@example.net") || !strings.Contains(out, "threshold 3 and each account's live spam-rate rule over") {
		t.Fatalf("with a threshold: %d\n%s%s", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--volume-recipients", "8"}, "go with --volume-window"},
		{[]string{"--volume-action", "throttle"}, "go with --volume-window"},
		{[]string{"--volume-window", "3h", "--volume-recipients", "8"}, "cannot answer recipients within 3h0m0s"}, // aupd's 400
		{[]string{"--volume-window", "1h"}, "give one of volume_messages and volume_recipients"},
		{[]string{"--volume-window", "1h", "--volume-messages", "5"}, "no volume limit in scope counts messages"},
		{[]string{"--volume-window", "soon", "--volume-messages", "5"}, "invalid value"},
		{nil, "--volume-window W with"},
	} {
		if code, _, errs := replay(c.args...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("replay %q: exit %d %q, want %d saying %q", c.args, code, errs, exitUsage, c.want)
		}
	}
}

// TestReplayVolumeText: what aupctl replay prints of a volume replay.
func TestReplayVolumeText(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	rcpts := 11
	v := &apitypes.ReplayVolume{
		Limit: apitypes.ReplayVolumeLimit{Window: "1h0m0s", Recipients: 10, Action: "suspend"},
		From:  at.Add(-24 * time.Hour), To: at,
		Sources: []apitypes.ReplayVolumeSource{
			{Rings: []apitypes.ReplayVolumeRing{{Window: "1h0m0s", Bucket: "5m0s"}, {Window: "24h0m0s", Bucket: "2h0m0s"}},
				Answer: &apitypes.ReplayVolumeRing{Window: "1h0m0s", Bucket: "5m0s"}},
			{Company: "globex", Rings: []apitypes.ReplayVolumeRing{{Window: "30m0s", Bucket: "2m30s"}}},
			{Company: "initech", Rings: []apitypes.ReplayVolumeRing{}},
		},
		Records: 5, Answered: 4, Over: 1, OverNow: 1,
		Accounts: []apitypes.ReplayVolumeAccount{
			{Account: "g1@globex.test", Company: "globex", Record: apitypes.RecordNoRing, Actual: []apitypes.ReplayCrossing{
				{At: at.Add(-50 * time.Minute), Rule: "volume:half", Count: 9, Threshold: 8, Action: "suspend",
					Volume: &events.VolumeCrossing{Limit: "half", Kind: "recipients", WindowSeconds: 1800, Recipients: &rcpts}}}},
			{Account: "v1@example.com", Company: "acme", Record: apitypes.RecordAnswered, Bucket: "5m0s", Count: 11, OverNow: true,
				Peak: 11, PeakFrom: at.Add(-time.Hour), PeakTo: at,
				Would: &apitypes.ReplayVolumeWould{Action: "suspend", From: at.Add(-15 * time.Minute), To: at.Add(-10 * time.Minute)},
				Actual: []apitypes.ReplayCrossing{{At: at.Add(-12 * time.Minute), Rule: "volume:hourly", Count: 11, Threshold: 10, Action: "suspend",
					Volume: &events.VolumeCrossing{Limit: "hourly", Kind: "recipients", WindowSeconds: 3600, Recipients: &rcpts}}}},
			{Account: "v2@example.com", Company: "acme", Record: apitypes.RecordAnswered, Bucket: "5m0s", Count: 5, Peak: 5,
				PeakFrom: at.Add(-time.Hour), PeakTo: at, Throttle: &apitypes.ReplayThrottle{Limit: "msgs", Until: at.Add(30 * time.Minute)}},
			{Account: "v5@example.com", Record: apitypes.RecordNone, Actual: []apitypes.ReplayCrossing{
				{At: at.Add(-5 * time.Hour), Rule: "volume:hourly", Count: 12, Threshold: 10, Action: "report",
					Volume: &events.VolumeCrossing{Limit: "hourly", Kind: "recipients", WindowSeconds: 3600, Recipients: &rcpts}}}},
		},
	}
	var b bytes.Buffer
	if err := volumeTable(&b, v); err != nil {
		t.Fatal(err)
	}
	want := `volume limit: more than 10 recipients within 1h0m0s (suspend), over 2026-12-06T10:00:00Z .. 2026-12-07T10:00:00Z
  the provider's limits: counted in buckets of 5m0s (their 1h0m0s ring); a count covers the window, less one bucket at most
  company globex's limits: cannot answer this window (recipients in buckets of 2m30s over 30m0s)
  company initech's limits: cannot answer this window (they count no recipients)
5 volume records read, 4 answer the window; accounts over the limit: 1 within the period, 1 now
ACCOUNT         COMPANY  NOW            HIGHEST                                WOULD                                       ACTUALLY
g1@globex.test  globex   cannot answer  -                                      -                                           suspend at 2026-12-07T09:10:00Z, volume:half: recipients 9 > 8
v1@example.com  acme     11 (over)      11 in 2026-12-07T09:00:00Z..10:00:00Z  suspend in 2026-12-07T09:45:00Z..09:50:00Z  suspend at 2026-12-07T09:48:00Z, volume:hourly: recipients 11 > 10
v2@example.com  acme     5              5 in 2026-12-07T09:00:00Z..10:00:00Z   -                                           throttled until 2026-12-07T10:30:00Z, volume:msgs
v5@example.com  -        no record      -                                      -                                           report at 2026-12-07T05:00:00Z, volume:hourly: recipients 12 > 10
`
	if got := b.String(); got != want {
		t.Errorf("volume table:\n%s\nwant\n%s", got, want)
	}
}
