package rules

import (
	"slices"
	"time"
)

// Provider is the provider's AUP rule (config.AUP): the policy of every
// account before its company's overrides, and the bounds of counting.
type Provider struct {
	Window     time.Duration
	FutureSkew time.Duration
	Threshold  int
	// MaxTracked raises the per-account cap above threshold + 1 (0: the
	// cap is threshold + 1, the least that keeps every decision exact).
	MaxTracked int
	Directions []Direction
	Verdicts   []Verdict
	Mode       Mode
	Allowlist  []string
	// Volume are the limits on what authenticated accounts send, before
	// their company's (none: nothing is counted); VolumeAllowlist the
	// accounts whose volume crossings are reported, never enforced.
	Volume          []VolumeLimit
	VolumeAllowlist []string
	// SpamRate is the spam-rate rule before the company's (the zero
	// value: off); the threshold is then its backstop.
	SpamRate SpamRate
}

// CompanyRule is what an account's company changes in the provider's
// rule: its threshold and spam-rate rule (nil: the provider's), and
// whether it allowlists the account.
type CompanyRule struct {
	Threshold   *int
	SpamRate    *SpamRate
	Allowlisted bool
}

// For is the policy of one account: the provider's rule with its
// company's changes, allowlisted when the provider's allowlist names the
// account or its company allowlists it.
func (p Provider) For(account string, c CompanyRule) Policy {
	pol := Policy{Threshold: p.Threshold, Directions: p.Directions, Verdicts: p.Verdicts, Mode: p.Mode, SpamRate: p.SpamRate}
	if c.Threshold != nil {
		pol.Threshold = *c.Threshold
	}
	if c.SpamRate != nil {
		pol.SpamRate = *c.SpamRate
	}
	pol.Allowlisted = c.Allowlisted || slices.Contains(p.Allowlist, account)
	return pol
}

// Cap is the per-account cap of stored events of an account whose policy
// is pol: max(MaxTracked, pol's threshold + 1).
func (p Provider) Cap(pol Policy) int { return max(p.MaxTracked, pol.Threshold+1) }
