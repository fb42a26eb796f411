package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// trimHistoryScript drops an account's history entries older than a
// cutoff, oldest first (the list is newest first), at most ARGV[2] of
// them per call. Entry times are RFC 3339 with any offset.
// KEYS[1] history LIST; ARGV[1] cutoff (Unix seconds), ARGV[2] max pops.
var trimHistoryScript = redis.NewScript(`
local function epoch(s)
  local y, mo, d, h, mi, se = string.match(s, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
  local sign, oh, om = string.match(s, '([+-])(%d%d):(%d%d)$')
  if sign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    if sign == '+' then t = t - off else t = t + off end
  end
  return t
end
local cutoff, max, n = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
while n < max do
  local last = redis.call('LINDEX', KEYS[1], -1)
  if not last then break end
  local ts = string.match(last, '"time":"([^"]+)"')
  local t = ts and epoch(ts)
  if not t or t >= cutoff then break end
  redis.call('RPOP', KEYS[1])
  n = n + 1
end
return n
`)

// TrimHistory removes history entries older than before from every
// account aupd has a record of, reading the account index in pages. It
// returns how many entries it removed. Deleted accounts' histories expire
// on their own (HistoryTTL).
func (s *Store) TrimHistory(ctx context.Context, before time.Time) (int, error) {
	removed := 0
	var cursor uint64
	for {
		page, next, err := s.rdb.SScan(ctx, s.idxAll(), cursor, "", 500).Result()
		if err != nil {
			return removed, wrap("scan accounts", err)
		}
		for _, a := range page {
			n, err := trimHistoryScript.Run(ctx, s.rdb, []string{s.key(a, sufHistory)}, before.Unix(), 1000).Int()
			if err != nil {
				return removed, wrap("trim history", err)
			}
			removed += n
		}
		if cursor = next; cursor == 0 {
			return removed, nil
		}
	}
}

// ReasonLockoutEnded is the reason recorded when an ended lockout is
// cleared.
const ReasonLockoutEnded = "lockout_ended"

// ClearEndedLockouts records as active the accounts whose lockout ended
// by itself (their status still says lockout, with a time in the past),
// so that the status index and the licence counts follow. Each change is
// recorded and published like any other (status_changed). It returns the
// accounts changed; pub publishes their events.
func (s *Store) ClearEndedLockouts(ctx context.Context, pub Publisher) (int, error) {
	by := Actor{Name: "aupd", Reason: ReasonLockoutEnded, Note: "the lockout ended"}
	changed := 0
	var cursor uint64
	for {
		page, next, err := s.rdb.SScan(ctx, s.idxStatus(string(rules.StatusLockout)), cursor, "", 500).Result()
		if err != nil {
			return changed, wrap("scan lockouts", err)
		}
		for _, addr := range page {
			a, ch, err := s.Update(ctx, addr, func(a *Account) (*Change, error) {
				now := s.now()
				if a.Status != rules.StatusLockout || a.LockoutUntil.IsZero() || now.Before(a.LockoutUntil) {
					return nil, nil
				}
				after := a.clone()
				after.Status = rules.StatusActive
				info, _ := json.Marshal(StatusInfo{Reason: by.Reason, Actor: by.Name, Note: by.Note, At: now})
				return &Change{
					Set:     map[string]string{"status": string(rules.StatusActive), "status_info": string(info)},
					Del:     []string{"lockout_until"},
					History: []HistoryEntry{{Time: now, Actor: by.Name, Action: "status", Reason: by.Reason, Status: string(rules.StatusActive), Note: by.Note}},
					Events:  []events.AccountEvent{s.event(a, events.TypeStatusChanged, by, now, after)},
				}, nil
			})
			if err != nil {
				return changed, fmt.Errorf("clear ended lockout of %s: %w", addr, err)
			}
			if ch == nil {
				if !a.Exists || a.Status != rules.StatusLockout {
					// A stale index entry.
					_ = s.rdb.SRem(ctx, s.idxStatus(string(rules.StatusLockout)), addr).Err()
				}
				continue
			}
			changed++
			if _, err := s.FlushOutbox(ctx, addr, pub); err != nil {
				return changed, err
			}
		}
		if cursor = next; cursor == 0 {
			return changed, nil
		}
	}
}
