package events

import "time"

// AccountSubjectPrefix is the prefix of the subjects account events are
// published on: aup.account.<type>.
const AccountSubjectPrefix = "aup.account."

// Account event types; the subject is AccountSubjectPrefix + type.
const (
	TypeSuspended     = "suspended"      // services suspended (AUP or admin)
	TypeReinstated    = "reinstated"     // services reinstated
	TypeStatusChanged = "status_changed" // status changed (lock, unlock, lockout, maintenance, close, activate)
	TypeReported      = "reported"       // threshold crossed, not suspended (shadow mode or allowlist)
	TypeDeleted       = "deleted"        // account deleted
	TypeUpdated       = "updated"        // type or company changed
)

// AccountEvent is published, once, for every change of an account's state.
// Its ID is the JetStream message id, so a republish after a crash is
// dropped by JetStream's duplicate window.
type AccountEvent struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Account string    `json:"account"`
	Company string    `json:"company,omitempty"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason"`
	Note    string    `json:"note,omitempty"`
	Old     *State    `json:"old,omitempty"`
	New     *State    `json:"new,omitempty"`
	// Suspension is set on AUP suspensions and reports.
	Suspension *AUPSuspension `json:"suspension,omitempty"`
}

// State is the part of an account's state that events report.
type State struct {
	Status    string   `json:"status"`
	Suspended []string `json:"suspended"`
}

// AUPSuspension is the record of one crossing of the AUP threshold: what
// was counted, against which threshold, and which events are its evidence.
type AUPSuspension struct {
	ID     string `json:"id"`
	Action string `json:"action"` // suspend or report
	// Rule names the AUP rule crossed: spam_count, the spam count over
	// the window, or spam_rate, the share of outbound messages judged
	// spam (Rate).
	Rule        string         `json:"rule,omitempty"`
	Services    []string       `json:"services,omitempty"`
	Threshold   int            `json:"threshold"`
	Count       int            `json:"count"`
	Capped      bool           `json:"capped,omitempty"` // count reached the per-account cap: at least Count
	Counts      map[string]int `json:"counts"`           // by direction
	WindowStart time.Time      `json:"window_start"`
	WindowEnd   time.Time      `json:"window_end"`
	// Samples are up to three verdict events that counted, as sequence
	// numbers in the verdict stream.
	Samples []uint64 `json:"samples,omitempty"`
	// Volume is set on the crossing of a volume limit (rule
	// volume:<name>): Threshold is then the limit's max, Count what it
	// counts, and the window the limit's.
	Volume *VolumeCrossing `json:"volume,omitempty"`
	// Rate holds the spam-rate rule's figures when it crossed.
	Rate *RateFacts `json:"rate,omitempty"`
}

// VolumeCrossing is what the crossing of a volume limit found: how much
// the account sent within the limit's window, since when, from where.
type VolumeCrossing struct {
	Limit         string `json:"limit"`          // the limit's name
	Kind          string `json:"kind"`           // what it counts: messages or recipients
	WindowSeconds int64  `json:"window_seconds"` // the limit's window
	// Messages and Recipients sent within the window, the message that
	// crossed included; one of the two is absent when the account's
	// limits count only the other in that window.
	Messages   *int `json:"messages,omitempty"`
	Recipients *int `json:"recipients,omitempty"`
	// Since is when the burst started: the start of the oldest part of
	// the window (a twelfth of it) in which the account sent.
	Since time.Time `json:"since"`
	// Clients are the last client addresses the account sent from, up to
	// three, the most recent first: IPv4 addresses and IPv6 /64 prefixes.
	Clients []string `json:"clients,omitempty"`
}

// RateFacts are the figures of a spam-rate crossing: over the window,
// Spam outbound messages judged spam and Ham judged ham, against the
// Limit (a fraction: 0.05 for 5%) and the least spam, MinSpam.
type RateFacts struct {
	Spam    int     `json:"spam"`
	Ham     int     `json:"ham"`
	Limit   float64 `json:"limit"`
	MinSpam int     `json:"min_spam"`
}

// Crossing is the record a script writes when an account crosses an AUP
// rule (the store's crossing.lua), from which the account event (Event),
// the account's last AUP suspension and its history line are rendered.
type Crossing struct {
	Type       string        `json:"type"` // TypeSuspended or TypeReported
	Time       time.Time     `json:"time"`
	Account    string        `json:"account"`
	Company    string        `json:"company"`
	Status     string        `json:"status"`
	Old        []string      `json:"old"` // suspended services before
	New        []string      `json:"new"` // and after
	Suspension AUPSuspension `json:"suspension"`
}

// ActorAupd and ReasonAUP name the automatic suspension in events and
// history.
const (
	ActorAupd = "aupd"
	ReasonAUP = "aup_violation"
)

// Event is the account event of a crossing. Its id is the suspension's
// (or report's) id.
func (c *Crossing) Event() *AccountEvent {
	sus := c.Suspension
	return &AccountEvent{
		ID: sus.ID, Type: c.Type, Time: c.Time, Account: c.Account, Company: c.Company,
		Actor: ActorAupd, Reason: ReasonAUP,
		Old:        &State{Status: c.Status, Suspended: orEmpty(c.Old)},
		New:        &State{Status: c.Status, Suspended: orEmpty(c.New)},
		Suspension: &sus,
	}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
