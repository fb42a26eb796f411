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
	// Outbound says the account sent it: an outbound counting event is
	// the spam-rate rule's spam.
	Outbound bool
	// Ham is outbound ham, the spam-rate rule's ham, kept by id in a set
	// of its own as the counting store keeps it. It counts only for an
	// account whose rule has a rate; for the others, as for the live
	// worker, it is statistics only.
	Ham bool
}

// ReplayReset is a reinstatement: from At on, nothing before it counts.
type ReplayReset struct {
	Account string
	At      time.Time
}

// ReplayAccount is an account's rule in the replay: the threshold and
// the spam-rate rule tried (off: the zero value), and the action a
// crossing leads to.
type ReplayAccount struct {
	Threshold int
	SpamRate  SpamRate
	Action    Action
}

// ReplayCrossing is one simulated crossing of an AUP rule.
type ReplayCrossing struct {
	Account string
	At      time.Time // the clock when it happened
	// Rule is the rule crossed, RuleSpamCount or RuleSpamRate; the count
	// names it when both hold.
	Rule      string
	Count     int // the count of counting events in the window
	Threshold int
	Action    Action
	// Rate holds the spam-rate rule's figures when it names the
	// crossing; nil otherwise.
	Rate *RateFigures
}

// RateFigures are the spam-rate rule's figures at a crossing: over the
// window, Spam outbound messages judged spam and Ham judged ham (at most
// Rule.HamCap of the threshold, as the counting store keeps it), against
// Rule.
type RateFigures struct {
	Spam, Ham int
	Rule      SpamRate
}

// Replay runs the AUP rules over stored events, as the counting store
// applies them, and returns the crossings they would have made, in order
// of time:
//
//   - the window is rolling and by event time: at clock now an event
//     counts while its Time is after now - window (and after the last
//     reinstatement);
//   - an account crosses when its count exceeds its threshold, or when
//     its spam-rate rule holds: its outbound counting events (spam)
//     against its outbound ham (SpamRate.Crosses); the count names the
//     crossing when both hold;
//   - a suspension holds until the next reinstatement, so it crosses
//     once; a report holds while either rule still holds, and the next
//     crossing after it ends is reported again;
//   - the same id counts once; ham is kept by id in a set of its own, at
//     most SpamRate.HamCap of the threshold (the newest), as the store
//     keeps it;
//   - a reinstatement resets the window: what was counted before it no
//     longer counts, spam or ham, and late events from before it never
//     do;
//   - the rules are applied after each event the live worker takes to
//     the counting store (a counting event, or ham when the account's
//     rule has a rate), not after the others, which the store never
//     sees.
//
// Events are taken in the order given (the stream's order); the clock is
// the latest At seen. Resets are applied when the clock reaches them.
func Replay(evs []ReplayEvent, resets []ReplayReset, window time.Duration, rule func(account string) ReplayAccount) []ReplayCrossing {
	r := newReplayRun(resets, rule)
	var out []ReplayCrossing
	for _, e := range evs {
		r.tick(e.At)
		s := r.account(e.Account)
		lo := r.clock.Add(-window)
		s.trim(lo)
		before := s.counted.len()
		s.take(e, lo)
		if !s.decides(e) {
			continue
		}
		if c, ok := s.decide(before); ok {
			c.Account, c.At = e.Account, r.clock
			out = append(out, c)
		}
	}
	return out
}

// replayRun is one replay: the accounts met so far, the clock and the
// resets not applied yet.
type replayRun struct {
	rule   func(account string) ReplayAccount
	accts  map[string]*replayState
	resets []ReplayReset // in order of time
	next   int           // the first not applied yet
	clock  time.Time
}

func newReplayRun(resets []ReplayReset, rule func(account string) ReplayAccount) *replayRun {
	rs := append([]ReplayReset(nil), resets...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].At.Before(rs[j].At) })
	return &replayRun{rule: rule, accts: map[string]*replayState{}, resets: rs}
}

// tick moves the clock to at, if later, and applies the resets it
// reaches.
func (r *replayRun) tick(at time.Time) {
	if at.After(r.clock) {
		r.clock = at
	}
	for ; r.next < len(r.resets) && !r.resets[r.next].At.After(r.clock); r.next++ {
		r.account(r.resets[r.next].Account).reset(r.resets[r.next].At)
	}
}

// account is the state of an account, made at first sight.
func (r *replayRun) account(a string) *replayState {
	s := r.accts[a]
	if s == nil {
		rule := r.rule(a)
		s = &replayState{rule: rule, hamCap: rule.SpamRate.HamCap(rule.Threshold),
			seen: newIDSet(), counted: newIDSet(), spam: newIDSet(), ham: newIDSet()}
		r.accts[a] = s
	}
	return s
}

// replayState is one account in the replay.
type replayState struct {
	rule    ReplayAccount
	hamCap  int   // the most ham kept (SpamRate.HamCap of the threshold)
	seen    idSet // every id kept in the window (dedup)
	counted idSet // counting ids in the window, after the floor
	// With the spam-rate rule on: the outbound counting ids (its spam),
	// and outbound ham in the window, after the floor, the newest hamCap.
	spam, ham idSet
	floor     time.Time
	held      bool // suspended, or reported and a rule still holds
}

// reset is a reinstatement at at: the floor rises to it, what was counted
// until then no longer counts, and a crossing may happen again.
func (s *replayState) reset(at time.Time) {
	if at.After(s.floor) {
		s.floor = at
	}
	s.counted.dropUntil(at)
	s.spam.dropUntil(at)
	s.ham.dropUntil(at)
	s.held = false
}

// trim forgets what has left the window: everything at or before lo.
func (s *replayState) trim(lo time.Time) {
	s.seen.dropUntil(lo)
	s.counted.dropUntil(lo)
	s.spam.dropUntil(lo)
	s.ham.dropUntil(lo)
}

// take adds e to the window, unless it is late (at or before lo, or a
// counting event at or before the floor) or its id is there already.
func (s *replayState) take(e ReplayEvent, lo time.Time) {
	if !e.Time.After(lo) {
		return
	}
	afterFloor := e.Time.After(s.floor)
	if !s.seen.has(e.ID) && (!e.Counting || afterFloor) {
		s.seen.add(e.ID, e.Time)
		if e.Counting {
			s.counted.add(e.ID, e.Time)
		}
		if e.Counting && e.Outbound && s.rule.SpamRate.On() {
			s.spam.add(e.ID, e.Time)
		}
	}
	if e.Ham && afterFloor && s.rule.SpamRate.On() && !s.ham.has(e.ID) {
		s.ham.add(e.ID, e.Time)
		s.ham.keepNewest(s.hamCap)
	}
}

// decides reports whether the live worker takes e to the counting
// store, which then applies the rules: a counting event, or ham when the
// account's rule has a rate.
func (s *replayState) decides(e ReplayEvent) bool {
	return e.Counting || e.Ham && s.rule.SpamRate.On()
}

// decide applies the rules after an event; before is the count before
// it. It returns the crossing the event makes, if any (without its
// account and time).
func (s *replayState) decide(before int) (ReplayCrossing, bool) {
	if s.held && s.rule.Action != ActionReport {
		return ReplayCrossing{}, false // suspended until a reinstatement
	}
	n := s.counted.len()
	rate := s.rateHolds()
	if s.held && (Exceeds(before, s.rule.Threshold) || rate != nil) {
		return ReplayCrossing{}, false // a report holds while a rule does
	}
	s.held = false
	if !Exceeds(n, s.rule.Threshold) && rate == nil {
		return ReplayCrossing{}, false
	}
	s.held = true
	rule := RuleSpamRate
	if Exceeds(n, s.rule.Threshold) {
		// the count names it, and the rate's figures, from a ham set cut
		// to what the rate needs up to the threshold, would mislead
		rule, rate = RuleSpamCount, nil
	}
	return ReplayCrossing{Rule: rule, Count: n, Threshold: s.rule.Threshold, Action: s.rule.Action, Rate: rate}, true
}

// rateHolds returns the spam-rate rule's figures when it holds, else nil.
func (s *replayState) rateHolds() *RateFigures {
	spam, ham := s.spam.len(), s.ham.len()
	if !s.rule.SpamRate.Crosses(spam, ham) {
		return nil
	}
	return &RateFigures{Spam: spam, Ham: ham, Rule: s.rule.SpamRate}
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

// keepNewest forgets the oldest ids until at most n are left.
func (s idSet) keepNewest(n int) {
	for len(s.m) > n && s.h.Len() > 0 {
		x := heap.Pop(s.h).(timedID)
		if mt, ok := s.m[x.id]; ok && mt.Equal(x.t) {
			delete(s.m, x.id)
		}
	}
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
