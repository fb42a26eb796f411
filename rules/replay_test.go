package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var replayT0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// ev is a counting outbound event of account acct, met at minute min.
func ev(acct, id string, min int, counting bool) ReplayEvent {
	at := replayT0.Add(time.Duration(min) * time.Minute)
	return ReplayEvent{Account: acct, ID: id, Time: at, At: at, Counting: counting, Outbound: true}
}

// hamEv is outbound ham of account acct, met at minute min.
func hamEv(acct, id string, min int) ReplayEvent {
	e := ev(acct, id, min, false)
	e.Ham = true
	return e
}

// crossings formats crossings one per line: account, minute, rule,
// count and, when the spam-rate rule held, its spam and ham.
func crossings(cs []ReplayCrossing) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s@%d %s %d", c.Account, int(c.At.Sub(replayT0)/time.Minute), c.Rule, c.Count)
		if c.Rate != nil {
			fmt.Fprintf(&b, " rate %d/%d", c.Rate.Spam, c.Rate.Ham)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestReplay(t *testing.T) {
	var evs []ReplayEvent
	for i := range 4 {
		evs = append(evs, ev("a", fmt.Sprint("a", i), i, true))
	}
	evs = append(evs, ev("a", "a0", 5, true)) // duplicate id
	evs = append(evs, ev("c", "c0", 0, true), ev("c", "c1", 1, false), ev("c", "c2", 2, true), ev("c", "c3", 3, true))
	evs = append(evs, ev("c", "c4", 20, true), ev("c", "c5", 21, true), ev("c", "c6", 22, true))
	evs = append(evs, ev("c", "late", 23, true)) // time set below: before the reinstatement
	evs[len(evs)-1].Time = replayT0.Add(9 * time.Minute)
	evs = append(evs, ev("b", "b0", 30, true), ev("b", "b1", 31, true)) // only two
	evs = append(evs, ev("b", "b2", 1500, true))                        // the first two left the window
	resets := []ReplayReset{{Account: "c", At: replayT0.Add(10 * time.Minute)}}
	rule := func(string) ReplayAccount { return ReplayAccount{Threshold: 2, Action: ActionSuspend} }
	got := Replay(evs, resets, 24*time.Hour, rule)
	if want := "a@2 spam_count 3\nc@5 spam_count 3\nc@22 spam_count 3\n"; crossings(got) != want {
		t.Fatalf("got\n%swant\n%s", crossings(got), want)
	}
	if got[0].Threshold != 2 || got[0].Action != ActionSuspend || got[0].Rate != nil {
		t.Fatalf("crossing %+v", got[0])
	}
	// Reports end when the count falls back, and report again.
	rep := Replay([]ReplayEvent{ev("r", "1", 0, true), ev("r", "2", 1, true), ev("r", "3", 1441, true), ev("r", "4", 1442, true)}, nil, 24*time.Hour,
		func(string) ReplayAccount { return ReplayAccount{Threshold: 1, Action: ActionReport} })
	if want := "r@1 spam_count 2\nr@1442 spam_count 2\n"; crossings(rep) != want {
		t.Fatalf("reports:\n%s", crossings(rep))
	}
}

// mixed is n outbound messages of account acct, one a minute from minute
// from on, of which every k-th (the k-th, the 2k-th, ...) is spam and the
// others ham.
func mixed(acct string, from, n, k int) []ReplayEvent {
	evs := make([]ReplayEvent, n)
	for i := range evs {
		id := fmt.Sprintf("%s-%d", acct, i)
		if (i+1)%k == 0 {
			evs[i] = ev(acct, id, from+i, true)
		} else {
			evs[i] = hamEv(acct, id, from+i)
		}
	}
	return evs
}

func repeat(n int, f func(i int) ReplayEvent) []ReplayEvent {
	evs := make([]ReplayEvent, n)
	for i := range evs {
		evs[i] = f(i)
	}
	return evs
}

func cat(parts ...[]ReplayEvent) []ReplayEvent {
	var out []ReplayEvent
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestReplaySpamRate replays the spam-rate rule: over 5% of outbound
// messages with at least 10 spam, the threshold (100) its backstop,
// unless a case says otherwise.
func TestReplaySpamRate(t *testing.T) {
	rate5 := SpamRate{PPM: RatePPM(0.05), MinSpam: 10}
	spam := func(acct string, from int) func(int) ReplayEvent {
		return func(i int) ReplayEvent { return ev(acct, fmt.Sprintf("%s-s%d-%d", acct, from, i), from+i, true) }
	}
	ham := func(acct string, from int) func(int) ReplayEvent {
		return func(i int) ReplayEvent { return hamEv(acct, fmt.Sprintf("%s-h%d-%d", acct, from, i), from+i) }
	}
	inbound := func(acct string, from int) func(int) ReplayEvent {
		return func(i int) ReplayEvent {
			e := ev(acct, fmt.Sprintf("%s-i%d-%d", acct, from, i), from+i, true)
			e.Outbound = false
			return e
		}
	}
	for _, c := range []struct {
		name      string
		evs       []ReplayEvent
		resets    []ReplayReset
		threshold int
		rate      SpamRate
		action    Action
		want      string
	}{{
		// 10,000 messages over about a week at 0.5% spam (every 200th):
		// at most 7 spam a day, never 10, and never 5%.
		name: "busy sender at 0.5% false positives",
		evs:  mixed("busy", 0, 10000, 200),
		want: "",
	}, {
		// The same 0.5% through a day: 50 spam in 10,000.
		name: "busy sender in one day",
		evs: func() []ReplayEvent {
			evs := mixed("busy", 0, 10000, 200)
			for i := range evs {
				evs[i].Time = replayT0.Add(time.Duration(i) * 8 * time.Second)
				evs[i].At = evs[i].Time
			}
			return evs
		}(),
		want: "",
	}, {
		// 40% spam: crosses at the 10th spam (the 25th message), long
		// before the threshold.
		name: "spammer at 40%",
		evs: func() []ReplayEvent {
			var evs []ReplayEvent
			for i := range 100 {
				if i%5 < 2 {
					evs = append(evs, ev("spammer", fmt.Sprint(i), i, true))
				} else {
					evs = append(evs, hamEv("spammer", fmt.Sprint(i), i))
				}
			}
			return evs
		}(),
		want: "spammer@21 spam_rate 10 rate 10/12\n",
	}, {
		// 10 spam in 200 is exactly 5%: no crossing. The same ham again
		// (redelivered) does not lower the rate: one more spam crosses.
		name: "redelivered ham counts once",
		evs:  cat(repeat(190, ham("a", 0)), repeat(10, spam("a", 190)), repeat(190, ham("a", 0)), repeat(1, spam("a", 300))),
		want: "a@300 spam_rate 11 rate 11/190\n",
	}, {
		// The same, but the ham comes again under new ids: 380 ham.
		name: "new ham lowers the rate",
		evs:  cat(repeat(190, ham("a", 0)), repeat(10, spam("a", 190)), repeat(190, ham("a", 200)), repeat(1, spam("a", 500))),
		want: "",
	}, {
		// 200 ham, then reinstated: the ham before the reinstatement no
		// longer counts, and 10 spam are 100%.
		name:   "reinstatement floor",
		evs:    cat(repeat(200, ham("a", 0)), repeat(10, spam("a", 300))),
		resets: []ReplayReset{{Account: "a", At: replayT0.Add(250 * time.Minute)}},
		want:   "a@309 spam_rate 10 rate 10/0\n",
	}, {
		// Without the reinstatement, 10 in 210 is under 5%.
		name: "no reinstatement",
		evs:  cat(repeat(200, ham("a", 0)), repeat(10, spam("a", 300))),
		want: "",
	}, {
		// Ham from before the reinstatement that arrives after it (late)
		// never counts.
		name: "late ham after the floor",
		evs: cat(repeat(200, func(i int) ReplayEvent { e := ham("a", 0)(i); e.At = replayT0.Add(260 * time.Minute); return e }),
			repeat(10, spam("a", 300))),
		resets: []ReplayReset{{Account: "a", At: replayT0.Add(250 * time.Minute)}},
		want:   "a@309 spam_rate 10 rate 10/0\n",
	}, {
		// Ham that left the window no longer counts: the spam of the
		// next day crosses when the old ham is gone.
		name: "ham leaves the window",
		evs:  cat(repeat(200, ham("a", 0)), repeat(10, spam("a", 1000)), repeat(1, ham("a", 1640)), repeat(200, ham("a", 1700))),
		want: "a@1640 spam_rate 10 rate 10/1\n",
	}, {
		// The rules are applied where the live worker applies them: not
		// at an event the counting store never sees (inbound ham here),
		// but at the next outbound ham.
		name: "decided at events the store sees",
		evs: cat(repeat(200, ham("a", 0)), repeat(10, spam("a", 1000)),
			repeat(1, func(int) ReplayEvent { e := ev("a", "in-ham", 1640, false); e.Outbound = false; return e }),
			repeat(1, ham("a", 1650))),
		want: "a@1650 spam_rate 10 rate 10/1\n",
	}, {
		// Inbound spam counts toward the threshold, not the rate.
		name:      "inbound spam is not the rate's",
		evs:       cat(repeat(20, ham("a", 0)), repeat(9, inbound("a", 100)), repeat(9, spam("a", 200)), repeat(1, spam("a", 300))),
		threshold: 50,
		want:      "a@300 spam_rate 19 rate 10/20\n",
	}, {
		// Both rules hold: the count names the crossing, with no rate
		// figures (ham is kept up to HamCap(5) = 95, the newest: enough for
		// the rate's decision, not to tell the sender's real rate).
		name:      "count first, ham at its cap",
		evs:       cat(repeat(150, ham("a", 0)), repeat(6, spam("a", 200))),
		threshold: 5,
		rate:      SpamRate{PPM: RatePPM(0.05), MinSpam: 1},
		want:      "a@205 spam_count 6\n",
	}, {
		// The count alone, when the rate does not hold: inbound spam.
		name:      "count alone",
		evs:       cat(repeat(150, ham("a", 0)), repeat(6, inbound("a", 200))),
		threshold: 5,
		rate:      SpamRate{PPM: RatePPM(0.05), MinSpam: 1},
		want:      "a@205 spam_count 6\n",
	}, {
		// Off: only the count.
		name: "rate off",
		evs:  cat(repeat(20, spam("a", 0))),
		rate: SpamRate{},
		want: "",
	}, {
		// A suspension holds until the reinstatement, then the rate
		// crosses again.
		name:   "suspended once, again after reinstatement",
		evs:    cat(repeat(15, spam("a", 0)), repeat(10, spam("a", 100))),
		resets: []ReplayReset{{Account: "a", At: replayT0.Add(50 * time.Minute)}},
		want:   "a@9 spam_rate 10 rate 10/0\na@109 spam_rate 10 rate 10/0\n",
	}, {
		// A report holds while the rate does (12 spam: until the 229th
		// ham); more ham ends it, and the spam that makes it hold again
		// (16 in 316) is reported again.
		name:   "report holds while the rate does",
		evs:    cat(repeat(12, spam("a", 0)), repeat(300, ham("a", 20)), repeat(10, spam("a", 400))),
		action: ActionReport,
		want:   "a@9 spam_rate 10 rate 10/0\na@403 spam_rate 16 rate 16/300\n",
	}} {
		t.Run(c.name, func(t *testing.T) {
			acct := ReplayAccount{Threshold: cmpOr(c.threshold, 100), SpamRate: c.rate, Action: ActionSuspend}
			if c.rate == (SpamRate{}) && c.name != "rate off" {
				acct.SpamRate = rate5
			}
			if c.action != "" {
				acct.Action = c.action
			}
			got := Replay(c.evs, c.resets, 24*time.Hour, func(string) ReplayAccount { return acct })
			if crossings(got) != c.want {
				t.Fatalf("got\n%swant\n%s", crossings(got), c.want)
			}
			for _, x := range got {
				if x.Rate != nil && x.Rate.Rule != acct.SpamRate || x.Threshold != acct.Threshold || x.Action != acct.Action {
					t.Fatalf("crossing %+v, rule %+v", x, acct)
				}
			}
		})
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func BenchmarkReplayOneHeavyAccount(b *testing.B) {
	evs := make([]ReplayEvent, 100000)
	for i := range evs {
		at := replayT0.Add(time.Duration(i) * 2 * time.Second)
		evs[i] = ReplayEvent{Account: "a", ID: fmt.Sprint(i), Time: at, At: at, Counting: true}
	}
	rule := func(string) ReplayAccount { return ReplayAccount{Threshold: 50, Action: ActionSuspend} }
	for b.Loop() {
		Replay(evs, nil, 24*time.Hour, rule)
	}
}

// A busy sender with the spam-rate rule: 1 spam in 200, the ham kept up
// to its cap.
func BenchmarkReplayBusySenderWithRate(b *testing.B) {
	evs := mixed("busy", 0, 100000, 200)
	for i := range evs {
		evs[i].Time = replayT0.Add(time.Duration(i) * 2 * time.Second)
		evs[i].At = evs[i].Time
	}
	rule := func(string) ReplayAccount {
		return ReplayAccount{Threshold: 50, SpamRate: SpamRate{PPM: RatePPM(0.05), MinSpam: 10}, Action: ActionSuspend}
	}
	for b.Loop() {
		Replay(evs, nil, 24*time.Hour, rule)
	}
}
