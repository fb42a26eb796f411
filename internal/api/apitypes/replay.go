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
	// Volume holds what a real crossing of a volume limit (rule
	// volume:<name>) found, in the replay of a volume limit.
	Volume *events.VolumeCrossing `json:"volume,omitempty"`
	ID     string                 `json:"id,omitempty"` // the real suspension's id
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
	// Volume is the replay of a volume limit, when one was tried. A
	// replay of a volume limit alone reads no verdicts: Events is 0 and
	// Accounts empty.
	Volume *ReplayVolume `json:"volume,omitempty"`
}

// ReplayVolumeLimit is a volume limit tried: more than Messages
// messages, or more than Recipients recipients, within Window crosses
// it (one of the two is set).
type ReplayVolumeLimit struct {
	Window     string `json:"window"` // a Go duration: "1h0m0s"
	Messages   int    `json:"messages,omitempty"`
	Recipients int    `json:"recipients,omitempty"`
	Action     string `json:"action"` // throttle or suspend
}

// ReplayVolume is what the volume records show of a volume limit tried,
// beside what the live volume limits did.
type ReplayVolume struct {
	Limit ReplayVolumeLimit `json:"limit"`
	// From and To are the period: the highest counts are those of the
	// windows whose newest bucket ends within it, and the live crossings
	// those within it.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Sources are the volume limits that count the accounts in scope
	// (the provider's, and each company's own), with the ring of each
	// that answers the window tried.
	Sources []ReplayVolumeSource `json:"sources"`
	// Records is how many volume records of accounts in scope were read,
	// and Answered how many of them answer the window tried.
	Records  int `json:"records"`
	Answered int `json:"answered"`
	// Over is how many accounts went over the limit tried within the
	// period, and OverNow how many are over it now.
	Over    int `json:"over"`
	OverNow int `json:"over_now"`
	// Accounts are the accounts that went over the limit tried, that a
	// live throttle holds back now, or whose live volume limits crossed
	// in the period, in order of address.
	Accounts []ReplayVolumeAccount `json:"accounts"`
}

// ReplayVolumeSource is one list of volume limits in scope.
type ReplayVolumeSource struct {
	// Company is the company whose own limits these are; empty: the
	// provider's (aup.volume), for the accounts of every company without
	// its own and of none.
	Company string `json:"company,omitempty"`
	// Rings are the rings of the limits that count what the limit tried
	// counts: each answers a window of whole buckets up to its own.
	Rings []ReplayVolumeRing `json:"rings"`
	// Answer is the ring that answers the window tried (the finest);
	// absent when none does, and the records of these limits cannot say.
	Answer *ReplayVolumeRing `json:"answer,omitempty"`
}

// ReplayVolumeRing is one ring of a volume record: 12 buckets of Bucket
// over Window.
type ReplayVolumeRing struct {
	Window string `json:"window"`
	Bucket string `json:"bucket"`
}

// The answers of an account's volume record (ReplayVolumeAccount.Record).
const (
	RecordAnswered    = "answered"     // it answers the window tried
	RecordNone        = "none"         // no record
	RecordOtherLimits = "other_limits" // counted for windows its limits no longer have
	RecordNoRing      = "no_ring"      // its limits count nothing that answers the window
)

// ReplayVolumeAccount is what one account's volume record shows of the
// limit tried, beside what the live limits did.
type ReplayVolumeAccount struct {
	Account string `json:"account"`
	Company string `json:"company,omitempty"`
	// Record is answered, none (nothing counted within its limits'
	// longest window, or reset by a reinstatement), other_limits or
	// no_ring; the figures are set only when it is answered.
	Record string `json:"record"`
	// Bucket is the width of the buckets the counts are made of: a count
	// over the window covers at most the window and at least the window
	// less one bucket. RecordFrom is the start of the oldest bucket the
	// record keeps.
	Bucket     string    `json:"bucket,omitempty"`
	RecordFrom time.Time `json:"record_from,omitzero"`
	// Count is the count over the window now; Peak the highest count
	// over the window that the record shows within the period, over the
	// buckets from PeakFrom to PeakTo.
	Count    int       `json:"count"`
	Peak     int       `json:"peak"`
	PeakFrom time.Time `json:"peak_from,omitzero"`
	PeakTo   time.Time `json:"peak_to,omitzero"`
	// Would is what the limit tried would have done, when the count went
	// over it within the period; OverNow says the count is over it now
	// (a throttle would hold the account back now).
	Would   *ReplayVolumeWould `json:"would,omitempty"`
	OverNow bool               `json:"over_now"`
	// Throttle is a live throttle that holds the account back now.
	Throttle *ReplayThrottle `json:"throttle,omitempty"`
	// Actual are the crossings of the live volume limits in the period,
	// from the account events: suspensions and reports (a throttle
	// publishes none).
	Actual []ReplayCrossing `json:"actual"`
}

// ReplayVolumeWould is the crossing of a volume limit tried: within the
// bucket from From to To the count went over its max.
type ReplayVolumeWould struct {
	Action string    `json:"action"` // throttle or suspend; report in shadow mode or for an allowlisted account
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
}

// ReplayThrottle is a live volume throttle in force.
type ReplayThrottle struct {
	Limit string    `json:"limit"`
	Until time.Time `json:"until"`
}
