package desk

import (
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

// The desk says which AUP rule suspended an account, and why, in the
// notice's words (notifier's helpers): the rule's plain reason beside
// the reason code, and the figures of the crossing as a sentence.
// Everything here is text for html/template, which escapes it; the
// figures come from the account's record, written from events that are
// not trusted.

// ruleView is an AUP crossing's rule in words.
type ruleView struct {
	Code   string // spam_count, spam_rate, volume:<name>
	Reason string // the plain reason: "sending volume limit exceeded"
	// Why is the crossing's figures as a sentence; "" for the spam
	// count, whose figures the page shows as a count against the
	// threshold.
	Why string
}

// Plain reasons of the AUP rules.
const (
	reasonSpamCount = "too many spam messages"
	reasonSpamRate  = "spam rate exceeded"
	reasonVolume    = "sending volume limit exceeded"
	reasonOtherRule = "the acceptable use policy was broken"
)

// ruleReason is the plain reason of an AUP rule. A crossing without a
// rule was recorded before suspensions named theirs, when the spam
// count was the only rule.
func ruleReason(rule string) string {
	switch {
	case rule == "" || rule == rules.RuleSpamCount:
		return reasonSpamCount
	case rule == rules.RuleSpamRate:
		return reasonSpamRate
	case strings.HasPrefix(rule, rules.VolumeRulePrefix):
		return reasonVolume
	}
	return reasonOtherRule
}

// ruleOf puts a crossing's rule into words.
func ruleOf(s *events.AUPSuspension) ruleView {
	rule := s.Rule
	switch {
	case rule == "" && s.Volume != nil:
		rule = rules.VolumeRulePrefix + s.Volume.Limit
	case rule == "":
		rule = rules.RuleSpamCount
	}
	v := ruleView{Code: rule, Reason: ruleReason(rule)}
	switch {
	case s.Volume != nil:
		v.Why = volumeWhy(s.Volume, s.Threshold, s.WindowEnd)
	case rule == rules.RuleSpamRate && s.Rate != nil:
		v.Why = rateWhy(s.Rate)
	}
	return v
}

// volumeWhy: "Sent to 2,001 recipients in 1 hour (limit 500), from
// 203.0.113.7, since 14:02 UTC", or "Sent 37 messages to 2,001
// recipients in 24 hours (limit 2,000 recipients), ...". "since" gives
// the day too when the burst began on another day than the crossing
// (at).
func volumeWhy(v *events.VolumeCrossing, limit int, at time.Time) string {
	words := notifier.VolumeWords(v, limit)
	var b strings.Builder
	b.WriteString("Sent")
	if v.Messages != nil {
		b.WriteString(" " + notifier.Quantity(*v.Messages, rules.VolumeMessages))
	}
	if v.Recipients != nil {
		b.WriteString(" to " + notifier.Quantity(*v.Recipients, rules.VolumeRecipients))
	}
	if v.Messages == nil && v.Recipients == nil {
		return ""
	}
	if v.WindowSeconds > 0 {
		b.WriteString(" in " + notifier.Span(v.WindowSeconds))
	}
	// The limit's unit goes without saying when the sentence gives only
	// what the limit counts.
	if only := (v.Messages == nil) != (v.Recipients == nil); only && (v.Messages != nil) == (v.Kind == rules.VolumeMessages) {
		b.WriteString(" (limit " + notifier.Thousands(limit) + ")")
	} else {
		b.WriteString(" (limit " + notifier.Quantity(limit, v.Kind) + ")")
	}
	if len(words.Clients) > 0 {
		b.WriteString(", from " + listWords(words.Clients))
	}
	if since := words.Since; !since.IsZero() {
		layout := "15:04 UTC"
		if !sameDay(since, at.UTC()) {
			layout = "2006-01-02 15:04 UTC"
		}
		b.WriteString(", since " + since.Format(layout))
	}
	return b.String()
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd
}

// listWords is "a", "a and b", "a, b and c".
func listWords(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// rateWhy: "9% of outbound messages judged spam (45 of 500; limit 5%)".
func rateWhy(r *events.RateFacts) string {
	w := notifier.RateWords(r)
	if r.Spam < 0 || r.Ham < 0 || w.Share == "" {
		return ""
	}
	return w.Share + " of outbound messages judged spam (" + notifier.Thousands(w.Spam) + " of " + notifier.Thousands(w.Sent) + "; limit " + w.Limit + ")"
}

// reasonOfSuspension is a suspension's reason in plain words; the AUP
// suspension's names its rule (last is the account's last crossing,
// which made it when the ids agree).
func reasonOfSuspension(sus store.Suspension, last *events.AUPSuspension) string {
	if sus.Reason == rules.ReasonAUPViolation && last != nil && last.ID == sus.ID {
		return ruleOf(last).Reason
	}
	return suspensionReason(sus.Reason)
}

// reasonOfEntry is a history entry's reason in plain words; a crossing's
// names its rule.
func reasonOfEntry(h store.HistoryEntry) string {
	if h.Reason == rules.ReasonAUPViolation && h.Rule != "" {
		return ruleReason(h.Rule)
	}
	return reasonText(h.Reason)
}
