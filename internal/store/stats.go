package store

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"sync"

	"github.com/aupd/aupd/rules"
)

//go:embed stats.lua
var statsLua string

var statsScript = newCrossSlotScript(statsLua)

// Stats gathers the statistics-only events of ingested batches (ham, and
// kinds the policy does not count) as per-account hourly buckets, and
// writes them in one pipelined round trip when flushed. They are
// approximate and decide nothing, so they need not be written with the
// counting: gathered over a second, an account costs one script call per
// flush instead of one per batch. The events of a flush that has not
// happened are lost if the process dies; a redelivered event is added
// again.
//
// A Stats is safe for concurrent use.
type Stats struct {
	s   *Store
	max int // bound on the buckets held; beyond it new ones are dropped

	mu      sync.Mutex
	buckets map[statKey]int
	now     int64 // the clock of the latest Ingest (ms), 0: Redis's
	dropped int
}

type statKey struct {
	account string
	kind    rules.Kind
	hour    int64
}

// DefaultStatsBound is the number of buckets a Stats holds at most while
// Redis does not take them (about 100 bytes each): ten seconds of
// statistics-only events at 26,000 a second, each of an account of its own.
const DefaultStatsBound = 1 << 18

// NewStats returns an empty buffer whose flushes write to s; it holds at
// most bound buckets (0: DefaultStatsBound).
func (s *Store) NewStats(bound int) *Stats {
	if bound <= 0 {
		bound = DefaultStatsBound
	}
	return &Stats{s: s, max: bound, buckets: map[statKey]int{}}
}

// add folds the statistics-only items (those after lo, ms) of the
// batches whose results have no error into the buffer; now is the
// Ingest's clock (0: Redis's).
func (st *Stats) add(batches []Batch, results []Result, lo, now int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.now = now
	for i := range batches {
		if results[i].Err != nil {
			continue
		}
		for _, it := range batches[i].Items {
			if t := ms(it.Time); !it.Counting && t > lo {
				st.put(statKey{batches[i].Account, it.Kind, t / hourMS}, 1)
			}
		}
	}
}

// put adds n to bucket k, within the bound (st.mu held).
func (st *Stats) put(k statKey, n int) {
	if _, ok := st.buckets[k]; !ok && len(st.buckets) >= st.max {
		st.dropped += n
		return
	}
	st.buckets[k] += n
}

// Len is the number of buckets waiting to be written.
func (st *Stats) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.buckets)
}

// Dropped returns, and resets, the number of events dropped because the
// buffer was full.
func (st *Stats) Dropped() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.dropped
	st.dropped = 0
	return n
}

// Flush writes every bucket held, in one pipelined round trip. The
// buckets of a script call that failed stay held (within the bound) for
// the next flush; an account whose hash has the wrong type loses its
// buckets, and the error says so.
func (st *Stats) Flush(ctx context.Context) error {
	st.mu.Lock()
	buckets, now := st.buckets, st.now
	st.buckets = make(map[statKey]int, len(buckets))
	st.mu.Unlock()
	if len(buckets) == 0 {
		return nil
	}
	failed, err := st.s.writeStats(ctx, buckets, now)
	if len(failed) > 0 {
		st.mu.Lock()
		for k, n := range failed {
			st.put(k, n)
		}
		st.mu.Unlock()
	}
	return err
}

// writeStats writes buckets, grouped into script calls as Ingest groups
// accounts. It returns the buckets of the calls that failed.
func (s *Store) writeStats(ctx context.Context, buckets map[statKey]int, now int64) (map[statKey]int, error) {
	byAccount := make(map[string][]statKey)
	var accounts []Batch
	for k := range buckets {
		if _, ok := byAccount[k.account]; !ok {
			accounts = append(accounts, Batch{Account: k.account})
		}
		byAccount[k.account] = append(byAccount[k.account], k)
	}
	failed := map[statKey]int{}
	var first error
	lost := 0
	groups, byNode := s.groupCalls(ctx, accounts)
	for attempt := 0; len(groups) > 0; attempt++ {
		// (attempt 1 runs the accounts that moved; see Store.moved)
		keys := make([][]string, len(groups))
		args := make([][]any, len(groups))
		var field []byte
		for g, idx := range groups {
			k, rest := callKeys(idx, byNode, func(i int) string { return s.key(accounts[i].Account, sufStats) })
			a := make([]any, 0, 3+len(rest)+3*len(idx))
			a = append(a, now, len(idx), len(rest))
			a = append(a, rest...)
			for _, i := range idx {
				ks := byAccount[accounts[i].Account]
				a = append(a, len(ks))
				for _, sk := range ks {
					field = strconv.AppendInt(append(strconv.AppendInt(field[:0], int64(sk.kind), 10), '.'), sk.hour, 10)
					a = append(a, string(field), strconv.Itoa(buckets[sk]))
				}
			}
			keys[g], args[g] = k, a
		}
		cmds, err := s.evalAll(ctx, statsScript, keys, args, nil)
		if err != nil {
			return buckets, wrap("write statistics", err)
		}
		var moved []int
		for g, c := range cmds {
			res, err := c.Int64Slice()
			if err == nil && len(res) == 0 {
				err = Permanent(fmt.Errorf("statistics script returned nothing"))
			}
			if err != nil {
				first = cmp.Or(first, err)
				for _, i := range groups[g] {
					for _, sk := range byAccount[accounts[i].Account] {
						failed[sk] = buckets[sk]
					}
				}
				continue
			}
			lost += int(res[len(res)-1])
			for _, p := range res[:len(res)-1] {
				if p >= 1 && int(p) <= len(groups[g]) {
					moved = append(moved, groups[g][p-1])
				}
			}
		}
		if len(moved) > 0 && attempt == 1 {
			for _, i := range moved { // (cannot happen: these calls declare their keys)
				for _, sk := range byAccount[accounts[i].Account] {
					failed[sk] = buckets[sk]
				}
			}
			moved = nil
		}
		groups, byNode = s.moved(ctx, accounts, moved)
	}
	if first != nil {
		return failed, wrap("write statistics", first)
	}
	if lost > 0 {
		return nil, Permanent(fmt.Errorf("statistics of %d accounts not written: their statistics key is not a hash", lost))
	}
	return failed, nil
}
