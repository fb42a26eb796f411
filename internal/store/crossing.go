package store

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/aupd/aupd/internal/events"
)

// crossingLua records a crossing; it is put before the scripts that find
// crossings, so that one call finds and records one atomically.
//
//go:embed crossing.lua
var crossingLua string

// crossingPrefix starts a crossing's record, {"crossing":...}, which
// crossing.lua writes as the outbox entry, the history entry and the
// state's last_aup.
const crossingPrefix = `{"crossing":`

// decodeCrossing decodes a crossing's record; ok is false for anything
// else (an entry Go wrote).
func decodeCrossing(s string) (c *events.Crossing, ok bool, err error) {
	if !strings.HasPrefix(s, crossingPrefix) {
		return nil, false, nil
	}
	var w struct {
		Crossing events.Crossing `json:"crossing"`
	}
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return nil, true, fmt.Errorf("decode crossing: %w", err)
	}
	return &w.Crossing, true, nil
}

// crossingHistory is a crossing's line in the account's history.
func crossingHistory(c *events.Crossing) HistoryEntry {
	sus := c.Suspension
	return HistoryEntry{
		Time: c.Time, Actor: events.ActorAupd, Action: c.Type, Reason: events.ReasonAUP,
		Services: sus.Services, ID: sus.ID,
		Note: fmt.Sprintf("count %d exceeds threshold %d", sus.Count, sus.Threshold),
	}
}

// decodeAUP decodes the last_aup field of an account's state: a
// crossing's record, or the suspension aupd 0.2 and earlier wrote.
func decodeAUP(s string) *events.AUPSuspension {
	if s == "" {
		return nil
	}
	if c, ok, err := decodeCrossing(s); ok {
		if err != nil {
			return nil
		}
		return &c.Suspension
	}
	var a events.AUPSuspension
	if json.Unmarshal([]byte(s), &a) != nil {
		return nil
	}
	return &a
}
