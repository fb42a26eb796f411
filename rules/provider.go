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
}

// For is the policy of one account: the provider's rule with the
// threshold of the account's company (nil: the provider's), allowlisted
// when the provider's allowlist names the account or its company
// allowlists it.
func (p Provider) For(account string, threshold *int, allowlisted bool) Policy {
	pol := Policy{Threshold: p.Threshold, Directions: p.Directions, Verdicts: p.Verdicts, Mode: p.Mode}
	if threshold != nil {
		pol.Threshold = *threshold
	}
	pol.Allowlisted = allowlisted || slices.Contains(p.Allowlist, account)
	return pol
}

// Cap is the per-account cap of stored events of an account whose policy
// is pol: max(MaxTracked, pol's threshold + 1).
func (p Provider) Cap(pol Policy) int { return max(p.MaxTracked, pol.Threshold+1) }
