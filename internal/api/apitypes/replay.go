package apitypes

import "time"

// ReplayCrossing is one crossing of a threshold, simulated or real.
type ReplayCrossing struct {
	At        time.Time `json:"at"`
	Count     int       `json:"count"`
	Threshold int       `json:"threshold"`
	Action    string    `json:"action"`       // suspend or report
	ID        string    `json:"id,omitempty"` // the real suspension's id
}

// ReplayAccount is one account that crossed, in the replay or for real.
type ReplayAccount struct {
	Account string `json:"account"`
	Company string `json:"company,omitempty"`
	// Would is what the tried threshold would have done; Actual what the
	// live worker did in the same period.
	Would  []ReplayCrossing `json:"would"`
	Actual []ReplayCrossing `json:"actual"`
}

// ReplayReport is the result of a replay (GET /api/v1/replay).
type ReplayReport struct {
	Threshold int       `json:"threshold"`
	Company   string    `json:"company,omitempty"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Window    string    `json:"window"`
	// Events is how many stored verdicts were read (from From minus one
	// window, so that the first counts are whole).
	Events   int             `json:"events"`
	Accounts []ReplayAccount `json:"accounts"`
}
