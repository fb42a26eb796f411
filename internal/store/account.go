package store

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Suspension is one suspended service's record.
type Suspension = apitypes.Suspension

// StatusInfo records who set the current status, when and why.
type StatusInfo = apitypes.StatusInfo

// Account is the state of one account.
type Account struct {
	Address string
	Exists  bool // aupd has a record of it
	// Provisioned is set for a mailbox the provider provisioned
	// (Provision): a licence whatever its state.
	Provisioned  bool
	Version      int64
	Created      time.Time
	Type         rules.AccountType
	Company      string
	Status       rules.Status
	StatusInfo   *StatusInfo
	LockoutUntil time.Time
	Suspensions  map[rules.Service]Suspension
	// AUP is the id of the AUP suspension in force, if any.
	AUP string
	// LastAUP is the last crossing of the threshold (suspension or report).
	LastAUP *events.AUPSuspension
	// Floor is the last reinstatement from an AUP suspension: events at or
	// before it no longer count.
	Floor time.Time
	// Throttled says that the state holds a volume throttle's marker: a
	// throttle may hold the account back (Throttle decides).
	Throttled bool
}

// View returns what access decisions need.
func (a *Account) View() rules.AccountView {
	v := rules.AccountView{Type: a.Type, Status: a.Status, LockoutUntil: a.LockoutUntil}
	for svc := range a.Suspensions {
		v.Suspended = append(v.Suspended, svc)
	}
	return v
}

// Suspended lists the suspended services in the stable order of
// rules.Services.
func (a *Account) Suspended() []string {
	out := []string{}
	for _, s := range rules.Services {
		if _, ok := a.Suspensions[s]; ok {
			out = append(out, string(s))
		}
	}
	return out
}

func (a *Account) state() *events.State {
	return &events.State{Status: string(a.Status), Suspended: a.Suspended()}
}

// clone returns a deep copy, for update functions to modify.
func (a *Account) clone() *Account {
	c := *a
	c.Suspensions = maps.Clone(a.Suspensions)
	if c.Suspensions == nil {
		c.Suspensions = map[rules.Service]Suspension{}
	}
	return &c
}

// Account reads an account's state. An account aupd has no record of is
// returned with Exists false, status active and type mailbox.
func (s *Store) Account(ctx context.Context, address string) (*Account, error) {
	h, err := s.rdb.HGetAll(ctx, s.key(address, sufState)).Result()
	if err != nil {
		return nil, wrap("read account", err)
	}
	return parseAccount(address, h), nil
}

// Accounts reads the states of several accounts in one round trip, in
// the order given, each as Account reads it.
func (s *Store) Accounts(ctx context.Context, addresses ...string) ([]*Account, error) {
	if len(addresses) == 1 {
		a, err := s.Account(ctx, addresses[0])
		return []*Account{a}, err
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(addresses))
	for i, a := range addresses {
		cmds[i] = pipe.HGetAll(ctx, s.key(a, sufState))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("read accounts", err)
	}
	out := make([]*Account, len(addresses))
	for i, a := range addresses {
		out[i] = parseAccount(a, cmds[i].Val())
	}
	return out, nil
}

func parseAccount(address string, h map[string]string) *Account {
	a := &Account{
		Address:     address,
		Exists:      h["created"] != "",
		Provisioned: h[fieldProvisioned] == "1",
		Type:        rules.AccountType(h["type"]),
		Company:     h["company"],
		Status:      rules.Status(h["status"]),
		Suspensions: map[rules.Service]Suspension{},
		AUP:         h["aup"],
		LastAUP:     decodeAUP(h["last_aup"]),
		Floor:       fromMS(h["floor"]),
		Created:     fromMS(h["created"]),
		Throttled:   h[fieldThrottle] != "",
	}
	a.Version, _ = strconv.ParseInt(h["ver"], 10, 64)
	if a.Type == "" {
		a.Type = rules.TypeMailbox
	}
	if a.Status == "" {
		a.Status = rules.StatusActive
	}
	a.LockoutUntil = fromMS(h["lockout_until"])
	if v := h["status_info"]; v != "" {
		var si StatusInfo
		if json.Unmarshal([]byte(v), &si) == nil {
			a.StatusInfo = &si
		}
	}
	for k, v := range h {
		svc, ok := strings.CutPrefix(k, "sus:")
		if !ok {
			continue
		}
		var sus Suspension
		if json.Unmarshal([]byte(v), &sus) == nil {
			a.Suspensions[rules.Service(svc)] = sus
		}
	}
	return a
}

// HistoryEntry is one line of an account's history.
type HistoryEntry = apitypes.HistoryEntry

// History returns up to limit entries of an account's history, newest
// first, starting at offset.
func (s *Store) History(ctx context.Context, address string, offset, limit int) ([]HistoryEntry, error) {
	raw, err := s.rdb.LRange(ctx, s.key(address, sufHistory), int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, wrap("read history", err)
	}
	out := make([]HistoryEntry, 0, len(raw))
	for _, r := range raw {
		c, ok, err := decodeCrossing(r)
		if err != nil {
			return nil, fmt.Errorf("decode history entry: %w", err)
		}
		if ok {
			out = append(out, crossingHistory(c))
			continue
		}
		var e HistoryEntry
		if err := json.Unmarshal([]byte(r), &e); err != nil {
			return nil, fmt.Errorf("decode history entry: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Change is what an update function asks for. The zero Change changes
// nothing and writes nothing.
type Change struct {
	Set     map[string]string
	Del     []string
	History []HistoryEntry
	Events  []events.AccountEvent
	// ResetWindow lifts an AUP suspension: events counted until now no
	// longer count toward the next suspension.
	ResetWindow bool
	// Delete removes the account; its history is kept for HistoryTTL.
	Delete bool
}

func (c *Change) empty() bool {
	return c == nil || len(c.Set) == 0 && len(c.Del) == 0 && len(c.History) == 0 && len(c.Events) == 0 && !c.ResetWindow && !c.Delete
}

// HistoryTTL is how long a deleted account's history is kept.
const HistoryTTL = 400 * 24 * time.Hour

//go:embed apply.lua
var applyLua string

var applyScript = redis.NewScript(applyLua)

// maxUpdateAttempts bounds the compare-and-set retries of Update.
const maxUpdateAttempts = 16

// Update reads an account, lets fn decide a change on a copy of it and
// applies the change atomically if nobody changed the account meanwhile
// (compare-and-set on its version), retrying otherwise. fn may be called
// more than once and must not have side effects. It returns the account as
// fn saw it when the change was applied, the change, and whether anything
// was written.
func (s *Store) Update(ctx context.Context, address string, fn func(a *Account) (*Change, error)) (*Account, *Change, error) {
	for range maxUpdateAttempts {
		a, err := s.Account(ctx, address)
		if err != nil {
			return nil, nil, err
		}
		ch, err := fn(a.clone())
		if err != nil {
			return a, nil, err
		}
		if ch.empty() {
			return a, nil, nil
		}
		ok, err := s.apply(ctx, address, a.Version, ch)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			return a, ch, nil
		}
	}
	return nil, nil, ErrConflict
}

func (s *Store) apply(ctx context.Context, address string, version int64, ch *Change) (bool, error) {
	flags := ""
	if ch.ResetWindow {
		flags += "r"
	}
	if ch.Delete {
		flags += "x"
	}
	args := []any{version, s.scriptNow(), "", flags, int64(HistoryTTL / time.Second), len(ch.Set)}
	for _, k := range slices.Sorted(maps.Keys(ch.Set)) {
		args = append(args, k, ch.Set[k])
	}
	args = append(args, len(ch.Del))
	for _, k := range ch.Del {
		args = append(args, k)
	}
	args = append(args, len(ch.History))
	for _, h := range ch.History {
		b, err := json.Marshal(h)
		if err != nil {
			return false, fmt.Errorf("encode history: %w", err)
		}
		args = append(args, b)
	}
	args = append(args, len(ch.Events))
	for _, e := range ch.Events {
		b, err := json.Marshal(e)
		if err != nil {
			return false, fmt.Errorf("encode account event: %w", err)
		}
		args = append(args, b)
	}
	if len(ch.Events) > 0 {
		// Indexed before it is written, so that the sweep finds an entry
		// left by a crash between the change and its publish.
		if err := s.rdb.SAdd(ctx, s.idxOutbox(), address).Err(); err != nil {
			return false, wrap("index outbox", err)
		}
	}
	keys := []string{s.key(address, sufState), s.key(address, sufWindow), s.key(address, sufStats),
		s.key(address, sufHistory), s.key(address, sufOutbox), s.key(address, sufLegacy),
		s.key(address, sufSenders), s.key(address, sufLogins)}
	res, err := applyScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return false, wrap("apply account change", err)
	}
	return toInt(res[0]) == 1, nil
}
