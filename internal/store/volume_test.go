package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

func volumeStore(t *testing.T) (*Store, *testutil.Clock, *redis.Client) {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	c := testutil.NewClock(t0)
	return New(rdb, prefix, WithClock(c.Now)), c, rdb
}

const sender = "alice@example.com"

var (
	hourly = rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 10, Action: rules.VolumeThrottle}
	daily  = rules.VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 30, Action: rules.VolumeThrottle}
	burst  = rules.VolumeLimit{Name: "burst", Window: 10 * time.Minute, Messages: 3, Action: rules.VolumeThrottle}
)

func enforced(limits ...rules.VolumeLimit) *VolumeLimits {
	return PackVolume(rules.VolumePolicy{Limits: limits, Mode: rules.ModeEnforce})
}

// send counts a message of n recipients, with the sender check made on the
// state as it is.
func send(t *testing.T, s *Store, lim *VolumeLimits, id uint32, n int, client string) VolumeResult {
	t.Helper()
	ctx := context.Background()
	a, err := s.Account(ctx, sender)
	if err != nil {
		t.Fatal(err)
	}
	m := VolumeMessage{Account: sender, Company: "acme", Version: a.Version, ID: id, Recipients: n, Limits: lim, SampleWindow: day}
	if client != "" {
		m.Client = netip.MustParseAddr(client)
	}
	r, err := s.CountVolume(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVolumeCountsOncePerMessage(t *testing.T) {
	s, _, _ := volumeStore(t)
	lim := enforced(hourly)
	id := MessageID("1a2b.6540f1aa.3c1d.0", "4XyZ1")
	for i, want := range []VolumeOutcome{VolumeCounted, VolumeDuplicate, VolumeDuplicate} {
		if r := send(t, s, lim, id, 6, "192.0.2.1"); r.Outcome != want {
			t.Fatalf("request %d: outcome %d; want %d", i+1, r.Outcome, want)
		}
	}
	// Counted once: 6 + 4 is within the limit of 10, one more crosses.
	if r := send(t, s, lim, MessageID("1a2b.6540f1aa.3c1d.1", "4XyZ2"), 4, ""); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
		t.Fatalf("10 recipients: %+v", r)
	}
	r := send(t, s, lim, MessageID("1a2b.6540f1aa.3c1d.2", "4XyZ3"), 1, "")
	if len(r.Crossings) != 1 || r.Crossings[0].Count != 11 {
		t.Fatalf("11 recipients: %+v", r)
	}
	if MessageID("", "") != 0 || MessageID("a", "") == MessageID("b", "") {
		t.Error("message ids")
	}
}

func TestVolumeMessageWithoutIDAlwaysCounts(t *testing.T) {
	s, _, _ := volumeStore(t)
	lim := enforced(burst)
	for i := range 3 {
		if r := send(t, s, lim, 0, 1, ""); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("message %d: %+v", i+1, r)
		}
	}
	if r := send(t, s, lim, 0, 1, ""); len(r.Crossings) != 1 || r.Crossings[0].Count != 4 {
		t.Fatalf("fourth message: %+v", r)
	}
}

func TestVolumeThrottleEndsWithTheWindow(t *testing.T) {
	s, clk, _ := volumeStore(t)
	ctx := context.Background()
	lim := enforced(hourly)
	// 4 recipients at 12:00, 4 at 12:20, then 3 at 12:40: 11 in the hour.
	var id uint32
	step := func(at time.Duration, n int) VolumeResult {
		clk.Set(t0.Add(at))
		id++
		return send(t, s, lim, id, n, "")
	}
	step(0, 4)
	step(20*time.Minute, 4)
	r := step(40*time.Minute, 3)
	if len(r.Crossings) != 1 {
		t.Fatalf("no crossing at 11: %+v", r)
	}
	c := r.Crossings[0]
	// The hour is counted in 5-minute buckets, the current one and the 11
	// before it: once the 12:00 bucket has left the window (at 13:00), 7
	// remain.
	if c.Action != "throttle" || c.Count != 11 || !c.Since.Equal(t0) || !c.Until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("crossing %+v; want a throttle from 12:00 until 13:00", c)
	}
	for _, at := range []time.Duration{40 * time.Minute, time.Hour - time.Millisecond} {
		clk.Set(t0.Add(at))
		if r := send(t, s, lim, id+100, 1, ""); r.Outcome != VolumeThrottled || r.Throttle != "hourly" || !r.Until.Equal(c.Until) {
			t.Fatalf("at +%s: %+v; want throttled until 13:00", at, r)
		}
		th, err := s.Throttle(ctx, sender)
		if err != nil || th == nil || th.Limit != "hourly" || !th.Until.Equal(c.Until) {
			t.Fatalf("at +%s: sender throttle %+v, %v", at, th, err)
		}
	}
	clk.Set(t0.Add(time.Hour))
	if th, err := s.Throttle(ctx, sender); err != nil || th != nil {
		t.Fatalf("at the window's end: throttle %+v, %v", th, err)
	}
	// 7 + 3 = 10: within the limit again.
	if r := step(time.Hour, 3); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
		t.Fatalf("after the throttle: %+v", r)
	}
	// And one more crosses again: a new throttle, until the 12:20 bucket
	// has gone (13:20).
	r = step(61*time.Minute, 1)
	if len(r.Crossings) != 1 || !r.Crossings[0].Until.Equal(t0.Add(80*time.Minute)) || !r.Crossings[0].Since.Equal(t0.Add(20*time.Minute)) {
		t.Fatalf("the next crossing: %+v", r)
	}
}

func TestVolumeReAskAfterTheCrossingIsNotThrottled(t *testing.T) {
	s, _, _ := volumeStore(t)
	lim := enforced(hourly)
	r := send(t, s, lim, 7, 11, "")
	if len(r.Crossings) != 1 {
		t.Fatalf("no crossing: %+v", r)
	}
	// Postfix did not get the answer and asks again about the message
	// that crossed: it was accepted and counted, and stays so.
	if r := send(t, s, lim, 7, 11, ""); r.Outcome != VolumeDuplicate {
		t.Fatalf("the crossing message asked again: %+v", r)
	}
	if r := send(t, s, lim, 8, 1, ""); r.Outcome != VolumeThrottled {
		t.Fatalf("the next message: %+v", r)
	}
}

func TestVolumeWindowEdge(t *testing.T) {
	s, clk, _ := volumeStore(t)
	lim := enforced(burst) // 3 messages in 10 minutes, buckets of 50 s
	for i := range 3 {
		clk.Set(t0.Add(time.Duration(i) * time.Second))
		send(t, s, lim, 0, 1, "")
	}
	// At 12:09:59.999 the three still count; at 12:10:00 their bucket
	// (12:00:00 to 12:00:50) has left the window.
	clk.Set(t0.Add(10*time.Minute - time.Millisecond))
	if r := send(t, s, lim, 0, 1, ""); len(r.Crossings) != 1 || r.Crossings[0].Count != 4 {
		t.Fatalf("inside the window: %+v", r)
	}
	clk.Set(t0.Add(20 * time.Minute))
	for i := range 3 {
		if r := send(t, s, lim, 0, 1, ""); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("a window later, message %d: %+v", i+1, r)
		}
	}
}

func TestVolumeChangedStateIsNotCounted(t *testing.T) {
	s, _, _ := volumeStore(t)
	ctx := context.Background()
	lim := enforced(burst)
	a, err := s.Account(ctx, sender)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Suspend(ctx, sender, []rules.Service{rules.ServiceSend}, Actor{Name: "admin", Reason: rules.ReasonAdmin}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{a.Version, VersionUnchecked} {
		r, err := s.CountVolume(ctx, VolumeMessage{Account: sender, Version: v, ID: 9, Recipients: 1, Limits: lim})
		if err != nil || r.Outcome != VolumeChanged {
			t.Fatalf("version %d: %+v, %v; want changed", v, r, err)
		}
	}
	if ok, err := s.CountedBefore(ctx, sender, 9, lim); err != nil || ok {
		t.Fatalf("a message never counted: counted before %v, %v", ok, err)
	}
	send(t, s, lim, 10, 1, "")
	if ok, err := s.CountedBefore(ctx, sender, 10, lim); err != nil || !ok {
		t.Fatalf("a counted message: counted before %v, %v", ok, err)
	}
}

func TestVolumeReinstatementStartsAfresh(t *testing.T) {
	s, clk, rdb := volumeStore(t)
	ctx := context.Background()
	lim := enforced(burst)
	for range 4 {
		send(t, s, lim, 0, 1, "")
	}
	if r := send(t, s, lim, 0, 1, ""); r.Outcome != VolumeThrottled {
		t.Fatalf("fifth message: %+v", r)
	}
	// Lifting an AUP suspension resets the AUP window (apply.lua), and the
	// volume record with it: its counts and its throttle.
	clk.Set(t0.Add(time.Minute))
	if _, _, err := s.Update(ctx, sender, func(*Account) (*Change, error) {
		return &Change{ResetWindow: true, History: []HistoryEntry{{Time: clk.Now(), Actor: "admin", Action: "reinstate"}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{sufVolume, sufThrottle} {
		if n, _ := rdb.Exists(ctx, s.key(sender, k)).Result(); n != 0 {
			t.Errorf("%s kept after the reinstatement", k)
		}
	}
	for i := range 3 {
		if r := send(t, s, lim, 0, 1, ""); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("after the reinstatement, message %d: %+v", i+1, r)
		}
	}
}

func TestVolumeNewRingsStartAfresh(t *testing.T) {
	s, _, _ := volumeStore(t)
	send(t, s, enforced(hourly), 1, 9, "")
	// Another window (a reload, or the company's own limits): its counts
	// start at the next message.
	longer := hourly
	longer.Window = 2 * time.Hour
	if r := send(t, s, enforced(longer), 2, 9, ""); len(r.Crossings) != 0 {
		t.Fatalf("counts carried into another window: %+v", r)
	}
	// A changed max keeps the counts.
	more := longer
	more.Recipients = 17
	if r := send(t, s, enforced(more), 3, 9, ""); len(r.Crossings) != 1 || r.Crossings[0].Count != 18 {
		t.Fatalf("a changed max: %+v", r)
	}
	// Postfix's re-ask is recognised across such changes.
	if r := send(t, s, enforced(hourly), 3, 9, ""); r.Outcome != VolumeDuplicate {
		t.Fatalf("re-ask after a change of limits: %+v", r)
	}
}

func TestVolumeShadowReportsAndThrottlesNothing(t *testing.T) {
	s, _, rdb := volumeStore(t)
	ctx := context.Background()
	for name, pol := range map[string]rules.VolumePolicy{
		"shadow":      {Limits: []rules.VolumeLimit{burst}, Mode: rules.ModeShadow},
		"allowlisted": {Limits: []rules.VolumeLimit{burst}, Mode: rules.ModeEnforce, Allowlisted: true},
	} {
		t.Run(name, func(t *testing.T) {
			if err := rdb.Del(ctx, s.key(sender, sufVolume)).Err(); err != nil {
				t.Fatal(err)
			}
			lim := PackVolume(pol)
			var reports int
			for i := range 8 {
				r := send(t, s, lim, 0, 1, "")
				if r.Outcome != VolumeCounted {
					t.Fatalf("message %d: %+v", i+1, r)
				}
				for _, c := range r.Crossings {
					if c.Action != "report" || !c.Until.IsZero() {
						t.Fatalf("message %d: %+v", i+1, c)
					}
					reports++
				}
			}
			if reports != 1 {
				t.Errorf("%d reports for one crossing", reports)
			}
			if n, _ := rdb.Exists(ctx, s.key(sender, sufThrottle)).Result(); n != 0 {
				t.Error("a throttle was written")
			}
		})
	}
}

func TestVolumeKeepsRecentClientsAndExpires(t *testing.T) {
	s, _, rdb := volumeStore(t)
	ctx := context.Background()
	lim := enforced(hourly, daily)
	for _, ip := range []string{"192.0.2.1", "2001:db8::1", "192.0.2.1", "198.51.100.7", "2001:db8::2", "::ffff:203.0.113.9"} {
		send(t, s, lim, 0, 1, ip)
	}
	raw, err := rdb.Get(ctx, s.key(sender, sufVolume)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	got := recordClients(t, raw, 2)
	// IPv6 clients are kept by their /64.
	want := []string{"203.0.113.9", "2001:db8::/64", "198.51.100.7"}
	if len(got) != len(want) {
		t.Fatalf("clients %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("clients %v; want %v", got, want)
		}
	}
	ttl, err := rdb.PTTL(ctx, s.key(sender, sufVolume)).Result()
	if err != nil || ttl <= 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("record expires in %s, %v; want with the longest window", ttl, err)
	}
}

// recordClients decodes the client addresses of a volume record with
// rings rings.
func recordClients(t *testing.T, rec []byte, rings int) []string {
	t.Helper()
	p := 8 + 4*6 + 2*12*rings
	if len(rec) <= p {
		t.Fatalf("record of %d bytes", len(rec))
	}
	n := int(rec[p])
	p++
	var out []string
	for range n {
		l := int(rec[p])
		a := clientText(rec[p+1 : p+1+l])
		if a == "" {
			t.Fatalf("client %x", rec[p+1:p+1+l])
		}
		out = append(out, a)
		p += 1 + l
	}
	if last := binary.BigEndian.Uint16(rec[0:2]); last == 0 {
		t.Error("no ring sum")
	}
	return out
}

func TestVolumeEightLimitsInFourRings(t *testing.T) {
	s, _, _ := volumeStore(t)
	var limits []rules.VolumeLimit
	for i := range 4 {
		w := time.Duration(1+i%2) * time.Hour
		limits = append(limits,
			rules.VolumeLimit{Name: fmt.Sprintf("m%d", i), Window: w, Messages: 100 + i, Action: rules.VolumeThrottle},
			rules.VolumeLimit{Name: fmt.Sprintf("r%d", i), Window: w, Recipients: 50 - i, Action: rules.VolumeThrottle})
	}
	if err := rules.ValidateVolume(limits); err != nil {
		t.Fatal(err)
	}
	lim := enforced(limits...)
	// 47 recipients cross r3 (47 in 4 hours) and nothing else.
	r := send(t, s, lim, 1, 47, "")
	if len(r.Crossings) != 0 {
		t.Fatalf("47 recipients: %+v", r.Crossings)
	}
	r = send(t, s, lim, 2, 1, "")
	if len(r.Crossings) != 1 || r.Crossings[0].Limit.Name != "r3" || r.Crossings[0].Count != 48 {
		t.Fatalf("48 recipients: %+v", r.Crossings)
	}
	if r := send(t, s, lim, 3, 1, ""); r.Outcome != VolumeThrottled || r.Throttle != "r3" {
		t.Fatalf("throttled by %+v", r)
	}
}

// BenchmarkVolumeMemory prints the Redis memory (MEMORY USAGE) of one
// active sender's volume record, by the rings its limits need and the
// client addresses it holds, on a Redis of its own.
//
//	go test -run '^$' -bench VolumeMemory ./internal/store/
func BenchmarkVolumeMemory(b *testing.B) {
	rdb := testutil.PrivateRedis(b)
	s := New(rdb, "aup")
	ctx := context.Background()
	two := enforced(hourly, daily)
	four := enforced(hourly, daily,
		rules.VolumeLimit{Name: "hourly-messages", Window: time.Hour, Messages: 100, Action: rules.VolumeThrottle},
		rules.VolumeLimit{Name: "daily-messages", Window: 24 * time.Hour, Messages: 500, Action: rules.VolumeSuspend})
	v4 := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	v6 := []string{"2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3"}
	cases := []struct {
		name    string
		lim     *VolumeLimits
		clients []string
	}{
		{"two recipient limits (1h, 24h), one IPv4 client", two, v4[:1]},
		{"two recipient limits (1h, 24h), three IPv4 clients", two, v4},
		{"two recipient limits (1h, 24h), three IPv6 clients", two, v6},
		{"four rings (messages and recipients, 1h and 24h), three IPv4 clients", four, v4},
		{"four rings (messages and recipients, 1h and 24h), three IPv6 clients", four, v6},
	}
	for b.Loop() {
		for i, c := range cases {
			acct := fmt.Sprintf("sender%d@example.com", i)
			for j, ip := range c.clients {
				_, err := s.CountVolume(ctx, VolumeMessage{Account: acct, Version: 0, ID: uint32(j + 1), Recipients: 3,
					Client: netip.MustParseAddr(ip), Limits: c.lim})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.StopTimer()
	fmt.Println("volume record of one active sender (MEMORY USAGE of aup:{<account>}:v):")
	for i, c := range cases {
		key := s.key(fmt.Sprintf("sender%d@example.com", i), sufVolume)
		n, err := rdb.MemoryUsage(ctx, key, 0).Result()
		if err != nil {
			b.Fatal(err)
		}
		val, err := rdb.StrLen(ctx, key).Result()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("  %4d bytes (value %3d bytes): %s\n", n, val, c.name)
	}
}

var dailySuspend = rules.VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 8, Action: rules.VolumeSuspend}

func TestVolumeSuspension(t *testing.T) {
	s, clk, rdb := volumeStore(t)
	ctx := context.Background()
	// A recipient limit and a message limit in the same window: the
	// suspension says both.
	lim := enforced(dailySuspend, rules.VolumeLimit{Name: "daily-messages", Window: 24 * time.Hour, Messages: 100, Action: rules.VolumeThrottle})
	// The spam count holds a sample of a flagged message from this
	// account: the suspension carries it as evidence.
	ingestSample(t, s, "spam-1", 4242)
	clk.Set(t0.Add(30 * time.Minute))
	send(t, s, lim, 1, 4, "192.0.2.7")
	clk.Set(t0.Add(3 * time.Hour))
	send(t, s, lim, 2, 4, "2001:db8:0:0:1::9")
	clk.Set(t0.Add(5 * time.Hour))
	r := send(t, s, lim, 3, 1, "192.0.2.8")
	if len(r.Crossings) != 1 || !r.Suspended() || !r.Pending {
		t.Fatalf("9 recipients: %+v", r)
	}
	c := r.Crossings[0]
	if c.Action != "suspend" || c.ID == "" || c.Count != 9 || c.Limit.Name != "daily" {
		t.Fatalf("crossing %+v", c)
	}
	a, err := s.Account(ctx, sender)
	if err != nil {
		t.Fatal(err)
	}
	if a.AUP != c.ID || !slices.Equal(a.Suspended(), []string{"send", "webmail_send"}) || a.Company != "acme" || !a.Exists {
		t.Fatalf("account after the crossing: %+v", a)
	}
	sus := a.LastAUP
	if sus == nil || sus.ID != c.ID || sus.Rule != "volume:daily" || sus.Threshold != 8 || sus.Count != 9 || sus.Volume == nil {
		t.Fatalf("last AUP suspension %+v", sus)
	}
	v := sus.Volume
	// 24 hours in buckets of 2: the burst started in the 12:00 bucket.
	if v.Limit != "daily" || v.Kind != "recipients" || v.WindowSeconds != 86400 || v.Recipients == nil || *v.Recipients != 9 ||
		v.Messages == nil || *v.Messages != 3 || !v.Since.Equal(t0) ||
		!slices.Equal(v.Clients, []string{"192.0.2.8", "2001:db8::/64", "192.0.2.7"}) {
		t.Fatalf("volume %+v", v)
	}
	if !slices.Equal(sus.Samples, []uint64{4242}) {
		t.Errorf("samples %v; want the spam count's", sus.Samples)
	}
	// One account event, one history line, indexed for the sweep.
	entries, err := rdb.LRange(ctx, s.key(sender, sufOutbox), 0, -1).Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("outbox %v, %v", entries, err)
	}
	ev, data, err := DecodeOutbox(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "suspended" || ev.ID != c.ID || ev.Reason != "aup_violation" || ev.Suspension.Volume == nil ||
		!strings.Contains(string(data), `"rule":"volume:daily"`) || !strings.Contains(string(data), `"clients":["192.0.2.8","2001:db8::/64","192.0.2.7"]`) {
		t.Errorf("account event %s", data)
	}
	if ok, _ := rdb.SIsMember(ctx, s.idxOutbox(), sender).Result(); !ok {
		t.Error("the outbox is not indexed for the sweep")
	}
	h, err := s.History(ctx, sender, 0, 10)
	if err != nil || len(h) != 1 || h[0].Action != "suspended" || h[0].ID != c.ID ||
		h[0].Note != "volume:daily: 9 recipients within 24h exceed the limit of 8, from 192.0.2.8, 2001:db8::/64, 192.0.2.7" {
		t.Fatalf("history %+v, %v", h, err)
	}
	// The next message, on the state the sender check saw before: not
	// counted; on the new state the sender check refuses it (Go's part).
	if r := send(t, s, lim, 4, 1, ""); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
		// (send re-reads the version: counted, as a sender check that
		// ignored the suspension would let it; no second suspension)
		t.Fatalf("after the suspension: %+v", r)
	}
	if n, _ := rdb.LLen(ctx, s.key(sender, sufOutbox)).Result(); n != 1 {
		t.Errorf("%d outbox entries; want 1", n)
	}
}

// ingestSample counts a spam verdict of the sender with stream sequence
// seq, which the spam count keeps as an evidence sample.
func ingestSample(t *testing.T, s *Store, id string, seq uint64) {
	t.Helper()
	it := spam(id, t0)
	it.Seq, it.Fingerprint = seq, 7
	b := Batch{Account: sender, Company: "acme", Threshold: 50, Cap: 51, Action: rules.ActionSuspend, Items: []Item{it}}
	res, err := s.Ingest(context.Background(), []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0})
	if err != nil || res[0].Err != nil {
		t.Fatalf("ingest: %v %v", err, res[0].Err)
	}
}

func TestVolumeSuspensionIsReportedInShadowMode(t *testing.T) {
	s, _, rdb := volumeStore(t)
	ctx := context.Background()
	lim := PackVolume(rules.VolumePolicy{Limits: []rules.VolumeLimit{dailySuspend}, Mode: rules.ModeShadow})
	r := send(t, s, lim, 1, 9, "192.0.2.7")
	if len(r.Crossings) != 1 || r.Crossings[0].Action != "report" || r.Crossings[0].ID == "" {
		t.Fatalf("crossing: %+v", r)
	}
	a, err := s.Account(ctx, sender)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Suspended()) != 0 || a.AUP != "" || a.LastAUP == nil || a.LastAUP.Action != "report" || a.LastAUP.Rule != "volume:daily" {
		t.Fatalf("account %+v, last %+v", a, a.LastAUP)
	}
	entries, _ := rdb.LRange(ctx, s.key(sender, sufOutbox), 0, -1).Result()
	if len(entries) != 1 {
		t.Fatalf("outbox %v", entries)
	}
	if ev, _, err := DecodeOutbox(entries[0]); err != nil || ev.Type != "reported" {
		t.Fatalf("event %+v, %v", ev, err)
	}
	// Reported once: more messages above the limit report nothing more.
	for i := range 3 {
		if r := send(t, s, lim, uint32(10+i), 1, ""); len(r.Crossings) != 0 {
			t.Fatalf("message %d: %+v", i, r)
		}
	}
}

func TestVolumeNoSecondSuspensionWhileOneIsInForce(t *testing.T) {
	s, _, rdb := volumeStore(t)
	ctx := context.Background()
	// The spam count suspended the account; a volume limit crossed then
	// suspends nothing more.
	if err := rdb.HSet(ctx, s.key(sender, sufState), "aup", "spam-suspension").Err(); err != nil {
		t.Fatal(err)
	}
	r := send(t, s, enforced(dailySuspend), 1, 9, "")
	if len(r.Crossings) != 1 || r.Crossings[0].ID != "" || r.Suspended() {
		t.Fatalf("crossing %+v", r)
	}
	if n, _ := rdb.LLen(ctx, s.key(sender, sufOutbox)).Result(); n != 0 {
		t.Errorf("%d outbox entries", n)
	}
}

func TestVolumeRacingStoresSuspendOnce(t *testing.T) {
	_, prefix := testutil.Redis(t)
	clk := testutil.NewClock(t0)
	var stores []*Store
	for range 4 {
		rdb := redis.NewClient(&redis.Options{Addr: testutil.RedisAddr()})
		t.Cleanup(func() { rdb.Close() })
		stores = append(stores, New(rdb, prefix, WithClock(clk.Now)))
	}
	lim := enforced(rules.VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 50, Action: rules.VolumeSuspend})
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%len(stores)]
			r, err := s.CountVolume(ctx, VolumeMessage{Account: sender, Version: 0, ID: uint32(i + 1), Recipients: 2, Limits: lim})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, c := range r.Crossings {
				if c.ID != "" {
					ids = append(ids, c.ID)
				}
			}
		}()
	}
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("%d suspensions: %v", len(ids), ids)
	}
	rdb := stores[0].rdb.(*redis.Client)
	if n, _ := rdb.LLen(ctx, stores[0].key(sender, sufOutbox)).Result(); n != 1 {
		t.Errorf("%d account events; want 1", n)
	}
	if n, _ := rdb.LLen(ctx, stores[0].key(sender, sufHistory)).Result(); n != 1 {
		t.Errorf("%d history entries; want 1", n)
	}
}

func TestVolumeThrottleMarker(t *testing.T) {
	s, clk, rdb := volumeStore(t)
	ctx := context.Background()
	lim := enforced(hourly)
	st := s.key(sender, sufState)
	// No state before: the lookup is the one HGETALL, and the count
	// writes no state.
	send(t, s, lim, 1, 5, "")
	if n, _ := rdb.Exists(ctx, st).Result(); n != 0 {
		t.Fatal("a count without a crossing wrote the state")
	}
	r := send(t, s, lim, 2, 6, "")
	if len(r.Crossings) != 1 {
		t.Fatalf("no throttle: %+v", r)
	}
	// The marker, in a state made for it, expiring with the throttle
	// (13:00, an hour after the pinned 12:00).
	if v, _ := rdb.HGet(ctx, st, "vt").Result(); v == "" {
		t.Fatal("no marker in the state")
	}
	if as, err := s.Accounts(ctx, sender, "other@example.com"); err != nil || !as[0].Throttled || as[1].Throttled {
		t.Fatalf("the marker, read with the state: %v", err)
	}
	if ttl, _ := rdb.PTTL(ctx, st).Result(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("the marker's state expires in %s; want with the throttle", ttl)
	}
	if a, err := s.Account(ctx, sender); err != nil || a.Exists {
		t.Errorf("the marker made a record: %+v, %v", a, err)
	}
	clk.Set(t0.Add(time.Hour))
	if th, err := s.Throttle(ctx, sender); err != nil || th != nil {
		t.Fatalf("after the throttle: %+v, %v", th, err)
	}
	if n, _ := rdb.HExists(ctx, st, "vt").Result(); n {
		t.Error("the marker of a throttle that ended was kept")
	}
	// A durable record keeps no expiry from a throttle.
	if _, err := s.SetAccount(ctx, sender, rules.TypeMailbox, "acme", Actor{Name: "admin", Reason: rules.ReasonAdmin}); err != nil {
		t.Fatal(err)
	}
	send(t, s, lim, 3, 11, "")
	if ttl, _ := rdb.PTTL(ctx, st).Result(); ttl != -1 {
		t.Errorf("a record's state expires in %s after a throttle", ttl)
	}
	if th, err := s.Throttle(ctx, sender); err != nil || th == nil {
		t.Fatalf("the record's throttle: %+v, %v", th, err)
	}
}

// TestVolumeRecordMatchesAModel counts messages at random times (the same
// bucket, the next, a few later so that the emptied buckets wrap round
// the ring, more than a window later, and a clock that went back) and
// checks, after each, every byte of the record against a plain model of
// what docs/redis.md says it holds: volume.lua writes the record as
// pieces of the old one, and a wrong piece would shift or lose a count.
func TestVolumeRecordMatchesAModel(t *testing.T) {
	s, clk, rdb := volumeStore(t)
	ctx := context.Background()
	limits := []rules.VolumeLimit{
		{Name: "burst", Window: 10 * time.Minute, Messages: 60000, Action: rules.VolumeThrottle},
		{Name: "hourly", Window: time.Hour, Recipients: 60000, Action: rules.VolumeThrottle},
		{Name: "daily", Window: 24 * time.Hour, Recipients: 60000, Action: rules.VolumeSuspend},
	}
	lim := enforced(limits...)
	type ring struct {
		g     int64 // bucket width, ms
		msgs  bool
		slots [12]int
	}
	rings := []*ring{{g: 50_000, msgs: true}, {g: 300_000}, {g: 7_200_000}}
	var ids []uint32
	var last int64 // the last count's time, ms (whole seconds)
	rng := rand.New(rand.NewPCG(26, 27))
	now := t0
	for i := range 400 {
		var step time.Duration
		switch k := rng.IntN(10); {
		case k < 4: // the same bucket, mostly
			step = time.Duration(rng.IntN(20_000)) * time.Millisecond
		case k < 7: // a few buckets of the shortest ring on
			step = time.Duration(rng.IntN(11*50_000)) * time.Millisecond
		case k < 9: // a few of the middle one's
			step = time.Duration(rng.IntN(13*300_000)) * time.Millisecond
		default: // back, within a few seconds, or far on
			if rng.IntN(2) == 0 {
				step = -time.Duration(rng.IntN(5000)) * time.Millisecond
			} else {
				step = time.Duration(rng.IntN(30)) * time.Hour
			}
		}
		now = now.Add(step)
		clk.Set(now)
		id := uint32(i + 1)
		n := 1 + rng.IntN(9)
		if r := send(t, s, lim, id, n, "192.0.2.1"); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("message %d: %+v", i, r)
		}
		// The model: move each ring to now (a clock that went back counts
		// into the last count's bucket), empty the buckets in between,
		// add the message.
		ms := now.UnixMilli()
		for _, r := range rings {
			b, l := ms/r.g, last/r.g
			b = max(b, l)
			for k := l + 1; k <= min(b, l+12); k++ {
				r.slots[k%12] = 0
			}
			if r.msgs {
				r.slots[b%12]++
			} else {
				r.slots[b%12] += n
			}
		}
		if ms > last {
			last = ms - ms%1000
		}
		ids = append([]uint32{id}, ids...)[:min(len(ids)+1, 6)]
		want := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(lim.packed))
		want = append(want, lim.packed[2])
		want = binary.BigEndian.AppendUint32(want, uint32(last/1000))
		want = append(want, 0)
		for j := range 6 {
			var v uint32
			if j < len(ids) {
				v = ids[j]
			}
			want = binary.BigEndian.AppendUint32(want, v)
		}
		for _, r := range rings {
			for _, v := range r.slots {
				want = binary.BigEndian.AppendUint16(want, uint16(v))
			}
		}
		want = append(want, 1, 4, 192, 0, 2, 1)
		got, err := rdb.Get(ctx, s.key(sender, sufVolume)).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("message %d at %s (step %s):\nrecord %x\nmodel  %x", i, now.Format(time.TimeOnly), step, got, want)
		}
	}
}
