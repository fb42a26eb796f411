package store

import (
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

//go:embed ingest.lua
var ingestLua string

var ingestScript = redis.NewScript(ingestLua)

// Outcome is what became of one event in the window.
type Outcome byte

// The outcomes of Ingest, one per event.
const (
	Counted   Outcome = 'c' // counted toward the threshold
	StatsOnly Outcome = 's' // kept for statistics only (ham, a kind that does not count)
	Duplicate Outcome = 'd' // this id was already recorded
	Late      Outcome = 'l' // outside the window, or before the last reinstatement
	AtCap     Outcome = 'k' // counted while the count is at the per-account cap
)

func (o Outcome) String() string {
	switch o {
	case Counted:
		return "counted"
	case StatsOnly:
		return "stats"
	case Duplicate:
		return "duplicate"
	case Late:
		return "late"
	case AtCap:
		return "capped"
	}
	return "unknown"
}

// Item is one event to ingest.
type Item struct {
	ID       string // the event id (hashed; the same id never counts twice)
	Time     time.Time
	Kind     rules.Kind
	Counting bool // whether the policy counts it toward the threshold
	// Fingerprint of the message content and stream sequence of the event,
	// offered as an evidence sample. Seq 0: no sample.
	Fingerprint string
	Seq         uint64
}

// Batch is the events of one account in one batch.
type Batch struct {
	Account   string
	Company   string
	Threshold int
	Cap       int          // at most this many events kept; > Threshold
	Action    rules.Action // on crossing: suspend or report
	Items     []Item
}

// Result is the outcome of one account's batch.
type Result struct {
	Outcomes []Outcome // one per item
	Count    int       // counting events in the window (at most Cap)
	Capped   bool      // this batch dropped events at the cap: the real count is higher than Count
	Crossing rules.Action
	ID       string // id of the suspension or report the crossing made
	// Pending are the account's outbox entries waiting to be published,
	// oldest first: the crossing's, and any a crash left behind. Publish
	// them, then Settle.
	Pending []string
	Err     error // the batch failed; nothing is known. See Permanent.
}

// IngestParams are the window and clock of an Ingest call.
type IngestParams struct {
	Window time.Duration
	Skew   time.Duration // how far ahead an event may be; windows expire after Window+Skew
	// Now pins the clock; zero uses Redis's clock (TIME), the one clock of
	// every process. Tests pin it.
	Now   time.Time
	NewID func() string
	// Near are hints for the near-threshold index (account -> time in ms),
	// written in the same round trip.
	Near map[string]int64
}

// rebaseAfter bounds how old a window's score base may grow: scores are
// (time - base) * 16 + kind and stay within 32 bits (compact encoding)
// while |time - base| < 2^27 ms, about 37 hours.
func rebaseAfter(window, skew time.Duration) int64 {
	const span = int64(1) << 27
	r := span - window.Milliseconds() - skew.Milliseconds() - time.Hour.Milliseconds()
	return max(r, time.Hour.Milliseconds())
}

// Ingest applies every account's batch. Each account is atomic and costs a
// fixed number of commands whatever its number of events.
//
// Most accounts take a fast path of plain commands, two pipelined round
// trips in all: the first reads Redis's clock, each account's state and
// which of its ids the window holds; the second adds the new ids (ZADD NX
// dedups atomically by itself), trims the window and counts it. The ingest
// script does the rest, atomically, wherever a decision is needed: a new or
// old window (rebase, expiry), samples that may change, a reported
// crossing, account events waiting, statistics-only events, and, after the
// fast path, a crossing, the cap, or a reinstatement that came in between.
// The script then sees the fast path's events as already counted, so that
// nothing counts twice. Results are in the order of batches; a failed
// account sets its result's Err.
func (s *Store) Ingest(ctx context.Context, batches []Batch, p IngestParams) ([]Result, error) {
	var nowMS int64
	if !p.Now.IsZero() {
		nowMS = ms(p.Now)
	} else if s.pinned {
		nowMS = ms(s.now())
	}
	var extra func(redis.Pipeliner)
	if len(p.Near) > 0 {
		lo := time.Now().UnixMilli() - p.Window.Milliseconds()
		if nowMS != 0 {
			lo = nowMS - p.Window.Milliseconds()
		}
		extra = func(pipe redis.Pipeliner) { s.writeNear(ctx, pipe, p.Near, lo) }
	}
	if len(batches) == 0 {
		return s.scriptIngest(ctx, batches, p, nowMS, 0, extra)
	}

	// Round trip 1: the clock, the state, the known ids.
	pipe := s.rdb.Pipeline()
	var clock *redis.TimeCmd
	if nowMS == 0 {
		clock = pipe.Time(ctx)
	}
	state := make([]*redis.SliceCmd, len(batches))
	known := make([]*redis.Cmd, len(batches))
	card := make([]*redis.IntCmd, len(batches))
	stats := make([]*redis.SliceCmd, len(batches))
	approx := time.Now().UnixMilli() // statistics buckets are approximate: the local clock
	if nowMS != 0 {
		approx = nowMS
	}
	statsLo := approx - p.Window.Milliseconds()
	for i, b := range batches {
		state[i] = pipe.HMGet(ctx, s.key(b.Account, sufState), fastFields...)
		if su := statsOf(b.Items, statsLo); len(su) > 0 {
			fields := make([]string, 0, len(su)+1)
			for _, u := range su {
				fields = append(fields, u.field)
			}
			stats[i] = pipe.HMGet(ctx, s.key(b.Account, sufStats), append(fields, "_e")...)
		}
		if ids := countingMembers(b.Items); len(ids) > 0 {
			known[i] = pipe.Do(ctx, append([]any{"ZMSCORE", s.key(b.Account, sufWindow)}, ids...)...)
			card[i] = pipe.ZCard(ctx, s.key(b.Account, sufWindow))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && clock != nil && clock.Err() != nil {
		return nil, err // Redis did not answer: nothing is known, nothing written
	}
	// The fast path decides by the clock read now; the script reads its
	// own (Redis's TIME on the account's node) unless tests pin it.
	scriptNow, now := nowMS, nowMS
	if clock != nil {
		now = clock.Val().UnixMilli()
	}
	lo := now - p.Window.Milliseconds()

	// Which accounts may take the fast path.
	results := make([]Result, len(batches))
	fast := make([]*fastAccount, len(batches))
	var slow []int
	for i, b := range batches {
		f, ok := s.fastPlan(b, state[i], known[i], card[i], stats[i], p, now, lo, statsLo)
		if ok {
			fast[i] = f
		} else {
			slow = append(slow, i)
		}
	}

	// Round trip 2: the fast accounts' writes, and the script for the rest,
	// in one pipeline.
	queueFast := func(pipe redis.Pipeliner) {
		for i, f := range fast {
			if f != nil {
				f.queue(ctx, pipe, s, batches[i].Account)
			}
		}
		if extra != nil {
			extra(pipe)
		}
	}
	if len(slow) > 0 {
		sb := make([]Batch, len(slow))
		for j, i := range slow {
			sb[j] = batches[i]
		}
		res, err := s.scriptIngest(ctx, sb, p, scriptNow, lo, queueFast)
		if err != nil {
			return nil, err
		}
		for j, i := range slow {
			results[i] = res[j]
		}
	} else {
		pipe := s.rdb.Pipeline()
		queueFast(pipe)
		_, _ = pipe.Exec(ctx) // errors are per command
	}

	// Round trip 3, rare: the script for fast accounts that need it.
	var again []int
	for i, f := range fast {
		if f == nil {
			continue
		}
		r, needScript := f.result(batches[i])
		results[i] = r
		if needScript {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		sb := make([]Batch, len(again))
		for j, i := range again {
			sb[j] = batches[i]
		}
		res, err := s.scriptIngest(ctx, sb, p, scriptNow, lo, nil)
		if err != nil {
			return nil, err
		}
		for j, i := range again {
			r := res[j]
			if r.Err == nil {
				r.Outcomes = results[i].Outcomes // the script saw them counted already
			}
			results[i] = r
		}
	}
	return results, nil
}

// fastFields are the state fields the fast path reads.
var fastFields = []string{"created", "aup", "report", "floor", "smp", "wb", "we", "ob"}

// countingMembers are the window members of a batch's counting events.
func countingMembers(items []Item) []any {
	var out []any
	for _, it := range items {
		if it.Counting {
			out = append(out, member(it.ID))
		}
	}
	return out
}

// fastAccount is one account's fast path: what to add, and its commands.
type fastAccount struct {
	base, wlo      int64
	floor          string // as read, to see a reinstatement that came in between
	outcomes       []Outcome
	adds           []redis.Z
	cap, threshold int
	aup            bool
	statsSet       []any // field, value pairs of the statistics hash
	statsTTL       time.Duration
	zadd           *redis.IntCmd
	count          *redis.IntCmd
	floor2         *redis.StringCmd
}

// fastPlan decides whether an account's batch can take the fast path, and
// with which outcomes and additions.
func (s *Store) fastPlan(b Batch, st *redis.SliceCmd, known *redis.Cmd, card *redis.IntCmd, stats *redis.SliceCmd, p IngestParams, now, lo, statsLo int64) (*fastAccount, bool) {
	v, err := st.Result()
	if err != nil || len(v) != len(fastFields) {
		return nil, false
	}
	created, aup, report, floorS, smp, wb, we, ob := str(v[0]), str(v[1]), str(v[2]), str(v[3]), str(v[4]), str(v[5]), str(v[6]), str(v[7])
	_ = created
	if wb == "" || report != "" || ob != "" {
		return nil, false // a new or v1 window, a reported crossing in force, events waiting
	}
	baseH, err1 := strconv.ParseInt(wb, 10, 64)
	weH, err2 := strconv.ParseInt(we, 10, 64)
	floor, _ := strconv.ParseInt(floorS, 10, 64)
	if err1 != nil || err2 != nil {
		return nil, false
	}
	base := baseH * hourMS
	// a base about to be rebased (the script rebases after rebaseAfter;
	// the fast path keeps an hour away from that)
	if now-base > rebaseAfter(p.Window, p.Skew)-hourMS {
		return nil, false
	}
	var knownVals []any
	if known != nil {
		if knownVals, err = known.Slice(); err != nil {
			return nil, false
		}
	}
	wlo := max(lo, floor)
	f := &fastAccount{base: base, wlo: wlo, floor: floorS, cap: b.Cap, threshold: b.Threshold, aup: aup != "",
		outcomes: make([]Outcome, len(b.Items))}
	seen := map[string]bool{}
	var maxt int64
	mayChangeSamples := false
	j := 0
	for i, it := range b.Items {
		if !it.Counting {
			f.outcomes[i] = StatsOnly
			if ms(it.Time) <= statsLo {
				f.outcomes[i] = Late
			}
			continue
		}
		m := member(it.ID)
		t := ms(it.Time)
		switch {
		case t <= wlo:
			f.outcomes[i] = Late
		case knownVals[j] != nil || seen[m]:
			f.outcomes[i] = Duplicate
		default:
			seen[m] = true
			f.outcomes[i] = Counted
			f.adds = append(f.adds, redis.Z{Score: float64((t-base)*16 + int64(it.Kind)), Member: m})
			maxt = max(maxt, t)
			if it.Seq != 0 && aup == "" {
				mayChangeSamples = true
			}
		}
		j++
	}
	// A crossing or the cap may only be reached in the script, which
	// decides them atomically with everything they write. The window's
	// size (stale members included) bounds the count from above; the fast
	// path keeps to the lower half of the threshold, so that batches in
	// flight at once for one account cannot carry it past the threshold
	// unseen (unless more than half the threshold arrives for it at once,
	// when the crossing is decided a little late: once, with the count it
	// then has). A suspended account only has its cap to keep.
	if card != nil && len(f.adds) > 0 {
		n, err := card.Result()
		limit := b.Threshold / 2
		if f.aup {
			limit = b.Cap
		}
		if err != nil || int(n)+len(f.adds) > limit {
			return nil, false
		}
	}
	// The window's expiry must already cover the new events.
	if maxt > 0 && (maxt+p.Window.Milliseconds()+p.Skew.Milliseconds()+hourMS-1)/hourMS > weH {
		return nil, false
	}
	// Samples that may still change (fewer than three, or two of one
	// message) are the script's.
	if stats != nil && !f.planStats(b.Items, stats, statsLo, now) {
		return nil, false
	}
	if mayChangeSamples && !samplesSettled(smp) {
		return nil, false
	}
	return f, true
}

// planStats computes the statistics buckets' new values, as the script
// does: "<hour>:<n>" per (kind, hour of day), an older hour than the slot
// holds being too late to count, and the hash's expiry hour in "_e".
func (f *fastAccount) planStats(items []Item, cmd *redis.SliceCmd, statsLo, now int64) bool {
	cur, err := cmd.Result()
	su := statsOf(items, statsLo)
	if err != nil || len(cur) != len(su)+1 {
		return false
	}
	for k, u := range su {
		h, n := int64(0), 0
		if hs, ns, ok := strings.Cut(str(cur[k]), ":"); ok {
			h, _ = strconv.ParseInt(hs, 10, 64)
			n, _ = strconv.Atoi(ns)
		}
		switch {
		case u.hour > h:
			f.statsSet = append(f.statsSet, u.field, strconv.FormatInt(u.hour, 10)+":"+strconv.Itoa(u.n))
		case u.hour == h:
			f.statsSet = append(f.statsSet, u.field, strconv.FormatInt(h, 10)+":"+strconv.Itoa(n+u.n))
		}
	}
	clock := now
	if clock == 0 {
		clock = time.Now().UnixMilli()
	}
	e, _ := strconv.ParseInt(str(cur[len(su)]), 10, 64)
	if se := clock/hourMS + 26; se > e {
		f.statsSet = append(f.statsSet, "_e", strconv.FormatInt(se, 10))
		f.statsTTL = time.Duration(se*hourMS-clock) * time.Millisecond
	}
	return true
}

// samplesSettled reports whether the packed samples are three different
// messages, which no new event replaces.
func samplesSettled(smp string) bool {
	if len(smp) != 42 {
		return false
	}
	a, b, c := smp[4:8], smp[18:22], smp[32:36]
	return a != b && b != c && a != c
}

// queue adds the fast path's commands to pipe.
func (f *fastAccount) queue(ctx context.Context, pipe redis.Pipeliner, s *Store, account string) {
	win := s.key(account, sufWindow)
	lo := strconv.FormatInt((f.wlo-f.base)*16+15, 10)
	if len(f.adds) > 0 {
		f.zadd = pipe.ZAddNX(ctx, win, f.adds...)
		pipe.ZRemRangeByScore(ctx, win, "-inf", lo)
	}
	// counted after the writes, exactly: a batch of another process may
	// have added meanwhile, and the threshold must not be passed unseen
	f.count = pipe.ZCount(ctx, win, "("+lo, "+inf")
	if len(f.statsSet) > 0 {
		// read and written a round trip apart: a concurrent batch's
		// increment of the same bucket may be lost (the buckets are
		// approximate and decide nothing)
		pipe.HSet(ctx, s.key(account, sufStats), f.statsSet...)
		if f.statsTTL > 0 {
			pipe.PExpire(ctx, s.key(account, sufStats), f.statsTTL)
		}
	}
	f.floor2 = pipe.HGet(ctx, s.key(account, sufState), "floor")
}

// result reads the fast path's replies; needScript says that the script
// must look at the account now: a reinstatement came in between the two
// round trips (the script trims what it no longer counts), or, against
// the odds, a concurrent batch took the count past the threshold or cap.
func (f *fastAccount) result(b Batch) (Result, bool) {
	if f.zadd != nil && f.zadd.Err() != nil {
		return Result{Err: classify(f.zadd.Err())}, false
	}
	count, err := f.count.Result()
	if err != nil {
		return Result{Err: classify(err)}, false
	}
	if f.zadd != nil {
		// another batch added some of these ids between the round trips
		lost := len(f.adds) - int(f.zadd.Val())
		for i := len(f.outcomes) - 1; i >= 0 && lost > 0; i-- {
			if f.outcomes[i] == Counted {
				f.outcomes[i] = Duplicate
				lost--
			}
		}
	}
	r := Result{Outcomes: f.outcomes, Count: int(min(count, int64(f.cap)))}
	floor2, _ := f.floor2.Result()
	needScript := floor2 != f.floor || int(count) > f.cap || (!f.aup && int(count) > f.threshold)
	return r, needScript
}

func (s *Store) scriptIngest(ctx context.Context, batches []Batch, p IngestParams, nowMS, lo int64, extra func(redis.Pipeliner)) ([]Result, error) {
	results := make([]Result, len(batches))
	groups := s.groupBySlot(batches)
	keys := make([][]string, len(groups))
	args := make([][]any, len(groups))
	for g, idx := range groups {
		k := make([]string, 0, 6*len(idx))
		a := make([]any, 0, 5+16*len(idx))
		a = append(a, nowMS, p.Window.Milliseconds(), p.Skew.Milliseconds(), rebaseAfter(p.Window, p.Skew), len(idx))
		for _, i := range idx {
			b := batches[i]
			k = append(k, s.key(b.Account, sufState), s.key(b.Account, sufWindow), s.key(b.Account, sufStats),
				s.key(b.Account, sufHistory), s.key(b.Account, sufOutbox), s.key(b.Account, sufLegacy))
			a = append(a, b.Threshold, b.Cap, string(b.Action), p.NewID(), b.Company, b.Account)
			a = appendStats(a, b.Items, lo)
			nAt := len(a)
			a = append(a, 0)
			n := 0
			for _, it := range b.Items {
				if !it.Counting {
					continue
				}
				ref := ""
				if it.Seq != 0 {
					ref = fingerprint4(it.Fingerprint) + strconv.FormatUint(it.Seq, 10)
				}
				a = append(a, member(it.ID), ms(it.Time), int(it.Kind), ref)
				n++
			}
			a[nAt] = n
		}
		keys[g], args[g] = k, a
	}
	cmds, err := s.evalAll(ctx, ingestScript, keys, args, extra)
	if err != nil {
		return nil, err
	}
	for g, c := range cmds {
		vals, err := c.Slice()
		if err == nil && len(vals) != len(groups[g]) {
			err = Permanent(fmt.Errorf("ingest script returned %d results for %d accounts", len(vals), len(groups[g])))
		}
		for j, i := range groups[g] {
			if err != nil {
				results[i] = Result{Err: classify(err)}
				continue
			}
			results[i] = parseIngest(vals[j], batches[i].Items, lo)
		}
	}
	return results, nil
}

// maxAccountsPerCall bounds the accounts of one script call, so that one
// call stays short (Redis runs one script at a time).
const maxAccountsPerCall = 64

// groupBySlot splits batches into script calls: on a Redis Cluster the
// accounts of one call must share a hash slot; elsewhere any accounts go
// together, up to maxAccountsPerCall.
func (s *Store) groupBySlot(batches []Batch) [][]int {
	var groups [][]int
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		bySlot := map[uint16]int{}
		for i, b := range batches {
			slot := hashSlot(b.Account)
			g, ok := bySlot[slot]
			if !ok || len(groups[g]) >= maxAccountsPerCall {
				g = len(groups)
				bySlot[slot] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], i)
		}
		return groups
	}
	for lo := 0; lo < len(batches); lo += maxAccountsPerCall {
		g := make([]int, 0, min(maxAccountsPerCall, len(batches)-lo))
		for i := lo; i < min(lo+maxAccountsPerCall, len(batches)); i++ {
			g = append(g, i)
		}
		groups = append(groups, g)
	}
	return groups
}

// fingerprint4 shortens a fingerprint to the 4 bytes a sample keeps
// (FNV-1a): enough to tell the messages of three samples apart.
func fingerprint4(fp string) string {
	h := fnv.New32a()
	h.Write([]byte(fp))
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], h.Sum32())
	return string(b[:])
}

// appendStats adds the statistics-only items as hourly buckets, one per
// (kind, hour): field "<kind>.<hour mod 24>", hour, increment.
func appendStats(a []any, items []Item, lo int64) []any {
	buckets := statsOf(items, lo)
	a = append(a, len(buckets))
	for _, b := range buckets {
		a = append(a, b.field, b.hour, b.n)
	}
	return a
}

// statsUpdate is the increment of one statistics bucket.
type statsUpdate struct {
	field string // "<kind>.<hour mod 24>"
	hour  int64
	n     int
}

// statsOf groups a batch's statistics-only items (in the window) by kind
// and hour.
func statsOf(items []Item, lo int64) []statsUpdate {
	var out []statsUpdate
	for _, it := range items {
		if it.Counting || ms(it.Time) <= lo {
			continue
		}
		h := ms(it.Time) / hourMS
		f := strconv.Itoa(int(it.Kind)) + "." + strconv.FormatInt(h%24, 10)
		found := false
		for k := range out {
			if out[k].field == f && out[k].hour == h {
				out[k].n++
				found = true
			}
		}
		if !found {
			out = append(out, statsUpdate{f, h, 1})
		}
	}
	return out
}

const hourMS = int64(time.Hour / time.Millisecond)

func parseIngest(v any, items []Item, lo int64) Result {
	vals, _ := v.([]any)
	if len(vals) == 1 {
		if msg, ok := vals[0].(string); ok && strings.HasPrefix(msg, "!") {
			return Result{Err: classifyScript(msg[1:])}
		}
	}
	if len(vals) != 6 {
		return Result{Err: Permanent(fmt.Errorf("ingest script returned %d values", len(vals)))}
	}
	outs, _ := vals[0].(string)
	r := Result{Outcomes: make([]Outcome, len(items))}
	j := 0
	for i, it := range items {
		switch {
		case !it.Counting && ms(it.Time) <= lo:
			r.Outcomes[i] = Late
		case !it.Counting:
			r.Outcomes[i] = StatsOnly
		case j < len(outs):
			r.Outcomes[i] = Outcome(outs[j])
			j++
		}
	}
	if j != len(outs) {
		return Result{Err: Permanent(fmt.Errorf("ingest script returned %d outcomes for %d counting events", len(outs), j))}
	}
	r.Count = int(toInt(vals[1]))
	r.Capped = toInt(vals[2]) == 1
	cr, _ := vals[3].(string)
	r.Crossing = rules.Action(cr)
	r.ID, _ = vals[4].(string)
	if p, ok := vals[5].([]any); ok {
		for _, e := range p {
			if s, ok := e.(string); ok {
				r.Pending = append(r.Pending, s)
			}
		}
	}
	return r
}

func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

// PermanentError is a failure a redelivery cannot cure: a key of the wrong
// type, malformed state, a script error. The events it concerns go to the
// dead letters.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent.
func Permanent(err error) error { return &PermanentError{Err: err} }

// IsPermanent reports whether err is permanent.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// classify marks the Redis errors that a retry cannot cure as permanent:
// a key of the wrong type and errors raised by the script itself. Every
// other error (connections, timeouts, LOADING, BUSY, READONLY, OOM,
// CLUSTERDOWN, TRYAGAIN, too many clients, ...) is transient.
func classify(err error) error {
	var re redis.Error
	if !errors.As(err, &re) {
		return err
	}
	msg := re.Error()
	switch {
	case strings.HasPrefix(msg, "WRONGTYPE"),
		strings.HasPrefix(msg, "ERR") && strings.Contains(msg, "script"):
		return Permanent(err)
	}
	return err
}

// classifyScript classifies an error one account's part of the script
// caught: the transient conditions Redis reports are transient; a key of
// the wrong type, malformed state and every other error are permanent.
func classifyScript(msg string) error {
	err := fmt.Errorf("ingest: %s", msg)
	for _, p := range []string{"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "MISCONF"} {
		if strings.HasPrefix(msg, p) {
			return err
		}
	}
	return Permanent(err)
}

// decodeAUP decodes the last_aup field of an account's state.
func decodeAUP(s string) *events.AUPSuspension {
	if s == "" {
		return nil
	}
	var a events.AUPSuspension
	if json.Unmarshal([]byte(s), &a) != nil {
		return nil
	}
	return &a
}
