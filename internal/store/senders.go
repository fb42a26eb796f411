package store

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aupd/aupd/internal/api/apitypes"
)

//go:embed senders.lua
var sendersLua string

var sendersScript = newCrossSlotScript(sendersLua)

// MaxSenders is the most senders an account's tally keeps; beyond it the
// least recently seen are dropped.
const MaxSenders = 16

// Sender is one sender of an account's counted messages.
type Sender = apitypes.Sender

// Senders gathers, per account, the senders of the events the ingest
// counted (outcome Counted or AtCap; a duplicate is not added again), and
// writes them in one pipelined round trip when flushed: one script call
// per group of accounts, and none for an account with no sender. They are
// hints for people, never decisions: a flush that has not happened when
// the process dies, or that Redis refuses, is lost and never retried, so
// that a tally may fall short but never counts a message twice (a
// redelivered event comes back as a duplicate and is not added).
//
// A Senders is safe for concurrent use.
type Senders struct {
	s   *Store
	max int // bound on the entries held; beyond it new ones are dropped

	mu      sync.Mutex
	entries map[senderKey]senderTally
	dropped int
}

type senderKey struct{ account, ip, login string }

type senderTally struct {
	n           int
	first, last int64 // seconds
}

// DefaultSendersBound is the number of entries a Senders holds at most
// between flushes (about 150 bytes each).
const DefaultSendersBound = 1 << 16

// NewSenders returns an empty buffer whose flushes write to s; it holds
// at most bound entries (0: DefaultSendersBound).
func (s *Store) NewSenders(bound int) *Senders {
	if bound <= 0 {
		bound = DefaultSendersBound
	}
	return &Senders{s: s, max: bound, entries: map[senderKey]senderTally{}}
}

// Add counts one counted message of account from the sender (ip, login)
// made at t. The login is kept in lower case. Nothing is added for a
// sender with neither.
func (st *Senders) Add(account, ip, login string, t time.Time) {
	if ip == "" && login == "" {
		return
	}
	k := senderKey{account, ip, strings.ToLower(login)}
	sec := t.Unix()
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.entries[k]
	if !ok {
		if len(st.entries) >= st.max {
			st.dropped++
			return
		}
		e = senderTally{first: sec, last: sec}
	}
	e.n++
	e.first, e.last = min(e.first, sec), max(e.last, sec)
	st.entries[k] = e
}

// Len is the number of entries waiting to be written.
func (st *Senders) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.entries)
}

// Dropped returns, and resets, the number of messages not tallied: the
// buffer was full, or Redis did not take a flush.
func (st *Senders) Dropped() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.dropped
	st.dropped = 0
	return n
}

// Flush writes every entry held, in one pipelined round trip; keep is how
// long a sender stays after it was last seen (the window plus the future
// skew), now the clock that decides it (zero: Redis's, or the store's
// pinned one). What Redis does not take is dropped (Dropped counts it),
// never held for another try.
func (st *Senders) Flush(ctx context.Context, keep time.Duration, now time.Time) error {
	var nowMS int64
	if !now.IsZero() {
		nowMS = ms(now)
	} else {
		nowMS = st.s.scriptNow()
	}
	st.mu.Lock()
	entries := st.entries
	st.entries = make(map[senderKey]senderTally, len(entries))
	st.mu.Unlock()
	if len(entries) == 0 {
		return nil
	}
	lost, err := st.s.writeSenders(ctx, entries, nowMS, keep)
	if lost > 0 {
		st.mu.Lock()
		st.dropped += lost
		st.mu.Unlock()
	}
	return err
}

// writeSenders writes entries, grouped into script calls as Ingest groups
// accounts, at most MaxSenders per account (the most recent). It returns
// how many messages were not tallied.
func (s *Store) writeSenders(ctx context.Context, entries map[senderKey]senderTally, now int64, keep time.Duration) (int, error) {
	byAccount := make(map[string][]senderKey)
	var accounts []Batch
	for k := range entries {
		if _, ok := byAccount[k.account]; !ok {
			accounts = append(accounts, Batch{Account: k.account})
		}
		byAccount[k.account] = append(byAccount[k.account], k)
	}
	lost := 0
	for acct, ks := range byAccount {
		if len(ks) > MaxSenders {
			slices.SortFunc(ks, func(a, b senderKey) int { return cmp.Compare(entries[b].last, entries[a].last) })
			for _, k := range ks[MaxSenders:] {
				lost += entries[k].n
			}
			byAccount[acct] = ks[:MaxSenders]
		}
	}
	messages := func(idx ...int) int {
		n := 0
		for _, i := range idx {
			for _, sk := range byAccount[accounts[i].Account] {
				n += entries[sk].n
			}
		}
		return n
	}
	var first error
	failed := 0
	groups, byNode := s.groupCalls(ctx, accounts)
	for attempt := 0; len(groups) > 0; attempt++ {
		// (attempt 1 runs the accounts that moved; see Store.moved)
		keys := make([][]string, len(groups))
		args := make([][]any, len(groups))
		for g, idx := range groups {
			k, rest := callKeys(idx, byNode, func(i int) string { return s.key(accounts[i].Account, sufSenders) })
			a := make([]any, 0, 5+len(rest)+5*len(idx))
			a = append(a, now, keep.Milliseconds(), MaxSenders, len(idx), len(rest))
			a = append(a, rest...)
			for _, i := range idx {
				ks := byAccount[accounts[i].Account]
				a = append(a, len(ks))
				for _, sk := range ks {
					e := entries[sk]
					a = append(a, sk.ip+"\t"+sk.login, e.n, e.first, e.last)
				}
			}
			keys[g], args[g] = k, a
		}
		cmds, err := s.evalAll(ctx, sendersScript, keys, args, nil)
		if err != nil {
			for _, idx := range groups {
				lost += messages(idx...)
			}
			return lost, wrap("write sender tallies", err)
		}
		var moved []int
		for g, c := range cmds {
			pos, err := c.Int64Slice()
			if err != nil {
				first = cmp.Or(first, err)
				lost += messages(groups[g]...)
				continue
			}
			for _, p := range pos {
				switch {
				case p <= -1 && int(-p) <= len(groups[g]) && attempt == 0:
					moved = append(moved, groups[g][-p-1])
				case p <= -1 && int(-p) <= len(groups[g]):
					lost += messages(groups[g][-p-1]) // (cannot happen: these calls declare their keys)
				case p >= 1 && int(p) <= len(groups[g]):
					failed++
					lost += messages(groups[g][p-1])
				}
			}
		}
		groups, byNode = s.moved(ctx, accounts, moved)
	}
	if first != nil {
		return lost, wrap("write sender tallies", first)
	}
	if failed > 0 {
		return lost, Permanent(fmt.Errorf("sender tallies of %d accounts not written: their key is not a hash of tallies", failed))
	}
	return lost, nil
}

// Senders returns the senders of an account's counted messages last seen
// after since (the window's start, or the last reinstatement if later),
// the most recent first. The counts are at least what they say: see
// Senders (the type).
func (s *Store) Senders(ctx context.Context, account string, since time.Time) ([]Sender, error) {
	h, err := s.rdb.HGetAll(ctx, s.key(account, sufSenders)).Result()
	if err != nil {
		return nil, wrap("read sender tally", err)
	}
	out := make([]Sender, 0, len(h))
	for f, v := range h {
		ip, login, _ := strings.Cut(f, "\t")
		parts := strings.Split(v, ":")
		if len(parts) != 3 {
			continue
		}
		n, err1 := strconv.Atoi(parts[0])
		first, err2 := strconv.ParseInt(parts[1], 10, 64)
		last, err3 := strconv.ParseInt(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || last <= since.Unix() {
			continue
		}
		out = append(out, Sender{IP: ip, Login: login, Count: n, First: time.Unix(first, 0).UTC(), Last: time.Unix(last, 0).UTC()})
	}
	slices.SortFunc(out, func(a, b Sender) int {
		return cmp.Or(b.Last.Compare(a.Last), cmp.Compare(b.Count, a.Count), cmp.Compare(a.IP, b.IP), cmp.Compare(a.Login, b.Login))
	})
	return out, nil
}
