package rules

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// VolumeAction is what crossing a volume limit does.
type VolumeAction string

// The volume actions.
const (
	// VolumeThrottle answers the account's submissions with a temporary
	// failure until its count is back within the limit: nothing is
	// suspended, and the mail client tries again later.
	VolumeThrottle VolumeAction = "throttle"
	// VolumeSuspend suspends the AUP services, as the spam count does, with
	// its notice.
	VolumeSuspend VolumeAction = "suspend"
)

// Valid reports whether a is a known volume action.
func (a VolumeAction) Valid() bool { return a == VolumeThrottle || a == VolumeSuspend }

// VolumeLimit is one limit on what an authenticated account sends: more
// than Messages messages, or more than Recipients recipients, within
// Window crosses it. Exactly one of Messages and Recipients is set.
type VolumeLimit struct {
	Name       string        `yaml:"name" json:"name"`
	Window     time.Duration `yaml:"window" json:"window"`
	Messages   int           `yaml:"messages" json:"messages,omitempty"`
	Recipients int           `yaml:"recipients" json:"recipients,omitempty"`
	Action     VolumeAction  `yaml:"action" json:"action"`
}

// The volume a limit counts.
const (
	VolumeMessages   = "messages"
	VolumeRecipients = "recipients"
)

// Kind is what the limit counts: VolumeMessages or VolumeRecipients.
func (l VolumeLimit) Kind() string {
	if l.Messages > 0 {
		return VolumeMessages
	}
	return VolumeRecipients
}

// Max is the most the account may send within the window; one more
// crosses the limit.
func (l VolumeLimit) Max() int { return max(l.Messages, l.Recipients) }

// Rule is the limit's name as an AUP rule: "volume:<name>".
func (l VolumeLimit) Rule() string { return VolumeRulePrefix + l.Name }

// VolumeRulePrefix starts the rule name of every volume limit.
const VolumeRulePrefix = "volume:"

// VolumeBuckets is how many buckets a window is counted in: a count
// covers whole buckets of Window/VolumeBuckets, so it never includes a
// message older than the window and may leave out those of the oldest
// bucket's part that is older than Window - Window/VolumeBuckets.
const VolumeBuckets = 12

// Bucket is the width of one of the window's buckets.
func (l VolumeLimit) Bucket() time.Duration { return l.Window / VolumeBuckets }

// The bounds of volume limits.
const (
	// MaxVolumeLimits bounds the limits of one account.
	MaxVolumeLimits = 8
	// MaxVolumeRings bounds the different pairs of window and what is
	// counted (messages, recipients) of one account's limits: each is a
	// ring of buckets in the account's volume record.
	MaxVolumeRings = 4
	// MaxVolumeCount bounds a limit's count: buckets hold 16 bits.
	MaxVolumeCount = 65000
	// MinVolumeWindow and MaxVolumeWindow bound a window, which is a
	// whole number of minutes.
	MinVolumeWindow = time.Minute
	MaxVolumeWindow = 7 * 24 * time.Hour
)

var volumeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// ValidateVolume checks a list of volume limits and reports every problem,
// each prefixed with the limit's index ("[1].window: ...").
func ValidateVolume(limits []VolumeLimit) error {
	var errs []error
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("[%d]%s", i, fmt.Sprintf(format, args...)))
	}
	if len(limits) > MaxVolumeLimits {
		errs = append(errs, fmt.Errorf(": %d limits, at most %d", len(limits), MaxVolumeLimits))
	}
	type ring struct {
		w    time.Duration
		kind string
	}
	var rings []ring
	for i, l := range limits {
		if !volumeName.MatchString(l.Name) {
			bad(i, ".name: %q: use 1 to 32 of a-z 0-9 _ -, starting with a letter or digit", l.Name)
		} else if slices.ContainsFunc(limits[:i], func(o VolumeLimit) bool { return o.Name == l.Name }) {
			bad(i, ".name: %q is used by an earlier limit", l.Name)
		}
		if l.Window < MinVolumeWindow || l.Window > MaxVolumeWindow || l.Window%time.Minute != 0 {
			bad(i, ".window: %s is not a whole number of minutes from 1m to 168h", l.Window)
		} else if r := (ring{l.Window, l.Kind()}); !slices.Contains(rings, r) {
			rings = append(rings, r)
		}
		switch {
		case l.Messages < 0 || l.Recipients < 0:
			bad(i, ": messages and recipients must not be negative")
		case (l.Messages > 0) == (l.Recipients > 0):
			bad(i, ": set exactly one of messages and recipients")
		case l.Max() > MaxVolumeCount:
			bad(i, ".%s: %d is more than %d", l.Kind(), l.Max(), MaxVolumeCount)
		}
		if !l.Action.Valid() {
			bad(i, ".action: %q is not throttle or suspend", l.Action)
		}
	}
	if len(rings) > MaxVolumeRings {
		errs = append(errs, fmt.Errorf(": %d different pairs of window and count (messages or recipients), at most %d", len(rings), MaxVolumeRings))
	}
	return errors.Join(errs...)
}

// VolumePolicy is the volume rule as it applies to one account: the
// provider's limits or its company's, the mode and the allowlist.
type VolumePolicy struct {
	Limits []VolumeLimit
	Mode   Mode
	// Allowlisted accounts are counted, and their crossings reported, but
	// never throttled or suspended.
	Allowlisted bool
}

// Enforced reports whether crossings act: neither shadow mode nor the
// allowlist turns them into reports.
func (p VolumePolicy) Enforced() bool { return p.Mode != ModeShadow && !p.Allowlisted }

// Throttles reports whether a crossing of one of the limits may throttle
// the account, so that its submissions must check for a throttle.
func (p VolumePolicy) Throttles() bool {
	return p.Enforced() && slices.ContainsFunc(p.Limits, func(l VolumeLimit) bool { return l.Action == VolumeThrottle })
}

// OnCrossing is what crossing l does for this account: l's action, or a
// report (ActionReport) when the policy is not enforced.
func (p VolumePolicy) OnCrossing(l VolumeLimit) string {
	if !p.Enforced() {
		return string(ActionReport)
	}
	return string(l.Action)
}

// VolumeFor is the volume policy of one account: the provider's limits,
// or its company's when the company sets its own (companyLimits not nil;
// an empty list has none), allowlisted when the provider's volume
// allowlist names the account or its company allowlists it.
func (p Provider) VolumeFor(account string, companyLimits *[]VolumeLimit, allowlisted bool) VolumePolicy {
	pol := VolumePolicy{Limits: p.Volume, Mode: p.Mode}
	if companyLimits != nil {
		pol.Limits = *companyLimits
	}
	pol.Allowlisted = allowlisted || slices.Contains(p.VolumeAllowlist, account)
	return pol
}
