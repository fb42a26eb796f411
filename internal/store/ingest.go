package store

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/replsync"
	"github.com/aupd/aupd/rules"
)

//go:embed ingest.lua
var ingestLua string

// The ingest script records crossings with crossing.lua.
var ingestScript = newLibrary("aupd_ingest", crossingLua, ingestLua)

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
	// Ham: outbound ham for the spam-rate rule (Batch.SpamRate), kept
	// by id in the account's ham set; it is also a statistics-only event.
	Ham bool
	// Fingerprint of the message content (events.Verdict.Fingerprint) and
	// stream sequence of the event, offered as an evidence sample. Seq 0:
	// no sample.
	Fingerprint uint32
	Seq         uint64
}

// Batch is the events of one account in one batch.
type Batch struct {
	Account   string
	Company   string
	Threshold int
	Cap       int          // at most this many events kept; > Threshold
	Action    rules.Action // on crossing: suspend or report
	// SpamRate is the account's spam-rate rule (off: the zero value);
	// HamCap the most ham it keeps (rules.SpamRate.HamCap of the
	// threshold), and OutboundOnly says that only outbound events count,
	// so that the count is the rule's spam.
	SpamRate     rules.SpamRate
	HamCap       int
	OutboundOnly bool
	Items        []Item
}

// Result is the outcome of one account's batch.
type Result struct {
	Outcomes []Outcome // one per item
	Count    int       // counting events in the window (at most Cap); -1 for a batch of statistics only, which does not read the window
	Capped   bool      // this batch dropped events at the cap: the real count is higher than Count
	Crossing rules.Action
	Rule     string // the rule the crossing crossed: spam_count or spam_rate
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
	Now time.Time
	// NewID makes the id of a suspension or report a crossing records;
	// nil: ids like NewID's, drawn once per call.
	NewID func() string
	// Near are hints for the near-threshold index (account -> time in ms),
	// written in the same round trip.
	Near map[string]int64
	// Stats gathers the statistics-only events of the accounts that did
	// not fail, to be written by its Flush; nil: Ingest writes them before
	// it returns, in a second round trip.
	Stats *Stats
}

// rebaseAfter bounds how old a window's score base may grow: scores are
// (time - base) * 16 + kind and stay within 32 bits (compact encoding)
// while |time - base| < 2^27 ms, about 37 hours.
func rebaseAfter(window, skew time.Duration) int64 {
	const span = int64(1) << 27
	r := span - window.Milliseconds() - skew.Milliseconds() - time.Hour.Milliseconds()
	return max(r, time.Hour.Milliseconds())
}

// Ingest applies every account's batch in one pipelined round trip. Each
// account is atomic and costs a fixed number of commands whatever its
// number of events; accounts are grouped into script calls (many per call
// on a standalone Redis, one slot per call on a Cluster) so that the
// per-call overhead is paid per group, not per account. An account with
// statistics-only events alone costs no command: its events go to
// p.Stats. Results are in the order of batches; a failed account sets its
// result's Err.
func (s *Store) Ingest(ctx context.Context, batches []Batch, p IngestParams) ([]Result, error) {
	if len(batches) == 0 && len(p.Near) == 0 {
		return []Result{}, nil
	}
	var nowMS int64
	if !p.Now.IsZero() {
		nowMS = ms(p.Now)
	} else if s.pinned {
		nowMS = ms(s.now())
	}
	clock := nowMS
	if clock == 0 {
		clock = time.Now().UnixMilli() // only for which statistics-only events are late
	}
	lo := clock - p.Window.Milliseconds()
	// Accounts with counting events go to the script, and so does an
	// empty batch, which reads the count; the others have statistics
	// only, which are gathered in p.Stats.
	toScript := func(b *Batch) bool {
		return len(b.Items) == 0 || slices.ContainsFunc(b.Items, func(it Item) bool { return it.Counting || it.Ham })
	}
	n := 0 // how many go to the script
	for i := range batches {
		if toScript(&batches[i]) {
			n++
		}
	}
	var results []Result
	if n == len(batches) {
		// The usual batch: every account goes to the script, with no copy.
		res, err := s.ingestCounting(ctx, batches, p, nowMS, lo)
		if err != nil {
			return nil, err
		}
		results = res
	} else {
		results = make([]Result, len(batches))
		counting := make([]Batch, 0, n)
		at := make([]int, 0, n) // index in batches of each of counting
		for i := range batches {
			if toScript(&batches[i]) {
				counting = append(counting, batches[i])
				at = append(at, i)
				continue
			}
			results[i] = Result{Count: -1}
			results[i].Outcomes, _ = outcomesOf("", batches[i].Items, lo)
		}
		if len(counting) > 0 || len(p.Near) > 0 {
			res, err := s.ingestCounting(ctx, counting, p, nowMS, lo)
			if err != nil {
				return nil, err
			}
			for j, i := range at {
				results[i] = res[j]
			}
		}
	}
	stats := p.Stats
	if stats == nil {
		stats = s.NewStats(0)
	}
	stats.add(batches, results, lo, nowMS)
	if p.Stats == nil {
		if err := stats.Flush(ctx); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// packBufs keeps ingestCounting's packed-batch buffers between calls, up
// to maxPooledPack bytes each (a batch of 500 events packs into about 20
// KB).
var packBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledPack = 1 << 20

// ingestCounting runs the script for batches, which all have counting
// events, and writes p.Near in the same round trip. On a Redis Cluster an
// account whose slot has moved since the slot map was read fails in the
// call of its old master (see ingest.lua, run) and runs again in a call
// of its own slot, which go-redis redirects.
func (s *Store) ingestCounting(ctx context.Context, batches []Batch, p IngestParams, nowMS, lo int64) ([]Result, error) {
	results := make([]Result, len(batches))
	groups, byNode := s.groupCalls(ctx, batches)
	var extra func(redis.Pipeliner)
	if len(p.Near) > 0 {
		extra = func(pipe redis.Pipeliner) { s.writeNear(ctx, pipe, p.Near, lo) }
	}
	if len(groups) == 0 {
		// hints only
		pipe := s.rdb.Pipeline()
		extra(pipe)
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, wrap("write near-threshold hints", err)
		}
		return results, nil
	}
	if err := s.runIngest(ctx, batches, groups, byNode, p, nowMS, lo, extra, results); err != nil {
		return nil, err
	}
	if byNode {
		var moved []int
		for i := range results {
			if errors.Is(results[i].Err, errMoved) {
				moved = append(moved, i)
			}
		}
		if groups, _ := s.moved(ctx, batches, moved); len(groups) > 0 {
			if err := s.runIngest(ctx, batches, groups, false, p, nowMS, lo, nil, results); err != nil {
				return nil, err
			}
		}
	}
	s.await(ctx, batches, results)
	return results, nil
}

// runIngest makes one script call per group of batches (indexes), in one
// pipelined round trip with extra, and sets their results. A call byNode
// declares its first account's keys, which route it, and passes the
// others' after the batches.
func (s *Store) runIngest(ctx context.Context, batches []Batch, groups [][]int, byNode bool, p IngestParams, nowMS, lo int64, extra func(redis.Pipeliner), results []Result) error {
	ids := newIDSource(time.Now())
	keys := make([][]string, len(groups))
	args := make([][]any, len(groups))
	// Every account's packed batch goes into one buffer, passed as
	// subslices (go-redis writes []byte arguments as they are): no copy
	// per account. The buffer only grows before the slicing starts, and
	// it is kept for the next call once the pipeline has been written and
	// answered (nothing of it is referenced after evalAll returns).
	bp := packBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= maxPooledPack {
			*bp = buf[:0]
			packBufs.Put(bp)
		}
	}()
	ends := make([]int, len(batches))
	for _, idx := range groups {
		for _, i := range idx {
			buf = packBatch(buf, &batches[i], ids, p.NewID)
			ends[i] = len(buf)
		}
	}
	start := 0
	for g, idx := range groups {
		// The state keys are declared (the first only, on a call of many
		// slots), the windows not: a window is often inline, its key
		// absent, and a slot being migrated refuses with TRYAGAIN a call
		// that declares a key that is there and one that is not.
		declared := len(idx)
		if byNode {
			declared = 1
		}
		k := make([]string, 0, declared)
		a := make([]any, 0, 5+2*len(idx)+len(idx)-declared)
		a = append(a, nowMS, p.Window.Milliseconds(), p.Skew.Milliseconds(), rebaseAfter(p.Window, p.Skew), len(idx))
		for _, i := range idx {
			a = append(a, buf[start:ends[i]:ends[i]])
			start = ends[i]
		}
		for _, i := range idx {
			a = append(a, s.key(batches[i].Account, sufWindow))
		}
		for j, i := range idx {
			if st := s.key(batches[i].Account, sufState); j < declared {
				k = append(k, st)
			} else {
				a = append(a, st)
			}
		}
		keys[g], args[g] = k, a
	}
	cmds, err := s.evalAll(ctx, ingestScript, keys, args, extra)
	if err != nil {
		return err
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
	return nil
}

// await holds back the results until replicas hold the writes behind them
// (redis.wait_replicas): an account whose master did not confirm in time
// fails with a transient error, and its verdicts are redelivered, counted
// once and awaited again. The accounts of the masters that confirmed are
// done: one shard's failed wait holds back that shard alone.
func (s *Store) await(ctx context.Context, batches []Batch, results []Result) {
	if s.barrier == nil {
		return
	}
	accounts := make([]string, 0, len(results))
	for i, r := range results {
		if r.Err == nil {
			accounts = append(accounts, batches[i].Account)
		}
	}
	err := s.barrier.Wait(ctx, accounts...)
	if err == nil {
		return
	}
	var we *replsync.WaitError
	perTag := errors.As(err, &we)
	k := 0 // the index in accounts of results[i]
	for i := range results {
		if results[i].Err != nil {
			continue
		}
		aerr := err
		if perTag {
			aerr = we.For(k)
		}
		k++
		if aerr != nil {
			results[i] = Result{Err: aerr}
		}
	}
}

// maxAccountsPerCall bounds the accounts of one script call, so that one
// call stays short (Redis runs one script at a time).
const maxAccountsPerCall = 64

// groupCalls splits batches into script calls of up to
// maxAccountsPerCall accounts. On a Redis Cluster the accounts of a call
// share a master (byNode), as go-redis's slot map says: one call per
// master per batch or so, where a call per hash slot would be nearly a
// call per account. An account whose master is not known goes alone.
func (s *Store) groupCalls(ctx context.Context, batches []Batch) (groups [][]int, byNode bool) {
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return chunks(len(batches)), false
	}
	byMaster := map[*redis.Client]int{}
	for i := range batches {
		m, err := cc.MasterForKey(ctx, s.key(batches[i].Account, sufState))
		if err != nil {
			groups = append(groups, []int{i}) // it fails on its own
			continue
		}
		g, ok := byMaster[m]
		if !ok || len(groups[g]) >= maxAccountsPerCall {
			g = len(groups)
			byMaster[m] = g
			groups = append(groups, make([]int, 0, min(maxAccountsPerCall, len(batches)-i)))
		}
		groups[g] = append(groups[g], i)
	}
	return groups, true
}

// moved returns the script calls that run again the accounts (indexes
// into batches) that a call of many slots found moved: calls of their own
// slots, which declare their keys, so that go-redis redirects them, after
// the slot map has been read again.
func (s *Store) moved(ctx context.Context, batches []Batch, moved []int) (groups [][]int, byNode bool) {
	if len(moved) == 0 {
		return nil, false
	}
	s.rdb.(*redis.ClusterClient).ReloadState(ctx)
	return slotGroups(batches, moved), false
}

// callKeys splits the keys of a call of the accounts idx (keyOf gives
// each one's): all are declared, or, for a call of many slots (byNode),
// the first is, to route the call, and the others go in its arguments.
func callKeys(idx []int, byNode bool, keyOf func(int) string) (declared []string, rest []any) {
	if !byNode {
		declared = make([]string, len(idx))
		for j, i := range idx {
			declared[j] = keyOf(i)
		}
		return declared, nil
	}
	rest = make([]any, len(idx)-1)
	for j, i := range idx[1:] {
		rest[j] = keyOf(i)
	}
	return []string{keyOf(idx[0])}, rest
}

// slotGroups groups the batches at indexes idx by hash slot, up to
// maxAccountsPerCall a group.
func slotGroups(batches []Batch, idx []int) [][]int {
	var groups [][]int
	bySlot := map[uint16]int{}
	for _, i := range idx {
		slot := hashSlot(batches[i].Account)
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

// chunks groups 0..n-1 in order, maxAccountsPerCall a group.
func chunks(n int) [][]int {
	var groups [][]int
	for lo := 0; lo < n; lo += maxAccountsPerCall {
		g := make([]int, 0, min(maxAccountsPerCall, n-lo))
		for i := lo; i < min(lo+maxAccountsPerCall, n); i++ {
			g = append(g, i)
		}
		groups = append(groups, g)
	}
	return groups
}

// packBatch appends an account's batch in the script's packed form (see
// ingest.lua): a fixed header, 25 bytes per counting event, then the
// strings only a crossing reads.
func packBatch(buf []byte, b *Batch, ids *idSource, newID func() string) []byte {
	be := binary.BigEndian
	action := byte(1)
	if b.Action != rules.ActionSuspend {
		action = 2
	}
	if b.SpamRate.On() {
		action += 4 // a rate section follows the events
	}
	n, ham := 0, 0
	for _, it := range b.Items {
		if it.Counting {
			n++
		}
		if it.Ham {
			ham++
		}
	}
	buf = be.AppendUint32(buf, uint32(b.Threshold))
	buf = be.AppendUint32(buf, uint32(b.Cap))
	buf = append(buf, action)
	buf = be.AppendUint32(buf, uint32(n))
	for _, it := range b.Items {
		if !it.Counting {
			continue
		}
		buf = appendMember(buf, it.ID)
		buf = be.AppendUint64(buf, uint64(ms(it.Time)))
		buf = append(buf, byte(it.Kind))
		var seq [8]byte
		be.PutUint64(seq[:], it.Seq&(1<<48-1))
		buf = append(buf, seq[2:]...)
		var fp uint32 // the sample's fingerprint, enough to tell three messages apart
		if it.Seq != 0 {
			fp = it.Fingerprint
		}
		buf = be.AppendUint32(buf, fp)
	}
	if b.SpamRate.On() {
		buf = packRate(buf, b, ham)
	}
	if newID != nil {
		id := newID()
		buf = be.AppendUint16(buf, uint16(len(id)))
		buf = append(buf, id...)
	} else {
		buf = be.AppendUint16(buf, 26)
		buf = ids.next(buf)
	}
	for _, str := range [...]string{b.Company, b.Account} {
		buf = be.AppendUint16(buf, uint16(len(str)))
		buf = append(buf, str...)
	}
	return buf
}

// packRate appends the batch's spam-rate section: the rule, the ham cap,
// whether only outbound events count, and the ham events (ham of them).
func packRate(buf []byte, b *Batch, ham int) []byte {
	be := binary.BigEndian
	buf = be.AppendUint32(buf, uint32(b.SpamRate.PPM))
	buf = be.AppendUint32(buf, uint32(b.SpamRate.MinSpam))
	buf = be.AppendUint32(buf, uint32(b.HamCap))
	outbound := byte(0)
	if b.OutboundOnly {
		outbound = 1
	}
	buf = append(buf, outbound)
	buf = be.AppendUint32(buf, uint32(ham))
	for _, it := range b.Items {
		if it.Ham {
			buf = appendMember(buf, it.ID)
			buf = be.AppendUint64(buf, uint64(ms(it.Time)))
		}
	}
	return buf
}

const hourMS = int64(time.Hour / time.Millisecond)

func parseIngest(v any, items []Item, lo int64) Result {
	if n, ok := v.(int64); ok {
		// nothing to publish, at most one counting event:
		// ((count + 1) * 2 + capped) * 8 + outcome
		code := n % 8
		if n < 0 || code > 4 {
			return Result{Err: Permanent(fmt.Errorf("ingest script returned %d", n))}
		}
		outs := ""
		if code > 0 {
			outs = "cdlk"[code-1 : code]
		}
		r := Result{Count: int(n/16) - 1, Capped: n/8%2 == 1}
		r.Outcomes, r.Err = outcomesOf(outs, items, lo)
		return r
	}
	if packed, ok := v.(string); ok {
		// nothing to publish: count i4, capped B, outcomes
		if len(packed) < 5 {
			return Result{Err: Permanent(fmt.Errorf("ingest script returned %d bytes", len(packed)))}
		}
		r := Result{Count: int(int32(binary.BigEndian.Uint32([]byte(packed[:4])))), Capped: packed[4] == 1}
		r.Outcomes, r.Err = outcomesOf(packed[5:], items, lo)
		return r
	}
	vals, _ := v.([]any)
	if len(vals) == 1 {
		if msg, ok := vals[0].(string); ok && strings.HasPrefix(msg, "!") {
			return Result{Err: classifyScript(msg[1:])}
		}
	}
	if len(vals) != 3 && len(vals) != 7 {
		return Result{Err: Permanent(fmt.Errorf("ingest script returned %d values", len(vals)))}
	}
	outs, _ := vals[0].(string)
	var r Result
	if r.Outcomes, r.Err = outcomesOf(outs, items, lo); r.Err != nil {
		return Result{Err: r.Err}
	}
	r.Count = int(toInt(vals[1]))
	r.Capped = toInt(vals[2]) == 1
	if len(vals) == 3 {
		return r // nothing to publish
	}
	cr, _ := vals[3].(string)
	r.Crossing = rules.Action(cr)
	r.ID, _ = vals[4].(string)
	r.Rule, _ = vals[6].(string)
	if p, ok := vals[5].([]any); ok {
		for _, e := range p {
			if s, ok := e.(string); ok {
				r.Pending = append(r.Pending, s)
			}
		}
	}
	return r
}

// outcomesOf is the outcome of each item: the script's letters for the
// counting ones, in order, and late or statistics for the others.
func outcomesOf(outs string, items []Item, lo int64) ([]Outcome, error) {
	o := make([]Outcome, len(items))
	j := 0
	for i, it := range items {
		switch {
		case !it.Counting && ms(it.Time) <= lo:
			o[i] = Late
		case !it.Counting:
			o[i] = StatsOnly
		default:
			if j < len(outs) {
				o[i] = Outcome(outs[j])
			}
			j++
		}
	}
	if j != len(outs) {
		return nil, Permanent(fmt.Errorf("ingest script returned %d outcomes for %d counting events", len(outs), j))
	}
	return o, nil
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

// Permanent says so to those that must not import the store (the
// verdict consumer).
func (e *PermanentError) Permanent() bool { return true }

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

// errMoved reports an account a Cluster node refused because of where
// its slot is, before it wrote anything: it is run again in a call of its
// own slot, which go-redis routes, redirects and retries (transient).
var errMoved = errors.New("slot moved")

// clusterRefused reports whether a script's error is a Cluster node's
// refusal of a key it does not serve now: the slot moved or is moving
// ("non local key"; from Redis 7.4 also "during rehashing of the slot"),
// is served by no node, or the cluster is down. The scripts that take
// many slots a call (stats.lua, senders.lua) tell the same errors.
func clusterRefused(msg string) bool {
	for _, s := range clusterRefusals {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

var clusterRefusals = []string{"non local key", "rehashing of the slot", "slot not served", "cluster is down"}

// classifyScript classifies an error one account's part of the script
// caught: the transient conditions Redis reports are transient; a key of
// the wrong type, malformed state and every other error are permanent.
func classifyScript(msg string) error {
	err := fmt.Errorf("ingest: %s", msg)
	if clusterRefused(msg) {
		return fmt.Errorf("%w: %s", errMoved, msg)
	}
	for _, p := range []string{"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "MISCONF"} {
		if strings.HasPrefix(msg, p) {
			return err
		}
	}
	return Permanent(err)
}
