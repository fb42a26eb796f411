package store

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
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
	if v := w.Crossing.Suspension.Volume; v != nil {
		for i, c := range v.Clients {
			v.Clients[i] = canonicalClient(c)
		}
	}
	return &w.Crossing, true, nil
}

// canonicalClient writes a volume crossing's client as Go does: Lua
// writes an IPv6 /64 group by group ("2001:db8:0:0::/64").
func canonicalClient(c string) string {
	if p, err := netip.ParsePrefix(c); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(c); err == nil {
		return a.String()
	}
	return c
}

// crossingHistory is a crossing's line in the account's history.
func crossingHistory(c *events.Crossing) HistoryEntry {
	sus := c.Suspension
	note := fmt.Sprintf("count %d exceeds threshold %d", sus.Count, sus.Threshold)
	if r := sus.Rate; r != nil && sus.Rule == rules.RuleSpamRate {
		note = fmt.Sprintf("%s: %d spam of %d outbound messages exceed the rate of %s (at least %d spam)", sus.Rule, r.Spam, r.Spam+r.Ham,
			strconv.FormatFloat(r.Limit*100, 'g', 4, 64)+"%", r.MinSpam)
	}
	if v := sus.Volume; v != nil {
		note = fmt.Sprintf("%s: %d %s within %s exceed the limit of %d", sus.Rule, sus.Count, v.Kind,
			window(time.Duration(v.WindowSeconds)*time.Second), sus.Threshold)
		if len(v.Clients) > 0 {
			note += ", from " + strings.Join(v.Clients, ", ")
		}
	}
	return HistoryEntry{
		Time: c.Time, Actor: events.ActorAupd, Action: c.Type, Reason: events.ReasonAUP,
		Services: sus.Services, ID: sus.ID, Note: note, Rule: sus.Rule,
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

// window is a window of whole minutes as a config writes it: 24h, 1h30m,
// 15m.
func window(d time.Duration) string {
	s := strings.TrimSuffix(d.String(), "0s")
	if h, ok := strings.CutSuffix(s, "h0m"); ok {
		return h + "h"
	}
	return s
}
