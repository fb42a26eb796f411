package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// countAs counts a message of n recipients that account sent, as the
// policy server does at the end of DATA.
func countAs(t *testing.T, s *Store, account string, lim *VolumeLimits, n int) VolumeResult {
	t.Helper()
	a, err := s.Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.CountVolume(context.Background(), VolumeMessage{Account: account, Version: a.Version, Recipients: n, Limits: lim, SampleWindow: day})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// scanAll reads every volume record of s, with lim for every account.
func scanAll(t *testing.T, s *Store, limits func(string) *VolumeLimits) map[string]VolumeRecord {
	t.Helper()
	out := map[string]VolumeRecord{}
	err := s.ScanVolume(context.Background(), limits, func(recs []VolumeRecord) error {
		for _, r := range recs {
			out[r.Account] = r
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVolumeLimitsRings(t *testing.T) {
	for _, limits := range [][]rules.VolumeLimit{
		{hourly},
		{hourly, daily, burst},
		{burst, hourly, daily},
		{hourly, {Name: "again", Window: time.Hour, Recipients: 20, Action: rules.VolumeSuspend}, burst},
		{burst, {Name: "m1h", Window: time.Hour, Messages: 50, Action: rules.VolumeThrottle}, hourly, daily},
	} {
		got := PackVolume(rules.VolumePolicy{Limits: limits}).Rings()
		if want := rules.VolumeRings(limits); !slices.Equal(got, want) {
			t.Errorf("%v: the packed rings %v; rules.VolumeRings %v", limits, got, want)
		}
	}
}

// big is l with a max it takes many messages to cross.
func big(l rules.VolumeLimit) rules.VolumeLimit {
	l.Recipients, l.Messages = min(l.Recipients*1000, 65000), min(l.Messages*1000, 65000)
	return l
}

// TestScanVolumeMatchesWhatWasSent counts random messages of random
// sizes at random times, as the policy server does, and checks what the
// replay reads of the records against the messages themselves: the
// count now over the limits' windows and over shorter ones, the highest
// count the records can show, and the first bucket over a max.
func TestScanVolumeMatchesWhatWasSent(t *testing.T) {
	s, clk, _ := volumeStore(t)
	lim := enforced(big(hourly), big(burst), big(daily))
	rng := rand.New(rand.NewPCG(26, 2026))
	type msg struct {
		at time.Time
		n  int
	}
	sent := map[string][]msg{}
	accounts := []string{"a@example.com", "b@example.com", "c@example.com"}
	now := t0
	check := func() {
		t.Helper()
		recs := scanAll(t, s, func(string) *VolumeLimits { return lim })
		for _, a := range accounts {
			r, ok := recs[a]
			if len(sent[a]) == 0 {
				if ok {
					t.Fatalf("%s: a record without a message", a)
				}
				continue
			}
			if !ok || r.OtherLimits || len(r.Rings) != 3 || !r.Now.Equal(now) || !r.Last.Equal(sent[a][len(sent[a])-1].at.Truncate(time.Second)) {
				t.Fatalf("%s at %s: %+v", a, now, r)
			}
			for _, ring := range r.Rings {
				g := ring.Bucket()
				bucket := func(x time.Time) int64 { return x.UnixMilli() / g.Milliseconds() }
				last := bucket(sent[a][len(sent[a])-1].at)
				// the messages' volume in buckets [lo, hi]
				volume := func(lo, hi int64) int {
					v := 0
					for _, m := range sent[a] {
						if b := bucket(m.at); b >= lo && b <= hi {
							v += map[string]int{rules.VolumeMessages: 1, rules.VolumeRecipients: m.n}[ring.Kind]
						}
					}
					return v
				}
				for _, k := range []int64{1, 3, 11, 12} {
					w := time.Duration(k) * g
					// a max that the busiest windows of the record cross
					most := 0
					for j := last - 11 + k - 1; j <= last; j++ {
						most = max(most, volume(j-k+1, j))
					}
					f := ring.Series.Figures(w, time.Time{}, most-1)
					n := bucket(now)
					if f.Now != volume(n-k+1, n) || f.Peak != most {
						t.Fatalf("%s at %s, %s over %s: figures %+v; the messages: %d now, at most %d",
							a, now, ring.Kind, w, f, volume(n-k+1, n), most)
					}
					if most > 0 {
						// the first window of the record that holds the most
						j := last - 11 + k - 1
						for volume(j-k+1, j) < most {
							j++
						}
						if !f.OverTo.Equal(time.UnixMilli((j+1)*g.Milliseconds()).UTC()) || f.OverTo.Sub(f.OverFrom) != g {
							t.Fatalf("%s at %s, %s over %s: over in [%s, %s); want the bucket ending %s",
								a, now, ring.Kind, w, f.OverFrom, f.OverTo, time.UnixMilli((j+1)*g.Milliseconds()).UTC())
						}
					}
				}
			}
		}
	}
	for i := range 400 {
		// mostly seconds apart, sometimes minutes or hours
		step := time.Duration(rng.IntN(40)) * time.Second
		if rng.IntN(20) == 0 {
			step = time.Duration(rng.IntN(180)) * time.Minute
		}
		now = now.Add(step + time.Duration(rng.IntN(1000))*time.Millisecond)
		clk.Set(now)
		a := accounts[rng.IntN(len(accounts))]
		n := 1 + rng.IntN(40)
		if r := countAs(t, s, a, lim, n); r.Outcome != VolumeCounted || len(r.Crossings) != 0 {
			t.Fatalf("message %d: %+v", i, r)
		}
		sent[a] = append(sent[a], msg{now, n})
		if i%25 == 0 {
			check()
		}
	}
	check()
	// Later, with nothing sent since.
	for _, later := range []time.Duration{time.Minute, 7 * time.Minute, 45 * time.Minute, 3 * time.Hour, 30 * time.Hour} {
		clk.Set(now.Add(later))
		now = now.Add(later)
		check()
	}
}

// TestScanVolumeThrottleAgreesWithTheRecord crosses a throttle limit:
// while the throttle holds, the record's count over its window is over
// the limit and the replay reads the throttle; once the count is back
// within it, neither.
func TestScanVolumeThrottleAgreesWithTheRecord(t *testing.T) {
	s, clk, _ := volumeStore(t)
	lim := enforced(hourly) // more than 10 recipients within 1h: throttle
	step := func(at time.Duration, n int) VolumeResult {
		clk.Set(t0.Add(at))
		return countAs(t, s, sender, lim, n)
	}
	step(0, 4)
	step(20*time.Minute, 4)
	r := step(40*time.Minute, 3)
	if len(r.Crossings) != 1 || r.Crossings[0].Action != "throttle" {
		t.Fatalf("no throttle at 11: %+v", r)
	}
	until := r.Crossings[0].Until
	read := func(at time.Time) (VolumeRecord, rules.VolumeFigures) {
		t.Helper()
		clk.Set(at)
		rec := scanAll(t, s, func(string) *VolumeLimits { return lim })[sender]
		if len(rec.Rings) != 1 {
			t.Fatalf("at %s: %+v", at, rec)
		}
		return rec, rec.Rings[0].Series.Figures(time.Hour, t0, hourly.Max())
	}
	for _, at := range []time.Time{t0.Add(40 * time.Minute), until.Add(-time.Millisecond)} {
		rec, f := read(at)
		if rec.Throttle == nil || rec.Throttle.Limit != "hourly" || !rec.Throttle.Until.Equal(until) || !f.OverNow(hourly.Max()) || f.Now != 11 {
			t.Fatalf("at %s: throttle %+v, figures %+v; want the throttle and 11 over 10", at, rec.Throttle, f)
		}
		if !f.Over() || !f.OverFrom.Equal(t0.Add(40*time.Minute)) || f.Peak != 11 {
			t.Fatalf("at %s: %+v; want over from the 12:40 bucket", at, f)
		}
	}
	rec, f := read(until)
	if rec.Throttle != nil || f.OverNow(hourly.Max()) || f.Now != 7 || f.Peak != 11 || !f.Over() {
		t.Fatalf("at the throttle's end: throttle %+v, figures %+v; want none, 7 now, 11 at most", rec.Throttle, f)
	}
}

// TestScanVolumeWhatItReads checks what the walk reads and what it
// leaves: accounts without limits, a record counted for other windows,
// another prefix (one that a pattern without escapes would take for
// this one's), a record gone; and that an error of fn ends it.
func TestScanVolumeWhatItReads(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	clk := testutil.NewClock(t0)
	// Two stores under the test's prefix: "P:[ab]" and "P:a". Unescaped,
	// the pattern "P:[ab]:{*}:v" would match P:a's keys and not its own.
	s := New(rdb, prefix+":[ab]", WithClock(clk.Now))
	other := New(rdb, prefix+":a", WithClock(clk.Now))
	lim := enforced(hourly)
	for i := range 5 {
		countAs(t, s, fmt.Sprintf("u%d@example.com", i), lim, 1+i)
	}
	countAs(t, other, "elsewhere@example.com", lim, 3)
	longer := hourly
	longer.Window = 2 * time.Hour
	countAs(t, s, "moved@example.com", enforced(longer), 2)
	recs := scanAll(t, s, func(a string) *VolumeLimits {
		if a == "u4@example.com" {
			return nil // no limits now
		}
		return lim
	})
	if len(recs) != 5 {
		t.Fatalf("read %d records: %v", len(recs), recs)
	}
	for i := range 4 {
		r := recs[fmt.Sprintf("u%d@example.com", i)]
		if f := r.Rings[0].Series.Figures(time.Hour, t0, 0); f.Now != 1+i {
			t.Errorf("u%d: %+v", i, f)
		}
	}
	if r := recs["moved@example.com"]; !r.OtherLimits || r.Rings != nil {
		t.Errorf("a record of a 2h window read with the 1h limit: %+v", r)
	}
	if n := len(scanAll(t, other, func(string) *VolumeLimits { return lim })); n != 1 {
		t.Errorf("the other prefix read %d records", n)
	}
	stop := errors.New("enough")
	pages := 0
	if err := s.ScanVolume(context.Background(), func(string) *VolumeLimits { return lim }, func([]VolumeRecord) error {
		pages++
		return stop
	}); !errors.Is(err, stop) || pages != 1 {
		t.Errorf("fn's error: %v after %d pages", err, pages)
	}
	// A record deleted (a reinstatement resets it) is not read.
	if err := rdb.Del(context.Background(), s.key("u0@example.com", sufVolume)).Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok := scanAll(t, s, func(string) *VolumeLimits { return lim })["u0@example.com"]; ok {
		t.Error("a deleted record was read")
	}
}

// TestScanVolumeOnRedisCluster counts accounts spread over every master
// of a real Redis Cluster (3 masters, a replica each) and reads them
// back: the walk scans each master, and reads each record once.
func TestScanVolumeOnRedisCluster(t *testing.T) {
	ctx, _, rdb := startRedisCluster(t)
	s := New(rdb, "aup", WithClock(func() time.Time { return t0 }))
	lim := enforced(big(hourly))
	const accounts = 120
	for i := range accounts {
		countAs(t, s, fmt.Sprintf("user%d@example.com", i), lim, 1+i%7)
	}
	// Every master holds some of the records.
	var mu sync.Mutex
	var masters []int
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, "aup:{*}:v").Result()
		mu.Lock()
		masters = append(masters, len(keys))
		mu.Unlock()
		return err
	})
	if err != nil || len(masters) != 3 || slices.Contains(masters, 0) {
		t.Fatalf("records per master: %v %v", masters, err)
	}
	read := 0
	err = s.ScanVolume(ctx, func(string) *VolumeLimits { return lim }, func(recs []VolumeRecord) error {
		for _, r := range recs {
			read++
			var i int
			if _, err := fmt.Sscanf(r.Account, "user%d@example.com", &i); err != nil {
				return err
			}
			if f := r.Rings[0].Series.Figures(time.Hour, t0, 0); f.Now != 1+i%7 {
				return fmt.Errorf("%s: %+v", r.Account, f)
			}
		}
		return nil
	})
	if err != nil || read != accounts {
		t.Fatalf("read %d of %d records: %v", read, accounts, err)
	}
}
