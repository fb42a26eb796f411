package rules

import (
	"container/heap"
	"sort"
	"time"
)

// ReplayEvent is one stored verdict event, as the replay sees it.
type ReplayEvent struct {
	Account string
	ID      string    // the idempotency key: an id counts once
	Time    time.Time // the event's own time: the window is by this time
	// At is when the live worker met it (its arrival in the stream); the
	// replay's clock.
	At time.Time
	// Counting says whether the policy counts it toward the threshold
	// (ham and kinds the policy ignores do not, but they still take the id).
	Counting bool
}

// ReplayReset is a reinstatement: from At on, nothing before it counts.
type ReplayReset struct {
	Account string
	At      time.Time
}

// ReplayAccount is an account's rule in the replay: the threshold tried
// and the action a crossing leads to.
type ReplayAccount struct {
	Threshold int
	Action    Action
}

// ReplayCrossing is one simulated crossing of the threshold.
type ReplayCrossing struct {
	Account   string
	At        time.Time // the clock when it happened
	Count     int       // the count that exceeded the threshold
	Threshold int
	Action    Action
}

// Replay runs the AUP rule over stored events, as the counting store
// applies it, and returns the crossings it would have made, in order of
// time:
//
//   - the window is rolling and by event time: at clock now an event
//     counts while its Time is after now - window (and not after the
//     last reinstatement);
//   - an account crosses when its count exceeds its threshold; a
//     suspension holds until the next reinstatement, so it crosses once;
//     a report ends when the count falls back to the threshold, and the
//     next crossing is reported again;
//   - the same id counts once;
//   - a reinstatement resets the window: what was counted before it no
//     longer counts, and late events from before it never do.
//
// Events are taken in the order given (the stream's order); the clock is
// the latest At seen. Resets are applied when the clock reaches them.
func Replay(evs []ReplayEvent, resets []ReplayReset, window time.Duration, rule func(account string) ReplayAccount) []ReplayCrossing {
	type state struct {
		seen    idSet // every id kept in the window (dedup)
		counted idSet // counting ids in the window, after the floor
		floor   time.Time
		frozen  bool // suspended, or reported and still over
		rule    ReplayAccount
	}
	accts := map[string]*state{}
	get := func(a string) *state {
		s := accts[a]
		if s == nil {
			s = &state{seen: newIDSet(), counted: newIDSet(), rule: rule(a)}
			accts[a] = s
		}
		return s
	}
	rs := append([]ReplayReset(nil), resets...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].At.Before(rs[j].At) })
	var out []ReplayCrossing
	var clock time.Time
	next := 0
	applyResets := func(until time.Time) {
		for next < len(rs) && !rs[next].At.After(until) {
			s := get(rs[next].Account)
			at := rs[next].At
			if at.After(s.floor) {
				s.floor = at
			}
			s.counted.dropUntil(at)
			s.frozen = false
			next++
		}
	}
	for _, e := range evs {
		if e.At.After(clock) {
			clock = e.At
		}
		applyResets(clock)
		s := get(e.Account)
		lo := clock.Add(-window)
		// Forget what has left the window.
		s.seen.dropUntil(lo)
		s.counted.dropUntil(lo)
		if s.frozen && s.rule.Action == ActionReport && s.counted.len() <= s.rule.Threshold {
			s.frozen = false
		}
		if !s.seen.has(e.ID) && e.Time.After(lo) {
			if !e.Counting || e.Time.After(s.floor) {
				s.seen.add(e.ID, e.Time)
			}
			if e.Counting && e.Time.After(s.floor) {
				s.counted.add(e.ID, e.Time)
			}
		}
		n := s.counted.len()
		switch {
		case Exceeds(n, s.rule.Threshold) && !s.frozen:
			s.frozen = true
			out = append(out, ReplayCrossing{Account: e.Account, At: clock, Count: n, Threshold: s.rule.Threshold, Action: s.rule.Action})
		case s.frozen && s.rule.Action == ActionReport && n <= s.rule.Threshold:
			s.frozen = false
		}
	}
	return out
}

// idSet is a set of ids with their event times that forgets the oldest
// cheaply: a map for lookups and a min-heap by time for expiry.
type idSet struct {
	m map[string]time.Time
	h *timeHeap
}

func newIDSet() idSet { return idSet{m: map[string]time.Time{}, h: &timeHeap{}} }

func (s idSet) has(id string) bool { _, ok := s.m[id]; return ok }
func (s idSet) len() int           { return len(s.m) }

func (s idSet) add(id string, t time.Time) {
	s.m[id] = t
	heap.Push(s.h, timedID{t, id})
}

// dropUntil forgets every id whose time is at or before t.
func (s idSet) dropUntil(t time.Time) {
	for s.h.Len() > 0 && !(*s.h)[0].t.After(t) {
		x := heap.Pop(s.h).(timedID)
		if mt, ok := s.m[x.id]; ok && mt.Equal(x.t) {
			delete(s.m, x.id)
		}
	}
}

type timedID struct {
	t  time.Time
	id string
}

type timeHeap []timedID

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].t.Before(h[j].t) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(timedID)) }
func (h *timeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
