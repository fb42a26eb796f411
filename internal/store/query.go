package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/rules"
)

// Tally is a count of events in a rolling window, split by direction and
// verdict.
type Tally = apitypes.Tally

func newTally() Tally {
	t := Tally{ByDirection: map[rules.Direction]int{}, ByVerdict: map[rules.Direction]map[rules.Verdict]int{}}
	for _, d := range rules.Directions {
		t.ByDirection[d] = 0
		t.ByVerdict[d] = map[rules.Verdict]int{}
		for _, v := range rules.Verdicts {
			t.ByVerdict[d][v] = 0
		}
	}
	return t
}

// Counts are an account's rolling counts.
type Counts = apitypes.Counts

// CountQuery says which window to count.
type CountQuery struct {
	Window time.Duration // the AUP window, for example 24h
	Cap    int           // the per-account cap of each set; 0: unknown
	// Floor is the last reinstatement from an AUP suspension
	// (Account.Floor): counting events at or before it no longer count.
	Floor time.Time
	Now   time.Time
}

// Counts reads an account's rolling counts, in one round trip. Events at
// or before now-window are outside the window, as in Ingest. Other is
// approximate: statistics-only events are kept as hourly buckets, whole
// hours back from now's hour, and never decide anything.
func (s *Store) Counts(ctx context.Context, address string, q CountQuery) (*Counts, error) {
	if q.Window <= 0 {
		return nil, fmt.Errorf("%w: window must be positive", ErrInvalid)
	}
	lo := ms(q.Now) - q.Window.Milliseconds()
	c := &Counts{WindowStart: q.Now.Add(-q.Window).UTC(), WindowEnd: q.Now.UTC()}
	wlo := lo
	if f := ms(q.Floor); !q.Floor.IsZero() && f > wlo {
		wlo = f
	}
	pipe := s.rdb.Pipeline()
	win := queueWindow(ctx, pipe, s.prefix, address)
	stats := pipe.HGetAll(ctx, s.key(address, sufStats))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrap("read window", err)
	}
	es, _ := win.entries()
	c.Counting = newTally()
	for _, e := range es {
		if e.t > wlo {
			addTally(&c.Counting, e.kind, 1)
		}
	}
	// When the set is full, Ingest dropped its oldest members. If every
	// member is still inside the window, so may the dropped ones have been.
	n := len(es)
	c.Counting.AtLeast = q.Cap > 0 && n >= q.Cap && c.Counting.Total == n
	c.Other = newTally()
	for _, bk := range statBuckets(stats.Val(), lo) {
		addTally(&c.Other, bk.kind, bk.n)
	}
	return c, nil
}

func addTally(t *Tally, k rules.Kind, n int) {
	if int(k)/4 >= len(rules.Directions) || int(k)%4 >= len(rules.Verdicts) {
		return
	}
	t.Total += n
	t.ByDirection[k.Direction()] += n
	t.ByVerdict[k.Direction()][k.Verdict()] += n
}

type statBucket struct {
	kind rules.Kind
	hour int64
	n    int
}

// statBuckets decodes the statistics hash, fields "<kind>.<hour>" with
// counts (and, from earlier builds, "<kind>.<hour mod 24>" with values
// "<hour>:<count>"), keeping the hours that end after lo.
func statBuckets(h map[string]string, lo int64) []statBucket {
	var out []statBucket
	for f, v := range h {
		k, hs, ok := strings.Cut(f, ".")
		if !ok {
			continue
		}
		ns := v
		if old, rest, ok := strings.Cut(v, ":"); ok {
			hs, ns = old, rest
		}
		kind, err1 := strconv.Atoi(k)
		hour, err2 := strconv.ParseInt(hs, 10, 64)
		n, err3 := strconv.Atoi(ns)
		if err1 != nil || err2 != nil || err3 != nil || (hour+1)*hourMS <= lo {
			continue
		}
		out = append(out, statBucket{rules.Kind(kind), hour, n})
	}
	return out
}

// ListQuery selects accounts. Empty fields do not filter.
type ListQuery struct {
	Company   string
	Status    rules.Status // the effective status at Now
	Suspended bool         // only accounts with a suspended service
	// Match, when set, is one more filter (for example a token's scope).
	Match  func(*Account) bool
	Cursor string // from the previous page; "" starts
	Limit  int    // at most this many accounts; 1 to 1000
	Now    time.Time
}

// Page is one page of a listing.
type Page struct {
	Accounts []*Account
	// Next is the cursor of the next page; "" when the listing is done.
	Next string
}

// MaxListLimit bounds the page size of List.
const MaxListLimit = 1000

// List pages through accounts by company, status or suspension. It scans
// the most selective index set (SSCAN) and reads every account it finds,
// filtering on the account's own state, as the indexes may be stale. As
// with SSCAN, an account present for the whole listing is returned at
// least once; one added or removed meanwhile may or may not be.
func (s *Store) List(ctx context.Context, q ListQuery) (*Page, error) {
	if q.Limit <= 0 || q.Limit > MaxListLimit {
		return nil, fmt.Errorf("%w: limit must be 1 to %d", ErrInvalid, MaxListLimit)
	}
	if q.Status != "" && !q.Status.Valid() {
		return nil, fmt.Errorf("%w: unknown status %q", ErrInvalid, q.Status)
	}
	cur, after, err := decodeCursor(q.Cursor)
	if err != nil {
		return nil, err
	}
	key := s.idxAll()
	switch {
	case q.Suspended:
		key = s.idxSuspended()
	case q.Status != "" && q.Status != rules.StatusActive:
		key = s.idxStatus(string(q.Status))
	case q.Company != "":
		key = s.idxCompany(q.Company)
	}
	match := func(a *Account) bool {
		switch {
		case !a.Exists:
			return false
		case q.Company != "" && a.Company != q.Company:
			return false
		case q.Status != "" && a.View().EffectiveStatus(q.Now) != q.Status:
			return false
		case q.Suspended && len(a.Suspensions) == 0:
			return false
		case q.Match != nil && !q.Match(a):
			return false
		}
		return true
	}
	page := &Page{Accounts: []*Account{}}
	for {
		members, next, err := s.rdb.SScan(ctx, key, cur, "", int64(max(q.Limit, 100))).Result()
		if err != nil {
			return nil, wrap("scan index", err)
		}
		// One SSCAN batch is split across pages by address, so that a
		// page ends exactly at the limit.
		slices.Sort(members)
		members = slices.Compact(members)
		if after != "" {
			i, _ := slices.BinarySearch(members, after)
			if i < len(members) && members[i] == after {
				i++
			}
			members = members[i:]
		}
		accts, err := s.accounts(ctx, members)
		if err != nil {
			return nil, err
		}
		for _, a := range accts {
			if !match(a) {
				continue
			}
			page.Accounts = append(page.Accounts, a)
			if len(page.Accounts) == q.Limit {
				if a.Address == members[len(members)-1] && next == 0 {
					return page, nil
				}
				if a.Address == members[len(members)-1] {
					page.Next = encodeCursor(next, "")
				} else {
					page.Next = encodeCursor(cur, a.Address)
				}
				return page, nil
			}
		}
		if next == 0 {
			return page, nil
		}
		cur, after = next, ""
	}
}

// accounts reads accounts in one round trip, in the order given.
func (s *Store) accounts(ctx context.Context, addrs []string) ([]*Account, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(addrs))
	for i, a := range addrs {
		cmds[i] = pipe.HGetAll(ctx, s.key(a, sufState))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("read accounts", err)
	}
	out := make([]*Account, len(addrs))
	for i, c := range cmds {
		out[i] = parseAccount(addrs[i], c.Val())
	}
	return out, nil
}

// A cursor is the SSCAN cursor of a batch and the last address returned
// from that batch, so that a page can end inside a batch.
func encodeCursor(cur uint64, after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatUint(cur, 10) + "|" + after))
}

var errCursor = fmt.Errorf("%w: bad cursor", ErrInvalid)

func decodeCursor(s string) (uint64, string, error) {
	if s == "" {
		return 0, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, "", errCursor
	}
	n, after, ok := strings.Cut(string(b), "|")
	if !ok {
		return 0, "", errCursor
	}
	cur, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0, "", errCursor
	}
	return cur, after, nil
}

// Licences counts a company's accounts as billed (Account.Licensed).
type Licences = apitypes.Licences

// CountLicences counts a company's accounts, scanning its index set and
// reading each account (the index may be stale).
func (s *Store) CountLicences(ctx context.Context, company string, now time.Time) (*Licences, error) {
	if company == "" {
		return nil, fmt.Errorf("%w: no company", ErrInvalid)
	}
	l := &Licences{Company: company, ByStatus: map[rules.Status]int{}, ByService: map[rules.Service]int{}}
	for _, st := range rules.Statuses {
		l.ByStatus[st] = 0
	}
	for _, svc := range rules.Services {
		l.ByService[svc] = 0
	}
	var cur uint64
	for {
		members, next, err := s.rdb.SScan(ctx, s.idxCompany(company), cur, "", 500).Result()
		if err != nil {
			return nil, wrap("scan company index", err)
		}
		accts, err := s.accounts(ctx, slices.Compact(slices.Sorted(slices.Values(members))))
		if err != nil {
			return nil, err
		}
		for _, a := range accts {
			if !a.Licensed(now) || a.Company != company {
				continue
			}
			l.Total++
			if a.Provisioned {
				l.Provisioned++
			} else {
				l.Unprovisioned++
			}
			l.ByStatus[a.View().EffectiveStatus(now)]++
			if len(a.Suspensions) > 0 {
				l.Suspended++
			}
			for svc := range a.Suspensions {
				l.ByService[svc]++
			}
		}
		if next == 0 {
			return l, nil
		}
		cur = next
	}
}
