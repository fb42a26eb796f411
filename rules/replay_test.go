package rules

import (
	"fmt"
	"testing"
	"time"
)

func TestReplay(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ev := func(acct, id string, min int, counting bool) ReplayEvent {
		at := t0.Add(time.Duration(min) * time.Minute)
		return ReplayEvent{Account: acct, ID: id, Time: at, At: at, Counting: counting}
	}
	var evs []ReplayEvent
	for i := range 4 {
		evs = append(evs, ev("a", fmt.Sprint("a", i), i, true))
	}
	evs = append(evs, ev("a", "a0", 5, true)) // duplicate id
	evs = append(evs, ev("c", "c0", 0, true), ev("c", "c1", 1, false), ev("c", "c2", 2, true), ev("c", "c3", 3, true))
	evs = append(evs, ev("c", "c4", 20, true), ev("c", "c5", 21, true), ev("c", "c6", 22, true))
	evs = append(evs, ev("c", "late", 23, true)) // time set below: before the reinstatement
	evs[len(evs)-1].Time = t0.Add(9 * time.Minute)
	evs = append(evs, ev("b", "b0", 30, true), ev("b", "b1", 31, true)) // only two
	evs = append(evs, ev("b", "b2", 1500, true))                        // the first two left the window
	resets := []ReplayReset{{Account: "c", At: t0.Add(10 * time.Minute)}}
	rule := func(string) ReplayAccount { return ReplayAccount{Threshold: 2, Action: ActionSuspend} }
	got := Replay(evs, resets, 24*time.Hour, rule)
	want := "[{a 2026-12-01 00:02:00 +0000 UTC 3 2 suspend} {c 2026-12-01 00:05:00 +0000 UTC 3 2 suspend} {c 2026-12-01 00:22:00 +0000 UTC 3 2 suspend}]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got  %v\nwant %s", got, want)
	}
	// Reports end when the count falls back, and report again.
	rep := Replay([]ReplayEvent{ev("r", "1", 0, true), ev("r", "2", 1, true), ev("r", "3", 1441, true), ev("r", "4", 1442, true)}, nil, 24*time.Hour,
		func(string) ReplayAccount { return ReplayAccount{Threshold: 1, Action: ActionReport} })
	if len(rep) != 2 || rep[1].Count != 2 {
		t.Fatalf("reports: %v", rep)
	}
}

func BenchmarkReplayOneHeavyAccount(b *testing.B) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	evs := make([]ReplayEvent, 100000)
	for i := range evs {
		at := t0.Add(time.Duration(i) * 2 * time.Second)
		evs[i] = ReplayEvent{Account: "a", ID: fmt.Sprint(i), Time: at, At: at, Counting: true}
	}
	rule := func(string) ReplayAccount { return ReplayAccount{Threshold: 50, Action: ActionSuspend} }
	for b.Loop() {
		Replay(evs, nil, 24*time.Hour, rule)
	}
}
