package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// StatusGuard decides, on the account as it is when the change is applied,
// whether a change of status may happen: nil allows it; an error refuses
// it and is returned by SetStatusIf.
type StatusGuard func(current rules.Status, a *Account) error

// SetStatusIf is SetStatus with a guard checked atomically with the change
// (inside the compare-and-set): "unlock" only ends a lock, "end-lockout"
// only a lockout, and a closed account is only reopened on purpose, even
// when another admin or the worker changes the account at the same time.
// As with SetStatus, setting the status the account already has changes
// nothing and writes nothing; the guard is not asked then.
func (s *Store) SetStatusIf(ctx context.Context, address string, status rules.Status, until time.Time, by Actor, guard StatusGuard) (*Op, error) {
	if !status.Valid() {
		return nil, fmt.Errorf("%w: unknown status %q", ErrInvalid, status)
	}
	return s.op(ctx, address, func(a *Account, now time.Time) (*Change, error) {
		cur := a.View().EffectiveStatus(now)
		if cur == status && (status != rules.StatusLockout || a.LockoutUntil.Equal(until)) {
			return nil, nil
		}
		if guard != nil {
			if err := guard(cur, a); err != nil {
				return nil, err
			}
		}
		after := a.clone()
		after.Status = status
		info, _ := json.Marshal(StatusInfo{Reason: by.Reason, Actor: by.Name, Note: by.Note, At: now})
		ch := &Change{Set: map[string]string{"status": string(status), "status_info": string(info)}}
		if status == rules.StatusLockout && !until.IsZero() {
			ch.Set["lockout_until"] = fmt.Sprint(until.UnixMilli())
		} else {
			ch.Del = []string{"lockout_until"}
		}
		before := a.clone()
		before.Status = cur
		ch.History = []HistoryEntry{{Time: now, Actor: by.Name, Action: "status", Reason: by.Reason, Status: string(status), Note: by.Note, Via: by.Via}}
		ch.Events = []events.AccountEvent{s.event(before, events.TypeStatusChanged, by, now, after)}
		return ch, nil
	})
}
