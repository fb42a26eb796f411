package apitypes

import (
	"time"

	"github.com/aupd/aupd/rules"
)

// Suspension is one suspended service's record.
type Suspension struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	Actor  string    `json:"actor"`
	Note   string    `json:"note,omitempty"`
	At     time.Time `json:"at"`
	// Scope is the company whose actor set it; "" when the provider (or
	// aupd) did.
	Scope string `json:"scope,omitempty"`
}

// StatusInfo records who set the current status, when and why.
type StatusInfo struct {
	Reason string    `json:"reason"`
	Actor  string    `json:"actor"`
	Note   string    `json:"note,omitempty"`
	At     time.Time `json:"at"`
}

// HistoryEntry is one line of an account's history.
type HistoryEntry struct {
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Reason   string    `json:"reason"`
	Services []string  `json:"services,omitempty"`
	Status   string    `json:"status,omitempty"`
	ID       string    `json:"id,omitempty"`
	Note     string    `json:"note,omitempty"`
	// Rule is the AUP rule an automatic suspension or report crossed
	// (spam_count, spam_rate, volume:<name>); empty on other entries and
	// on crossings recorded before suspensions named their rule.
	Rule string `json:"rule,omitempty"`
	// Via is the door of a manual change: token (the API), desk (a desk
	// session) or link (the signed link of a notice).
	Via string `json:"via,omitempty"`
}

// Tally is a count of events in a rolling window, split by direction and
// verdict.
type Tally struct {
	Total int `json:"total"`
	// AtLeast is set when the set holding the events is at the per-account
	// cap with every member inside the window: older events were dropped,
	// so the real count is at least Total.
	AtLeast bool `json:"at_least"`
	// ByDirection counts by direction; every direction is present.
	ByDirection map[rules.Direction]int `json:"by_direction"`
	// ByVerdict counts by direction, then verdict; every pair is present.
	ByVerdict map[rules.Direction]map[rules.Verdict]int `json:"by_verdict"`
}

// Counts are an account's rolling counts.
type Counts struct {
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// Counting are the events that count toward the AUP threshold, since
	// the window start or the last reinstatement, whichever is later.
	Counting Tally `json:"counting"`
	// Other are events kept for statistics only (ham, kinds the policy
	// does not count).
	Other Tally `json:"other"`
}

// Sender is one sender of an account's counted messages: the client
// address and login the verdict events named (either may be empty), how
// many of the account's counted messages it sent, and when the first and
// the last of them were made (event time, to the second).
type Sender struct {
	IP    string    `json:"ip,omitempty"`
	Login string    `json:"login,omitempty"`
	Count int       `json:"count"`
	First time.Time `json:"first_seen"`
	Last  time.Time `json:"last_seen"`
}

// Login is one entry of an account's recent logins: the logins alike in
// result, protocol and client address, how many, and the first and the
// last of them (to the second).
type Login struct {
	Result   string    `json:"result"` // "ok", "failed" or "refused"
	Protocol string    `json:"protocol,omitempty"`
	IP       string    `json:"ip,omitempty"`
	Count    int       `json:"count"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
}

// Licences counts a company's accounts as billed: the mailboxes the
// provider provisioned, whatever their status or suspensions (closed and
// suspended accounts still count), plus the accounts that hold state
// without being provisioned (for example an address suspended
// automatically). Addresses that only appeared in verdicts or failed
// logins, and deleted accounts, do not count.
type Licences struct {
	Company string `json:"company"`
	Total   int    `json:"total"`
	// Provisioned are the provisioned mailboxes; Unprovisioned the other
	// accounts that count because they hold state. Total is both.
	Provisioned   int                   `json:"provisioned"`
	Unprovisioned int                   `json:"unprovisioned"`
	ByStatus      map[rules.Status]int  `json:"by_status"`
	Suspended     int                   `json:"suspended"` // accounts with any suspended service
	ByService     map[rules.Service]int `json:"by_service"`
}
