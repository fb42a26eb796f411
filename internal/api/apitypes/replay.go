package apitypes

import (
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// ReplayCrossing is one crossing of an AUP rule, simulated or real.
type ReplayCrossing struct {
	At time.Time `json:"at"`
	// Rule is the rule crossed: spam_count or spam_rate (the count when
	// both hold). A real crossing recorded before rules were named is
	// spam_count.
	Rule      string `json:"rule"`
	Count     int    `json:"count"`
	Threshold int    `json:"threshold"`
	Action    string `json:"action"` // suspend or report
	// Rate holds the spam-rate rule's figures when it held at the
	// crossing, whichever rule names it, as the suspension's rate does.
	Rate *events.RateFacts `json:"rate,omitempty"`
	ID   string            `json:"id,omitempty"` // the real suspension's id
}

// ReplayAccount is one account that crossed, in the replay or for real.
type ReplayAccount struct {
	Account string `json:"account"`
	Company string `json:"company,omitempty"`
	// Would is what the rules tried would have done; Actual what the
	// live worker did in the same period.
	Would  []ReplayCrossing `json:"would"`
	Actual []ReplayCrossing `json:"actual"`
}

// ReplayReport is the result of a replay (GET /api/v1/replay).
type ReplayReport struct {
	// Threshold is the threshold tried; 0: each account's live one.
	Threshold int `json:"threshold"`
	// SpamRate is the spam-rate rule tried (rate 0: off); absent: each
	// account's live one.
	SpamRate *rules.SpamRateSetting `json:"spam_rate,omitempty"`
	Company  string                 `json:"company,omitempty"`
	From     time.Time              `json:"from"`
	To       time.Time              `json:"to"`
	Window   string                 `json:"window"`
	// Events is how many stored verdicts were read (from From minus one
	// window, so that the first counts are whole).
	Events   int             `json:"events"`
	Accounts []ReplayAccount `json:"accounts"`
}
