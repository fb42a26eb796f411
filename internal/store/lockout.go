package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// LockoutResult says what Lockout did.
type LockoutResult struct {
	// Op is the change of a known account (nil for a transient lockout).
	Op *Op
	// Transient is set when the address has no record: its lockout is
	// kept only until it ends, and no account is created.
	Transient bool
}

// errNoRecord makes Lockout take the transient path.
var errNoRecord = errors.New("no account record")

// Lockout sets the failed-login lockout of address until the given time.
//
// A known account (one aupd has a record of: provisioned, or holding
// state) gets the lockout status, with history and an account event, and
// its company from company when it has none. Only an active (or already
// locked-out) account is locked out: a lockout must never replace an
// admin's lock, a maintenance or a closure, which would end with it.
//
// An address aupd has no record of (a guessed name, or a mailbox the
// provider never provisioned) is locked out transiently: the status is
// written on its state hash with an expiry at the lockout's end, nothing is
// indexed, no history is kept, and no account is created, so a password
// spray over made-up names leaves nothing lasting behind.
func (s *Store) Lockout(ctx context.Context, address, company string, until time.Time, by Actor) (LockoutResult, error) {
	op, err := s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		if !a.Exists {
			return nil, errNoRecord
		}
		cur := a.View().EffectiveStatus(now)
		if cur != rules.StatusActive && cur != rules.StatusLockout {
			return nil, nil
		}
		if cur == rules.StatusLockout && until.UnixMilli() <= a.LockoutUntil.UnixMilli() {
			return nil, nil
		}
		info, _ := json.Marshal(StatusInfo{Reason: by.Reason, Actor: by.Name, Note: by.Note, At: now})
		ch := &Change{Set: map[string]string{
			"status": string(rules.StatusLockout), "status_info": string(info),
			"lockout_until": fmt.Sprint(until.UnixMilli()),
		}}
		before := a.clone()
		before.Status = cur
		after := a.clone()
		after.Status = rules.StatusLockout
		if a.Company == "" && company != "" {
			ch.Set["company"] = company
			before.Company = company // the event names the company
		}
		ch.History = []HistoryEntry{{Time: now, Actor: by.Name, Action: "status", Reason: by.Reason, Status: string(rules.StatusLockout), Note: by.Note}}
		ch.Events = []events.AccountEvent{s.event(before, events.TypeStatusChanged, by, now, after)}
		return ch, nil
	})
	if err == nil {
		return LockoutResult{Op: op}, nil
	}
	if !errors.Is(err, errNoRecord) {
		return LockoutResult{}, err
	}
	now := s.now().UTC()
	info, _ := json.Marshal(StatusInfo{Reason: by.Reason, Actor: by.Name, Note: by.Note, At: now})
	n, err := transientLockoutScript.Run(ctx, s.rdb, []string{s.key(address, sufState)},
		until.UnixMilli(), string(info), now.UnixMilli()).Int()
	if err != nil {
		return LockoutResult{}, wrap("set transient lockout", err)
	}
	if n == 0 {
		// A record appeared meanwhile; lock it out as a known account.
		return s.Lockout(ctx, address, company, until, by)
	}
	return LockoutResult{Transient: true}, nil
}

// transientLockoutScript writes a lockout on the state hash of an address
// that has no record, expiring with the lockout. A state hash that already
// expires later (a verdict-only address's) keeps its expiry; one without
// an expiry keeps none.
//
//	KEYS[1] state HASH; ARGV until ms, status_info, now ms
//	returns 0 when the address has a record, else 1
var transientLockoutScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'created') == 1 then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'lockout', 'lockout_until', ARGV[1], 'status_info', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'ver', 1)
local want = tonumber(ARGV[1]) - tonumber(ARGV[3])
if want < 1000 then want = 1000 end
if ttl == -2 or (ttl >= 0 and ttl < want) then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
`)
