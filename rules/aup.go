package rules

import "slices"

// Mode says what happens when an account crosses its threshold.
type Mode string

// The crossing modes.
const (
	// ModeEnforce suspends the AUP services and notifies the abuse contact.
	ModeEnforce Mode = "enforce"
	// ModeShadow records what would have happened and suspends nothing.
	ModeShadow Mode = "shadow"
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool { return m == ModeEnforce || m == ModeShadow }

// Action is what a crossing of the threshold leads to for one account.
type Action string

// The crossing actions.
const (
	// ActionSuspend suspends the AUP services (send and webmail_send).
	ActionSuspend Action = "suspend"
	// ActionReport records and publishes the crossing but suspends nothing:
	// the provider is in shadow mode or the account is allowlisted.
	ActionReport Action = "report"
)

// Policy is the AUP rule as it applies to one account: the provider's
// defaults with the owning company's overrides already applied.
type Policy struct {
	// Threshold: the account is suspended when its count exceeds it.
	Threshold int
	// Directions and Verdicts that count toward the threshold.
	Directions []Direction
	Verdicts   []Verdict
	// Mode is the provider's crossing mode.
	Mode Mode
	// Allowlisted accounts are never suspended automatically; a crossing is
	// reported instead.
	Allowlisted bool
	// SpamRate is the spam-rate rule (off: the zero value).
	SpamRate SpamRate
}

// CountsForRate reports whether an event of direction d and verdict v
// takes part in the spam-rate rule as ham: outbound ham, when the rule is
// on. (Outbound events that count are its spam.)
func (p Policy) CountsForRate(d Direction, v Verdict) bool {
	return p.SpamRate.On() && d == Outbound && v == Ham
}

// Counts reports whether an event of direction d and verdict v, held
// against an account that is local (in some company's domains) or not,
// counts toward that account's threshold. Ham never counts, and nothing
// counts against an account that is not local.
func (p Policy) Counts(d Direction, v Verdict, local bool) bool {
	if !local || v == Ham {
		return false
	}
	return slices.Contains(p.Directions, d) && slices.Contains(p.Verdicts, v)
}

// OnCrossing is the action taken when the account's count exceeds the
// threshold.
func (p Policy) OnCrossing() Action {
	if p.Mode == ModeShadow || p.Allowlisted {
		return ActionReport
	}
	return ActionSuspend
}

// Exceeds is the AUP rule itself: count strictly above threshold.
func Exceeds(count, threshold int) bool { return count > threshold }
