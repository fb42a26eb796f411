package apitypes

import (
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Account is the JSON form of an account.
type Account struct {
	Address string `json:"address"`
	Exists  bool   `json:"exists"`
	// Provisioned: a mailbox the provider provisioned (PUT, aupctl import);
	// Licensed: it counts as a licence (provisioned, or holding state).
	Provisioned  bool                `json:"provisioned"`
	Licensed     bool                `json:"licensed"`
	Type         rules.AccountType   `json:"type"`
	Company      string              `json:"company,omitempty"`
	Status       rules.Status        `json:"status"` // effective now: an ended lockout is active
	StatusInfo   *StatusInfo         `json:"status_info,omitempty"`
	LockoutUntil *time.Time          `json:"lockout_until,omitempty"`
	Suspended    []string            `json:"suspended"`
	Suspensions  []ServiceSuspension `json:"suspensions"`
	Created      *time.Time          `json:"created,omitempty"`
	Version      int64               `json:"version"`
	// Counts, Threshold and LastSuspension are given when reading one
	// account. An address aupd holds counts for but no record of (seen
	// only in verdicts, never provisioned) reads with exists false.
	Counts         *Counts         `json:"counts,omitempty"`
	Threshold      int             `json:"threshold,omitempty"`
	LastSuspension *LastSuspension `json:"last_suspension,omitempty"`
	// Senders and Logins are signs of a compromise, given when reading
	// one account: the senders (client address, login) of the messages
	// counted in the window, from the verdict events' sender field, and
	// the recent logins from Dovecot's reports. Hints, at least what they
	// say; absent when there are none.
	Senders []Sender `json:"senders,omitempty"`
	Logins  []Login  `json:"logins,omitempty"`
}

// ServiceSuspension is one suspended service.
type ServiceSuspension struct {
	Service rules.Service `json:"service"`
	Suspension
}

// LastSuspension is the last crossing of the AUP threshold (a suspension,
// or a report in shadow mode or for an allowlisted account), whether it is
// still in force, and the delivery state of its notice.
type LastSuspension struct {
	*events.AUPSuspension
	InForce bool `json:"in_force"`
	Notice  any  `json:"notice,omitempty"`
}

// AccountList is a page of accounts.
type AccountList struct {
	Accounts []*Account `json:"accounts"`
	// NextCursor fetches the next page; absent at the end.
	NextCursor string `json:"next_cursor,omitempty"`
}

// HistoryPage is a page of an account's history, newest first.
type HistoryPage struct {
	Entries []HistoryEntry `json:"entries"`
	// NextOffset is the offset of the next page; absent at the end.
	NextOffset *int `json:"next_offset,omitempty"`
}

// ChangeRequest is the part of every change request that says why: a
// required free-text reason (stored as the history entry's note) and an
// optional reason code (default: "abuse_contact" for a token limited to
// a company, "admin" for the provider's).
type ChangeRequest struct {
	Reason string `json:"reason"`
	Code   string `json:"code,omitempty"`
}

// ChangeResponse answers a change: whether anything changed (false: the
// account already was so, and no history was written) and the account now.
type ChangeResponse struct {
	Changed bool     `json:"changed"`
	Account *Account `json:"account"`
}

// SuspendRequest suspends services, or reinstates them (no services: all).
type SuspendRequest struct {
	Services []rules.Service `json:"services,omitempty"`
	ChangeRequest
}

// ReinstateRequest reinstates services (no services: all).
type ReinstateRequest = SuspendRequest

// AccountRequest creates an account or sets its type or company.
type AccountRequest struct {
	Type    rules.AccountType `json:"type,omitempty"`
	Company string            `json:"company,omitempty"`
	ChangeRequest
}

// NoteRequest adds a case note to an account's history.
type NoteRequest struct {
	// Text is plain text, 1 to 1000 characters (the store's MaxNote).
	Text string `json:"text"`
}

// NoteResponse answers a note: the history entry written.
type NoteResponse struct {
	Entry HistoryEntry `json:"entry"`
}

// DecideRequest asks whether an access is allowed.
type DecideRequest struct {
	Account string       `json:"account"`
	Access  rules.Access `json:"access"`
}

// DecideResponse is the answer for webmail (or any enforcement point),
// which asks only once the user's password is verified: an answer given
// before would tell an account's state to anyone who types its address.
// When Masked is set the user must be shown Message only, which reads
// exactly like a failed login: a lockout gives an intruder no hint.
type DecideResponse struct {
	Account string       `json:"account"`
	Access  rules.Access `json:"access"`
	Result  rules.Result `json:"result"`
	Code    string       `json:"code"`
	Masked  bool         `json:"masked"`
	// Message is a neutral text that may be shown to the user.
	Message string `json:"message,omitempty"`
}
